"""How well does a policy fit the pose names it was trained on? (issue 14)

Writes a descriptions file (the `poserft eval --descriptions` format) whose descriptions are the
training registers' own names for the prior's canonical poses (`registers.NAMES` then
`registers_rich.MORE_NAMES`, the first `--per-pose` of each) and whose targets are the canonical
poses themselves. `poserft eval --descriptions` on it then says whether the policy reproduces
poses for phrases it saw in training: top-1 among the canonical poses, and the yaw-MPJPE to them.
A low figure means the policy underfits its own training phrases, not that it misreads people.

    .venv/bin/python scripts/name_fit_set.py --out runs/name_fit.jsonl
    HF_HUB_OFFLINE=1 .venv/bin/python -m poserft eval --ckpt runs/demo/sft/policy --data data/synth \\
        --evaluator runs/demo/retriever_evaluator --limit 1 --descriptions runs/name_fit.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="descriptions file to write (.jsonl)")
    ap.add_argument("--per-pose", type=int, default=4, help="names per canonical pose (default 4)")
    args = ap.parse_args()

    import numpy as np

    from poserft.data.pose_prior import CANONICAL_POSES
    from poserft.data.registers import NAMES
    from poserft.data.registers_rich import MORE_NAMES

    rows = []
    for pose_id, aa in CANONICAL_POSES.items():
        names = list(dict.fromkeys([*NAMES.get(pose_id, ()), *MORE_NAMES.get(pose_id, ())]))
        target = np.asarray(aa, dtype=float).reshape(-1).tolist()
        rows += [{"description": t, "pose_id": pose_id, "target_pose": target} for t in names[: args.per_pose]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out}: {len(rows)} names of {len({r['pose_id'] for r in rows})} canonical poses")


if __name__ == "__main__":
    main()
