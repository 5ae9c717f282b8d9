"""HyGRPO's pose term alone, in one process, to sweep its settings in seconds.

Each step draws `--i2p` image2pose and `--t2p` text2pose training prompts, runs the policy on the
template response (what the SFT policy answers), draws `--n` poses per prompt from
N(mu, (T sigma)^2), scores them with the joint reward (`--align`) or the reward retriever's
semantic reward, normalises the rewards per prompt (the continuous advantage over the group's
poses) and takes one Adam step on the score-function loss (plus `--beta-c` times the Gaussian KL
to the start policy, as the learner's `rl.beta_c`), by default on the pose head only.
It prints, at the start and every third of the run, the mean pose's test MPJPE / PA-MPJPE
(image2pose) and text2pose Recall@10 with the evaluator retriever, on `--test` rows each: the
same numbers `poserft eval` reports for the pose tasks.

With `--n 8` it is the paper's setting (one pose per response, G = 8); `--n 256` is G = 8 with
`rl.sampling.pose_samples: 32`. NOTES.md ("HyGRPO's pose term") has the sweep.

    python scripts/rl_pose_term_offline.py --ckpt runs/demo/sft/policy --n 256 --align procrustes \
        --root-share 0.17 --beta-c 0.05 --natural --temperature 0.5 --i2p 8 --t2p 8 --steps 60 --seed 0
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from poserft.common.body import BodyModel
    from poserft.common.metrics import mpjpe, pa_mpjpe, retrieval_recalls
    from poserft.common.schemas import POSE_RESPONSE
    from poserft.data.dataset import load_split
    from poserft.model.checkpoint import load_policy
    from poserft.model.policy import gaussian_kl, gaussian_log_prob
    from poserft.reward_service.retriever import Retriever, pose_text_similarity
    from poserft.reward_service.rewards import joint_reward

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="runs/demo/sft/policy")
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--reward-retriever", default="runs/demo/retriever_reward")
    ap.add_argument("--evaluator", default="runs/demo/retriever_evaluator")
    ap.add_argument("--n", type=int, default=8, help="poses per prompt (G x rl.sampling.pose_samples)")
    ap.add_argument("--i2p", type=int, default=4, help="image2pose prompts per step")
    ap.add_argument("--t2p", type=int, default=0, help="text2pose prompts per step")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--natural", action="store_true", help="rl.pose_natural_gradient")
    ap.add_argument("--temperature", type=float, default=1.0, help="rl.sampling.pose_temperature")
    ap.add_argument("--align", choices=["root", "procrustes"], default="root", help="rewards.joint_align")
    ap.add_argument("--tau", type=float, default=0.1, help="rewards.joint_tau_m")
    ap.add_argument(
        "--root-share",
        type=float,
        default=0.0,
        help="rewards.joint_root_share: with --align procrustes, this share of the joint error is the root-aligned one",
    )
    ap.add_argument(
        "--beta-c", type=float, default=0.0, help="rl.beta_c: weight of the Gaussian KL to the start policy"
    )
    ap.add_argument(
        "--parts", default="head", help="policy parts trained (comma-separated); the non-head ones at lr / 10"
    )
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    policy = load_policy(a.ckpt).train()
    reference = load_policy(a.ckpt).eval() if a.beta_c else None
    body = BodyModel()
    reward_retriever, evaluator = Retriever.load(a.reward_retriever), Retriever.load(a.evaluator)
    train = {t: load_split(a.data, "train", task=t) for t in ("image2pose", "text2pose")}
    test = {t: load_split(a.data, "test", task=t).slice(0, a.test) for t in ("image2pose", "text2pose")}
    response = policy.encode_response(POSE_RESPONSE)

    def head_output(table, model=None):
        model = model or policy
        prompts = [policy.encode_prompt(p) for p in table["prompt"].to_pylist()]
        images = [
            im if t == "image2pose" else None for im, t in zip(table["image"].to_pylist(), table["task"].to_pylist())
        ]
        out = model(model.build_inputs(prompts, [response] * len(prompts), images, [None] * len(prompts)))
        return out["mu"], out["log_std"] + np.log(a.temperature)

    def joints(table):
        return torch.from_numpy(
            np.array(table["target_joints"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 24, 3)
        )

    @torch.no_grad()
    def evaluate() -> dict:
        policy.eval()
        mu = torch.cat([head_output(test["image2pose"].slice(i, 100))[0] for i in range(0, a.test, 100)])
        pred, target = body.forward_kinematics(mu.double()), joints(test["image2pose"])
        mu_t = torch.cat([head_output(test["text2pose"].slice(i, 100))[0] for i in range(0, a.test, 100)])
        rec = retrieval_recalls(
            evaluator.embed_text(test["text2pose"]["caption"].to_pylist()), evaluator.embed_pose(mu_t), ks=(10,)
        )
        policy.train()
        return {
            "mpjpe": round(float(mpjpe(pred, target).mean()), 1),
            "pa_mpjpe": round(float(pa_mpjpe(pred, target).mean()), 1),
            "r@10": round(rec["recall_at_10_t2p"], 1),
        }

    def pose_loss(table, rewards_of) -> tuple[torch.Tensor, float]:
        """Score-function loss of one task's prompts: -mean(D * log N(x)), D normalised per prompt."""
        mu, log_std = head_output(table)
        if a.natural:
            mu.register_hook(lambda g, var=torch.exp(2 * log_std.detach()): g * var)
        with torch.no_grad():
            x = mu.detach()[:, None] + log_std.detach().exp()[:, None] * torch.randn(len(table), a.n, 144)
            r = rewards_of(table, x).reshape(len(table), a.n)
            adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, correction=0, keepdim=True) + 1e-6)).float()
        loss = -(adv * gaussian_log_prob(x, mu[:, None], log_std[:, None])).mean()
        if a.beta_c:
            with torch.no_grad():
                ref_mu, ref_log_std = head_output(table, reference)
            loss = loss + a.beta_c * gaussian_kl(mu, log_std, ref_mu, ref_log_std).mean()
        return loss, float(r.mean())

    def joint_rewards(table, x):
        target = joints(table).repeat_interleave(a.n, 0)
        return torch.from_numpy(joint_reward(body, x.reshape(-1, 144), target, a.tau, a.align, a.root_share)).double()

    def semantic_rewards(table, x):
        captions = [c for c in table["caption"].to_pylist() for _ in range(a.n)]
        return torch.from_numpy(pose_text_similarity(reward_retriever, captions, x.reshape(-1, 144)))

    parts = set(a.parts.split(","))
    for p in policy.parameters():
        p.requires_grad_(False)
    groups: dict[str, list] = {}
    for name, p in policy.named_parameters():
        part = name.split(".", 1)[0]
        if part in parts:
            p.requires_grad_(True)
            groups.setdefault(part, []).append(p)
    opt = torch.optim.AdamW(
        [{"params": ps, "lr": a.lr if part == "head" else a.lr / 10} for part, ps in groups.items()],
        lr=a.lr,
        weight_decay=0.0,
        betas=(0.9, 0.99),
    )
    params = [p for ps in groups.values() for p in ps]
    print(f"start: {evaluate()}", flush=True)
    t0 = time.time()
    for step in range(1, a.steps + 1):
        losses, weights, mean_r = [], [], {}
        for task, count, rewards_of in (("image2pose", a.i2p, joint_rewards), ("text2pose", a.t2p, semantic_rewards)):
            if count:
                table = train[task].take(rng.choice(train[task].num_rows, count, replace=False))
                loss, mean_r[task] = pose_loss(table, rewards_of)
                losses.append(loss * count)
                weights.append(count)
        opt.zero_grad()
        (sum(losses) / sum(weights)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % max(1, a.steps // 3) == 0:
            print(f"step {step}: sample reward {mean_r} | {evaluate()} | {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
