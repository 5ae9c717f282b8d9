"""Does more text2pose training lift the dev-set top-1? (issue 14)

Continues an SFT checkpoint on the text2pose rows of a dataset's train split only (batch `--bs`,
AdamW at a constant `--lr`, the SFT loss of `poserft.learner.sft` with `--joint` as the FK joint
weight) and prints the human dev set's top-1 / top-3 / yaw-MPJPE and the number of distinct
nearest dev poses every `--every` steps. The dev figures are teacher-forced: mu at the `<POSE>` of
the template answer, which is what `poserft eval --descriptions` gets when the model writes the
template (it reproduces the eval's top-1 on the demo checkpoints). Text2pose targets are turned by
`face_forward` with the installed `heading_undo`, so running it on two commits compares headings.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/t2p_continuation.py --ckpt runs/demo/sft/policy \\
        [--data data/synth] [--steps 400] [--joint 0] [--descriptions FILE.jsonl] [--out DIR]

One run per setting; figures move by a description (0.6 points) between nearby checkpoints.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="runs/demo/sft/policy")
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--joint", type=float, default=0.0, help="FK joint-term weight on the text2pose rows")
    ap.add_argument("--descriptions", default=None, help="default: the dev set (benchmarks/data/human_dev)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--head-width",
        type=int,
        default=0,
        help="widen the pose head's hidden layer to this many units first (function-preserving: the new "
        "units start with zero output weights)",
    )
    ap.add_argument("--out", default=None, help="save the continued policy here")
    args = ap.parse_args()

    import numpy as np
    import torch

    from poserft.common.body import BodyModel
    from poserft.common.metrics import yaw_mpjpe
    from poserft.common.rotations import axis_angle_to_rot6d
    from poserft.data.dataset import PROMPTS, load_split
    from poserft.describe_eval import DEV_SET, describe_metrics, load_descriptions
    from poserft.learner.sft import make_examples, sft_loss
    from poserft.model.checkpoint import load_policy, save_policy

    torch.manual_seed(args.seed)
    body = BodyModel()
    policy = load_policy(args.ckpt)
    if args.head_width:
        from poserft.learner.sft import widen_head

        widen_head(policy, args.head_width)
    dev = load_descriptions(args.descriptions or DEV_SET)
    answer = policy.encode_response("The SMPL pose of this person is <POSE>.")
    prompts = [policy.encode_prompt(PROMPTS["text2pose"][0].format(caption=d)) for d in dev.descriptions]
    poses_6d = axis_angle_to_rot6d(torch.from_numpy(dev.poses_aa))
    poses_m = body.forward_kinematics(poses_6d.reshape(len(dev.pose_ids), -1))
    mean_m = body.forward_kinematics(poses_6d.mean(0).reshape(1, -1))[0]

    @torch.no_grad()
    def dev_metrics() -> str:
        policy.eval()
        mus = []
        for i in range(0, len(prompts), 64):
            chunk = prompts[i : i + 64]
            mus.append(policy(policy.build_inputs(chunk, [answer] * len(chunk)))["mu"])
        policy.train()
        pred = body.forward_kinematics(torch.cat(mus).double())
        r = describe_metrics(pred, poses_m, dev.target_index, mean_m)
        distinct = len(set(yaw_mpjpe(pred[:, None], poses_m[None]).argmin(1).tolist()))
        return f"top-1 {r['top1']:.1f}  top-3 {r['top3']:.1f}  yaw-MPJPE {r['yaw_mpjpe_mm']:.1f}  distinct {distinct}"

    print(f"step 0: {dev_metrics()}", flush=True)
    ex = make_examples(policy, load_split(args.data, "train", "text2pose"))
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(ex), args.bs)
        loss, _ = sft_loss(policy, ex, idx, 1.0, 0.05, args.joint, 0.5)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            print(f"step {step} ({time.time() - t0:.0f} s): {dev_metrics()}", flush=True)
    if args.out:
        save_policy(policy, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
