"""How far do a retriever's text embeddings carry human descriptions? (NOTES.md, issue 14)

A pose-text retriever trained on synthetic captions ranks a descriptions file's poses (default the
dev set's 47 poses and 166 descriptions; `--descriptions` for another, e.g. the blind set) for each
description (cosine of the L2-normalised embeddings); top-1 / top-3 as in
`poserft.describe_eval`, plus Recall@10 text-to-pose on a dataset's test split. A cheap proxy for
"would a policy trained on these captions understand people": no policy training involved.

    .venv/bin/python scripts/human_dev_retrieval_probe.py --data DIR [--descriptions FILE] RETRIEVER_DIR [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from poserft.describe_eval import DEV_SET, load_descriptions, target_ranks


def probe(retriever_dir: Path, data_dir: Path, descriptions: Path = DEV_SET) -> dict:
    from poserft.reward_service.retriever import Retriever
    from poserft.reward_service.retriever_train import evaluate_retriever

    model = Retriever.load(retriever_dir)
    ds = load_descriptions(descriptions)
    text = model.embed_text(ds.descriptions)
    poses = model.embed_pose(torch.from_numpy(ds.poses_aa).float())
    ranks = target_ranks(-(text @ poses.T).double(), ds.target_index)
    synth = evaluate_retriever(data_dir, retriever_dir)
    return {
        "retriever": str(retriever_dir),
        "text_encoder": model.cfg.text_encoder,
        "descriptions": str(descriptions),
        "dev_top1": float((ranks < 1).double().mean() * 100),
        "dev_top3": float((ranks < 3).double().mean() * 100),
        "dev_chance_top1": 100.0 / len(ds.pose_ids),
        "test_recall_at_10_t2p": synth["recall_at_10_t2p"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset whose test split gives the synthetic Recall@10")
    ap.add_argument("--descriptions", type=Path, default=DEV_SET, help="descriptions file (default: the dev set)")
    ap.add_argument("retrievers", type=Path, nargs="+")
    args = ap.parse_args()
    for folder in args.retrievers:
        print(json.dumps(probe(folder, args.data, args.descriptions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
