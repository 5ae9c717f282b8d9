"""Does training on everyday caption registers raise the human dev-set top-1? (NOTES.md, issue 14)

Two tiny policies with the same seed and SFT settings: one on a synthetic dataset, one on the same
dataset whose train and val captions went through `poserft.data.registers.with_registers` (the
`data.caption_registers` switch). The test split keeps the default captions, so text2pose R@10
of both is measured on the same prompts with one evaluator retriever trained on the default data.

    .venv/bin/python scripts/caption_registers_exp.py --data DIR --work WORK --stage registered-data
    .venv/bin/python scripts/caption_registers_exp.py --data DIR --work WORK --stage init-sft --variant registers
    .venv/bin/python scripts/caption_registers_exp.py --data DIR --work WORK --stage init-sft --variant base
    poserft eval --ckpt WORK/sft_VARIANT/policy --data DIR --evaluator EVALUATOR --limit 200 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from poserft.data.dataset import PROMPTS, load_split

SFT = dict(
    align_steps=40, steps=400, batch_size=16, lr=2e-3, val_every=400, ckpt_every=100, warmup_steps=10, val_rows=32,
    pose_joint_weight=0.0, threads=1,
)  # fmt: skip


def registered_copy(src: Path, dst: Path, seed: int = 0) -> None:
    """`dst` = `src` with the train and val captions (and the prompts and references made from them) rewritten."""
    import numpy as np

    from poserft.data.dataset import _sha256
    from poserft.data.registers import with_registers

    dst.mkdir(parents=True, exist_ok=True)
    card = json.loads((src / "dataset_card.json").read_text())
    for split in ("train", "val", "test"):
        table = pq.read_table(src / f"{split}.parquet")
        if split != "test":
            cap = table["caption"].to_pylist()
            pose_ids = table["pose_id"].to_pylist()
            first = {}
            for row, pid in enumerate(pose_ids):
                first.setdefault(pid, row)
            ids = sorted(first)
            joints = np.array([table["target_joints"][first[i]].as_py() for i in ids], dtype=np.float64)
            joints = joints.reshape(-1, 24, 3)
            new = dict(zip(ids, with_registers([cap[first[i]] for i in ids], joints, ids, seed)))
            prompts, refs = table["prompt"].to_pylist(), table["reference_text"].to_pylist()
            tasks = table["task"].to_pylist()
            for row, (pid, task) in enumerate(zip(pose_ids, tasks)):
                old = cap[row]
                if task == "text2pose":
                    t = next(t for t in PROMPTS[task] if t.format(caption=old) == prompts[row])
                    prompts[row] = t.format(caption=new[pid])
                if task == "pose2text":
                    refs[row] = new[pid]
                cap[row] = new[pid]
            for name, values in (("caption", cap), ("prompt", prompts), ("reference_text", refs)):
                column = table.schema.get_field_index(name)
                table = table.set_column(column, table.schema.field(name), pa.array(values, pa.string()))
        pq.write_table(table, dst / f"{split}.parquet", compression="zstd", row_group_size=4096)
        card["splits"][split]["sha256"] = _sha256(dst / f"{split}.parquet")
    card["generator"]["caption_registers"] = True
    (dst / "dataset_card.json").write_text(json.dumps(card, indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="the default synthetic dataset")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--stage", choices=("registered-data", "init-sft"), required=True)
    ap.add_argument("--variant", choices=("base", "registers"), default="registers")
    args = ap.parse_args()
    data = args.data if args.variant == "base" else args.work / "synth_registers"
    if args.stage == "registered-data":
        registered_copy(args.data, data)
        print(load_split(data, "train", task="text2pose")["caption"].to_pylist()[:8])
    else:
        from poserft.common.config import SFTConfig
        from poserft.learner.sft import run_sft
        from poserft.model.checkpoint import init_policy, save_policy

        init = args.work / f"init_{args.variant}"
        if not (init / "poserft.json").is_file():
            save_policy(init_policy("tiny", data, seed=0), init)
        print(run_sft(init, data, args.work / f"sft_{args.variant}", SFTConfig(**SFT), progress=False)["policy"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
