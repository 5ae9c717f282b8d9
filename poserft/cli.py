"""The `poserft` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cmd_data_build(args) -> int:
    from poserft.common.dataset import build_dataset

    card = build_dataset(
        args.out,
        seed=args.seed,
        train_poses=args.train_poses,
        val_poses=args.val_poses,
        test_poses=args.test_poses,
        image_size=args.image_size,
        smpl_dir=args.smpl_dir,
        progress=not args.quiet,
    )
    caps = card["captions"]
    print(
        f"wrote {args.out}: " + ", ".join(f"{s} {v['rows']} rows" for s, v in card["splits"].items())
        + f"; {caps['distinct']} distinct captions, mean {caps['mean_words']} words"
    )
    return 0


def _cmd_demo(args) -> int:
    from poserft.demo import run_demo

    return run_demo(data_dir=Path(args.data), run_dir=Path(args.run_dir), seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poserft", description="Pose-RFT / HyGRPO reinforcement fine-tuning on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="synthetic benchmark").add_subparsers(dest="data_command", required=True)
    b = data.add_parser("build", help="write the synthetic benchmark as Parquet")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--train-poses", type=int, default=20000)
    b.add_argument("--val-poses", type=int, default=1000)
    b.add_argument("--test-poses", type=int, default=1000)
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--smpl-dir", default=None, help="folder with SMPL_NEUTRAL.pkl (default: built-in skeleton)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_data_build)

    d = sub.add_parser("demo", help="run the end-to-end demo on the tiny default")
    d.add_argument("--data", default="data/synth")
    d.add_argument("--run-dir", default="runs/demo")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from poserft.common.config import ConfigError
    from poserft.common.dataset import DatasetError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        print(f"poserft: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poserft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
