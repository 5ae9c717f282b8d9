"""SFT step time with plain batches vs length-grouped batches (`sft.group_by_length`).

Loads a policy and a dataset's train split, then runs `--steps` optimizer steps of `sft_loss` with
each batch order, alternating the two `--repeats` times so both see the same machine load. Prints
seconds per step and padded tokens per step (what a batch costs: rows x its longest row) for each
repeat, the mean and the spread, and the ratio plain / grouped; writes the JSON to
benchmarks/results/sft_batching.json. The optimizer's learning rate is tiny: the weights barely
move, so the two orders time the same model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sft_batching.py [--ckpt runs/demo/sft/policy]
        [--data data/synth] [--steps 40] [--repeats 2] [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import print_table, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="runs/demo/sft/policy", help="policy checkpoint (make demo writes this one)")
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    from poserft.data.mixture import load_mixture
    from poserft.learner.sft import EpochBatches, batch_indices, make_examples, sft_loss
    from poserft.model.checkpoint import load_policy

    torch.set_num_threads(args.threads)
    policy = load_policy(args.ckpt)
    policy.train()
    ex = make_examples(policy, load_mixture(args.data, "train", seed=0))
    lengths = ex.lengths()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-7)
    grouped = EpochBatches(lengths, args.batch_size, seed=0)
    orders = {
        "plain": lambda k: batch_indices(len(ex), args.batch_size, 0, k),
        "grouped": grouped,
    }
    rows = []
    for rep in range(args.repeats):
        for name, batch in orders.items():
            offset = rep * args.steps
            t0, padded = time.perf_counter(), 0
            for k in range(offset, offset + args.steps):
                idx = batch(k)
                padded += int(lengths[idx].max()) * len(idx)
                loss, _ = sft_loss(policy, ex, idx, 1.0, 0.05, 0.0, 0.5)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sec = (time.perf_counter() - t0) / args.steps
            rows.append(
                {"order": name, "repeat": rep, "s_per_step": sec, "padded_tokens_per_step": padded / args.steps}
            )
            print(f"{name} repeat {rep}: {sec:.3f} s/step", flush=True)
    summary = []
    for name in orders:
        secs = [r["s_per_step"] for r in rows if r["order"] == name]
        pads = [r["padded_tokens_per_step"] for r in rows if r["order"] == name]
        summary.append(
            {
                "order": name,
                "s_per_step": float(np.mean(secs)),
                "min": min(secs),
                "max": max(secs),
                "padded_tokens_per_step": float(np.mean(pads)),
            }
        )
    ratio = summary[0]["s_per_step"] / summary[1]["s_per_step"]
    print_table(rows, ["order", "repeat", "s_per_step", "padded_tokens_per_step"])
    print_table(summary, ["order", "s_per_step", "min", "max", "padded_tokens_per_step"])
    print(f"plain / grouped time per step: {ratio:.2f}x (mean row {lengths.mean():.1f} tokens)")
    write_json(
        "sft_batching",
        {"settings": vars(args), "rows": rows, "summary": summary, "ratio_plain_over_grouped": ratio},
        args.json,
    )


if __name__ == "__main__":
    main()
