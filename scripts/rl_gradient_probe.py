"""How much does one group of pose samples say about where the pose mean should move?

For image2pose prompts of a checkpoint, this compares the score-function direction that HyGRPO's
pose term follows (group-normalised advantages over G sampled poses) with the gradient of the
joint reward at the mean, `grad r(mu)` (exact, through the differentiable forward kinematics):

- cosine between the two, for the plain estimate sum_i A_i (x_i - mu) / sigma^2 and for the
  Fisher-preconditioned one sum_i A_i (x_i - mu) (`rl.pose_natural_gradient`);
- the joint-reward gain of mu after a step of `--step` (unit-norm direction in 6D space);
- r(mu) against the mean reward of the samples.

    python scripts/rl_gradient_probe.py --ckpt runs/demo/sft/policy --data data/synth
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from poserft.common.body import BodyModel
    from poserft.common.schemas import POSE_RESPONSE
    from poserft.data.dataset import load_split
    from poserft.model.checkpoint import load_policy
    from poserft.model.generation import pose_from_response

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=8, help="groups drawn per prompt")
    ap.add_argument("--group-sizes", default="8,32")
    ap.add_argument("--temperatures", default="1.0,0.25", help="pose temperatures T (std x T)")
    ap.add_argument("--step", type=float, default=0.03)
    ap.add_argument("--tau", type=float, default=0.1, help="rewards.joint_tau_m")
    args = ap.parse_args()
    torch.manual_seed(0)

    policy = load_policy(args.ckpt).eval()
    body = BodyModel()
    table = load_split(args.data, "train", task="image2pose").slice(0, args.prompts)
    prompts = [policy.encode_prompt(p) for p in table["prompt"].to_pylist()]
    with torch.no_grad():
        mu, log_std, _ = pose_from_response(
            policy,
            prompts,
            [policy.encode_response(POSE_RESPONSE)] * len(prompts),
            table["image"].to_pylist(),
            [None] * len(prompts),
        )
    targets = torch.from_numpy(
        np.array(table["target_joints"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 24, 3)
    )

    def reward(pose6d: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # the joint reward, root-aligned
        j = body.forward_kinematics(pose6d.double().reshape(-1, 144)).reshape(*pose6d.shape[:-1], 24, 3)
        err = ((j - j[..., :1, :]) - (target - target[:1])).norm(dim=-1).mean(-1)
        return 1.0 / (1.0 + err / args.tau)

    print(f"mean sigma {float(log_std.exp().mean()):.3f} over {len(prompts)} prompts")
    print("| T | G | estimate | cos with grad r(mu) | gain of r(mu) x1000 | r(mu) | mean r(sample) |")
    print("|---|---|---|---|---|---|---|")
    for temp in (float(t) for t in args.temperatures.split(",")):
        for g in (int(x) for x in args.group_sizes.split(",")):
            stats = {k: ([], []) for k in ("plain", "natural")}
            r_mu, r_samples = [], []
            for k in range(len(prompts)):
                m, s = mu[k].double(), temp * log_std[k].exp().double()
                md = m.clone().requires_grad_(True)
                r0 = reward(md, targets[k])
                r0.backward()
                grad = md.grad
                r_mu.append(float(r0))
                for _ in range(args.repeats):
                    eps = torch.randn(g, 144, dtype=torch.float64)
                    r = reward(m + s * eps, targets[k]).detach()
                    r_samples.append(float(r.mean()))
                    adv = (r - r.mean()) / (r.std() + 1e-6)
                    for name, d in (
                        ("plain", (adv[:, None] * eps / s).sum(0)),
                        ("natural", (adv[:, None] * eps * s).sum(0)),
                    ):
                        stats[name][0].append(float(d @ grad / (d.norm() * grad.norm())))
                        stats[name][1].append(float(reward(m + args.step * d / d.norm(), targets[k])) - float(r0))
            for name, (cos, gain) in stats.items():
                print(
                    f"| {temp} | {g} | {name} | {np.mean(cos):.3f} | {1000 * np.mean(gain):.2f} | {np.mean(r_mu):.3f} "
                    f"| {np.mean(r_samples):.3f} |"
                )


if __name__ == "__main__":
    main()
