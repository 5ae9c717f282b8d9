"""Does the semantic reward rank a group's text2pose poses as the truth does?

For each text2pose group in a HyGRPO run's saved rollouts (`RUN/rollouts/*.parquet`), the
Spearman correlation between two scores of the group's sampled poses:
- a judge: the reward the run recorded (`reward_semantic`: the reward retriever's cosine with
  the prompt's description), or the same retriever's cosine with the built-in captioner's
  description of the target pose (`rewards.semantic_text: target`, recomputed here);
- the truth: the yaw-aligned joint reward toward the row's target pose (what
  `poserft eval --descriptions` measures, up to the scale).

Reported separately for short prompts (12 words or fewer: names, everyday phrasings, partial
descriptions) and long ones (posecode paragraphs). A judge whose ranking does not follow the
truth within a group moves the Gaussian head at random there.

    HF_HUB_OFFLINE=1 python scripts/semantic_judge_agreement.py --run runs/demo/hygrpo \
        --retriever runs/demo/retriever_reward --out runs/judge_agreement.json
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from scipy.stats import spearmanr

from poserft.common.body import BodyModel
from poserft.reward_service.retriever import Retriever, pose_text_similarity
from poserft.reward_service.rewards import TargetCaptions, joint_reward

SHORT_WORDS = 12


def mean_group_std(table: pd.DataFrame, judge: str) -> float:
    """The judge's spread within a group (population std), averaged over the groups: what
    HyGRPO's per-group normalisation divides by."""
    return float(table.groupby("group_id")[judge].std(ddof=0).mean())


def group_rhos(table: pd.DataFrame, judge: str) -> np.ndarray:
    out = []
    for _, g in table.groupby("group_id"):
        if len(g) > 2 and g[judge].nunique() > 1 and g["truth"].nunique() > 1:
            out.append(spearmanr(g[judge], g["truth"])[0])
    return np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a HyGRPO run folder with rollouts/")
    p.add_argument("--retriever", required=True, help="the run's reward retriever")
    p.add_argument("--out", default=None, help="JSON file for the table")
    args = p.parse_args()
    files = sorted(glob.glob(f"{args.run}/rollouts/*.parquet"))
    if not files:
        p.error(f"no rollouts in {args.run}/rollouts")  # one line, exit code 2
    t = pd.concat([pq.read_table(f).to_pandas() for f in files])
    t = t[(t.task == "text2pose") & t.has_pose & t.target_joints.notna()].reset_index(drop=True)
    pose = torch.from_numpy(np.stack(t.pose.map(np.asarray).values)).float()
    joints = np.stack(t.target_joints.map(lambda a: np.asarray(a, dtype=np.float64).reshape(24, 3)).values)
    truth = joint_reward(BodyModel(), pose, torch.from_numpy(joints), 0.1, "yaw")
    target_text = pose_text_similarity(Retriever.load(args.retriever), TargetCaptions()(joints), pose)
    t = t.assign(truth=truth, target_description=target_text, words=t.caption.str.split().str.len())
    rows = []
    for name, sel in (("short", t.words <= SHORT_WORDS), ("long", t.words > SHORT_WORDS)):
        for judge, label in (("reward_semantic", "prompt"), ("target_description", "target")):
            r = group_rhos(t[sel], judge)
            rows.append(
                {
                    "prompts": name,
                    "judged against": label,
                    "groups": len(r),
                    "mean rho": round(float(np.nanmean(r)), 3),
                    "share rho < 0": round(float((r < 0).mean()), 2),
                    "mean group std": round(mean_group_std(t[sel], judge), 3),
                }
            )
    print(f"{args.run}: {len(t)} text2pose poses in {t.group_id.nunique()} groups")
    print("| prompts | judged against | groups | mean Spearman rho | share rho < 0 | mean group std |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = (r["prompts"], r["judged against"], r["groups"], r["mean rho"], r["share rho < 0"], r["mean group std"])
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"run": args.run, "retriever": args.retriever, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
