"""Integration: the data-parallel learner (`rl.learner.world_size`) on real Ray with a real gloo
process group. Two ranks, each training on half of a batch's rows and summing gradients, must end
where one process training on the whole batch ends; the ranks must stay identical; the controller
must place and drive them."""

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch

from poserft.common.config import ModelConfig, RLConfig
from poserft.common.schemas import POSE_RESPONSE
from poserft.learner.learner import LearnerCore

SETTINGS = dict(lr=0.002, updates_per_batch=2, micro_batch_size=4, beta=0.01, beta_c=0.01)


def _batch(policy, version: int, seed: int) -> pa.Table:
    """Two groups of four; every response has its pose, so every micro-batch mean is a plain
    row mean and any split of the rows gives the same full-batch gradient."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, prompt in enumerate(
        [
            "Create the SMPL pose that matches this text. The left knee is bent.",
            "Create the SMPL pose that matches this text. Both arms are raised.",
        ]
    ):
        ids = policy.encode_prompt(prompt)
        resp = policy.encode_response(POSE_RESPONSE)
        for i in range(4):
            rows.append(
                {
                    "task_id": f"t{g}",
                    "group_id": f"t{g}@v{version}",
                    "sample_index": i,
                    "policy_version": version,
                    "worker_id": "w",
                    "prompt_tokens": ids,
                    "response_tokens": resp,
                    "token_logprobs": [-1.0] * len(resp),
                    "text": "",
                    "has_pose": True,
                    "pose": (np.tile([1.0, 0, 0, 0, 1, 0], 24) + 0.1 * rng.normal(size=144)).tolist(),
                    "pose_logprob": -150.0,
                    "error": None,
                    "reward_format": 1.0,
                    "reward_semantic": float(rng.random()),
                    "reward_joint": None,
                    "reward_total": float(rng.random()),
                    "task": "text2pose",
                    "image": None,
                    "target_pose": [0.0] * 72,
                }
            )
    return pa.Table.from_pylist(rows)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_two_ranks_train_like_one_process_on_the_whole_batch(ray_local, tiny_sft):
    single = LearnerCore(str(tiny_sft), RLConfig(**SETTINGS), threads=1)
    start = single.weight_state()
    batches = [_batch(single.policy, v, seed=v) for v in range(2)]
    single_metrics = [single.train_step(b) for b in batches]
    expected = single.weight_state()

    cls = ray.remote(max_restarts=0)(LearnerCore)
    ranks = [
        cls.options(num_cpus=0.5).remote(str(tiny_sft), RLConfig(**SETTINGS), 1, None, rank=r, world_size=2)
        for r in range(2)
    ]
    try:
        assert ray.get(ranks[0].attach_peers.remote(ranks[1:])) == 2
        ddp_metrics = [ray.get(ranks[0].train_step.remote(b)) for b in batches]
        got = ray.get(ranks[0].weight_state.remote())
        sums = ray.get([r.parameter_checksum.remote() for r in ranks])
        versions = ray.get([r.get_version.remote() for r in ranks])
        version, ref = ray.get(ranks[0].latest_weights.remote())
    finally:
        for r in ranks:
            ray.kill(r)

    moved = _max_diff(start, expected)
    assert moved > 1e-3, "the steps must move the weights, or the comparison says nothing"
    # Summation order differs (fp32), and Adam divides by sqrt(v): a gradient near 0 turns a
    # rounding difference into a visible step. Bound the difference by 1 % of the movement.
    assert _max_diff(got, expected) < 0.01 * moved
    assert max(float((got[k] - expected[k]).abs().mean()) for k in got) < 1e-6
    assert sums[0] == sums[1], "the ranks drifted apart"
    assert versions == [2, 2] and version == 2 and _max_diff(ray.get(ref), got) == 0.0
    for d, s in zip(ddp_metrics, single_metrics):
        for key in ("loss", "loss_token", "loss_pose", "kl_pose", "adv_discrete_mean"):
            assert d[key] == pytest.approx(s[key], rel=1e-4, abs=1e-5), key
        assert d["rows"] == s["rows"] == 8


def test_a_rank_without_rows_still_joins_the_collectives(ray_local, tiny_sft):
    """More ranks than rows: rank 2 of 3 gets 1 row less; with 2 rows rank 2 gets none."""
    cls = ray.remote(max_restarts=0)(LearnerCore)
    ranks = [
        cls.options(num_cpus=0.5).remote(str(tiny_sft), RLConfig(**SETTINGS), 1, None, rank=r, world_size=3)
        for r in range(3)
    ]
    try:
        ray.get(ranks[0].attach_peers.remote(ranks[1:]))
        policy_like = LearnerCore(str(tiny_sft), RLConfig(**SETTINGS), threads=1).policy
        two_rows = _batch(policy_like, 0, seed=0).slice(0, 2)
        out = ray.get(ranks[0].train_step.remote(two_rows), timeout=300)
        sums = ray.get([r.parameter_checksum.remote() for r in ranks])
    finally:
        for r in ranks:
            ray.kill(r)
    assert out["version"] == 1 and np.isfinite(out["loss"])
    assert sums[0] == sums[1] == sums[2]


def test_attach_peers_checks_the_rank_count(tiny_sft):
    learner = LearnerCore(str(tiny_sft), RLConfig(**SETTINGS), threads=1, rank=0, world_size=3)
    with pytest.raises(ValueError, match="takes the N-1 others"):
        learner.attach_peers([object()])


def test_natural_mean_gradient_scales_the_gradient_at_mu_by_the_variance():
    from poserft.learner.learner import natural_mean_gradient

    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    mu, log_std = w * 2.0, torch.randn(3, 5, dtype=torch.float64)
    natural_mean_gradient(mu, log_std)
    c = torch.randn(3, 5, dtype=torch.float64)
    (mu * c).sum().backward()
    torch.testing.assert_close(w.grad, 2.0 * c * torch.exp(2 * log_std))


def test_model_train_scales_the_lr_per_part_and_zero_keeps_a_part_fixed(ray_local, tiny_sft):
    model = ModelConfig(train={"lm": 0.0, "vision": 0.5})
    learner = LearnerCore(str(tiny_sft), RLConfig(**SETTINGS), threads=1, model=model)
    lrs = {g["part"]: g["lr"] for g in learner.opt.param_groups}
    assert "lm" not in lrs and lrs["vision"] == pytest.approx(0.001) and lrs["head"] == pytest.approx(0.002)
    before = learner.weight_state()
    learner.train_step(_batch(learner.policy, 0, seed=0))
    after = learner.weight_state()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("lm."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_a_bfloat16_reference_halves_its_memory_and_gives_float32_outputs(tiny_sft):
    """rl.learner.reference_dtype: the frozen reference in bf16 (the GPU default) runs under
    autocast; the KL terms it feeds stay float32 and close to the float32 reference's."""
    metrics = {}
    for dtype in ("float32", "bfloat16"):
        learner = LearnerCore(str(tiny_sft), RLConfig(**SETTINGS, learner={"reference_dtype": dtype}), threads=1)
        assert {p.dtype for p in learner.ref.parameters()} == {getattr(torch, dtype)}
        assert {p.dtype for p in learner.policy.parameters()} == {torch.float32}  # the trained policy is not touched
        out = learner._reference(_batch(learner.policy, 0, seed=0).to_pylist()[:4])
        assert out["token_logp"].dtype == out["mu"].dtype == out["log_std"].dtype == torch.float32
        torch.manual_seed(0)
        metrics[dtype] = learner.train_step(_batch(learner.policy, 0, seed=0))
    for key in ("kl_token", "kl_pose"):  # the first step: both policies start from the same weights
        assert np.isfinite(metrics["bfloat16"][key])
        assert metrics["bfloat16"][key] == pytest.approx(metrics["float32"][key], rel=0.05), key
