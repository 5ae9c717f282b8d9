"""Does a learner refactor change the numbers? Train `LearnerCore` on fixed scored batches (two
steps each: on-policy with one update, on-policy with two, stale with two; K = 2 pose samples, a
response without a pose, the demo's pose-term settings) and save the final weights and metrics.
Run it once against an old commit's package and once against the working tree, then compare:

    git archive OLD_COMMIT poserft | tar x -C /tmp/old
    poserft data build --out /tmp/eqv/data --train-poses 300 --quiet
    poserft model init --preset tiny --data /tmp/eqv/data --out /tmp/eqv/ckpt
    python scripts/learner_equivalence.py /tmp/old /tmp/eqv/ckpt /tmp/eqv/old
    python scripts/learner_equivalence.py . /tmp/eqv/ckpt /tmp/eqv/new
    python scripts/learner_equivalence.py --compare /tmp/eqv/old /tmp/eqv/new

The script speaks both the old config keys (rl.lr_scale, rl.pose_loss_trains_trunk) and the new
one (model.train), so it can compare across that change.
"""

import json
import sys

import numpy as np
import pyarrow as pa
import torch

if sys.argv[1] == "--compare":
    COMPARE = (sys.argv[2], sys.argv[3])
else:
    COMPARE = None
    sys.path.insert(0, sys.argv[1])  # the package to test comes first


def batch(policy, version, seed, stale=False):
    from poserft.common.schemas import POSE_RESPONSE

    rng = np.random.default_rng(seed)
    rows = []
    for g, (task, prompt) in enumerate(
        [
            ("text2pose", "Create the SMPL pose that matches this text. The left knee is bent."),
            ("text2pose", "Create the SMPL pose that matches this text. Both arms are raised."),
        ]
    ):
        ids = policy.encode_prompt(prompt)
        resp = policy.encode_response(POSE_RESPONSE)
        for i in range(4):
            for k in range(2):
                has = not (i == 3 and g == 1)
                rows.append(
                    {
                        "task_id": f"t{g}",
                        "group_id": f"t{g}@v{version}",
                        "sample_index": i,
                        "pose_sample_index": k,
                        "policy_version": version - (1 if stale else 0),
                        "worker_id": "w",
                        "prompt_tokens": ids,
                        "response_tokens": resp,
                        "token_logprobs": list(rng.normal(-1.0, 0.1, len(resp))),
                        "text": "",
                        "has_pose": has,
                        "pose": (np.tile([1.0, 0, 0, 0, 1, 0], 24) + 0.1 * rng.normal(size=144)).tolist()
                        if has
                        else None,
                        "pose_logprob": -150.0 + rng.normal() if has else None,
                        "error": None,
                        "reward_format": 1.0,
                        "reward_semantic": float(rng.random()) if has else -1.0,
                        "reward_joint": None,
                        "reward_total": float(rng.random()),
                        "task": task,
                        "image": None,
                        "target_pose": [0.0] * 72,
                    }
                )
    return pa.Table.from_pylist(rows)


def compare(old: str, new: str) -> None:
    for name in ("onpolicy_1", "onpolicy_2", "stale_2"):
        a, b = torch.load(f"{old}_{name}.pt"), torch.load(f"{new}_{name}.pt")
        assert a.keys() == b.keys(), "the two state dicts hold different tensors"
        d = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        print(f"{name}: max |old - new| over {len(a)} tensors = {d:.3g}")
    mo, mn = json.load(open(f"{old}_metrics.json")), json.load(open(f"{new}_metrics.json"))
    for name in mo:
        keys = sorted(set(mo[name]) | set(mn[name]))
        diff = {k: (mo[name].get(k), mn[name].get(k)) for k in keys if mo[name].get(k) != mn[name].get(k)}
        print(f"{name}: metrics that differ: {diff or 'none'}")


def main() -> None:
    import poserft
    from poserft.common.config import ModelConfig, RLConfig
    from poserft.learner.learner import LearnerCore

    print("poserft from", poserft.__file__, file=sys.stderr)
    ckpt, out = sys.argv[2], sys.argv[3]
    new_keys = "train" in ModelConfig.model_fields
    slow_parts = {"lm": 0.1, "vision": 0.1, "projector": 0.1, "pose_in": 0.1}
    results = {}
    for name, updates, stale in [("onpolicy_1", 1, False), ("onpolicy_2", 2, False), ("stale_2", 2, True)]:
        torch.manual_seed(0)
        common = dict(
            lr=0.002,
            updates_per_batch=updates,
            micro_batch_size=3,
            beta=0.01,
            beta_c=0.05,
            pose_natural_gradient=True,
            sampling={"pose_temperature": 0.5},
        )
        if new_keys:
            model = ModelConfig(train={**slow_parts, "pose_loss": "head"})
            learner = LearnerCore(ckpt, RLConfig(**common), threads=1, model=model)
        else:
            rl = RLConfig(**common, lr_scale=slow_parts, pose_loss_trains_trunk=False)
            learner = LearnerCore(ckpt, rl, threads=1)
        metrics = {}
        for step in range(2):
            metrics = learner.train_step(batch(learner.policy, learner.version, seed=step, stale=stale))
        torch.save({k: v.detach().clone() for k, v in learner.policy.state_dict().items()}, f"{out}_{name}.pt")
        results[name] = {k: v for k, v in metrics.items() if isinstance(v, float) and k != "learner_seconds"}
    with open(f"{out}_metrics.json", "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    if COMPARE:
        compare(*COMPARE)
    else:
        main()
