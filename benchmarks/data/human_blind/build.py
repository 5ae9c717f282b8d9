"""Build the blind human-language evaluation set from `poses.json`.

Usage (from the repository root):

    nice -n 19 .venv/bin/python benchmarks/data/human_blind/build.py                  # descriptions.jsonl
    nice -n 19 .venv/bin/python benchmarks/data/human_blind/build.py --sheets /tmp/s  # + front/side PNGs
    nice -n 19 .venv/bin/python benchmarks/data/human_blind/build.py --pairs 10       # closest pose pairs

Pose format in `poses.json`
---------------------------
Each pose has `rotations`: a mapping from SMPL joint name (see `poserft.common.body.JOINT_NAMES`)
to the local rotation of that joint relative to its parent. Joints left out keep the rest (T-pose)
rotation. A rotation is either

* a list of steps `[["x", deg], ["z", deg], ...]`: turn by `deg` degrees about the parent's x, y
  or z axis, one step after the other (each step about the parent's *fixed* axes, so the matrix
  is R_last @ ... @ R_first), or
* an axis-angle vector `{"aa_deg": [rx, ry, rz]}` (rotation vector, in degrees).

Nothing is mirrored: a `right_*` joint's numbers are the rotation in the body frame itself.
`pelvis` is the global orientation. Frame of `poserft.common.body`: metres, y up, x from the
body's right to its left, z out of the chest. Useful signs (derived from that frame):

* shoulders: left z<0 / right z>0 lowers the arm; left y<0 / right y>0 swings it forward;
  x about the arm's own length (from the T-pose) twists it.
* elbows: left y<0 / right y>0 flexes (in the T-pose the forearm comes forward).
* hips: x<0 lifts the thigh forward, x>0 takes it back; left z>0 / right z<0 spreads the legs.
* knees: x>0 flexes. Ankles: x>0 points the toes, x<0 pulls them up.
* spine1..3, neck, head: x>0 bends forward, z<0 bends to the body's left, y>0 turns to the left.
* pelvis: x=-90 lies the body on its back, x=+90 face down.

The written rotations are converted to axis-angle (radians) and written, one line per
description, to `descriptions.jsonl` as {"description", "pose_id", "target_pose": 72 floats}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from poserft.common.body import JOINT_NAMES, NUM_JOINTS, BodyModel
from poserft.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle

FOLDER = Path(__file__).resolve().parent
AXIS_INDEX = {"x": 0, "y": 1, "z": 2}


def rotvec_matrix(rotvec_rad) -> np.ndarray:
    """3x3 matrix of a rotation vector in radians (`poserft.common.rotations.axis_angle_to_matrix`)."""
    with torch.no_grad():
        return axis_angle_to_matrix(torch.as_tensor(rotvec_rad, dtype=torch.float64)[None])[0].numpy()


def axis_rotation(axis: str, degrees: float) -> np.ndarray:
    """3x3 matrix turning by `degrees` about one coordinate axis (right-hand rule)."""
    if axis not in AXIS_INDEX:
        raise ValueError(f"rotation axis must be 'x', 'y' or 'z', not {axis!r}")
    v = np.zeros(3)
    v[AXIS_INDEX[axis]] = math.radians(float(degrees))
    return rotvec_matrix(v)


def joint_matrix(rotation, where: str) -> np.ndarray:
    if isinstance(rotation, dict):
        if set(rotation) != {"aa_deg"}:
            raise ValueError(f"{where}: a dict rotation takes only 'aa_deg', got {sorted(rotation)}")
        v = np.radians(np.asarray(rotation["aa_deg"], dtype=np.float64))
        if v.shape != (3,):
            raise ValueError(f"{where}: aa_deg must hold 3 numbers, got {rotation['aa_deg']!r}")
        return rotvec_matrix(v)
    m = np.eye(3)
    for step in rotation:
        if not (isinstance(step, (list, tuple)) and len(step) == 2):
            raise ValueError(f"{where}: each step is [axis, degrees], got {step!r}")
        if step[0] not in AXIS_INDEX:
            raise ValueError(f"{where}: rotation axis must be 'x', 'y' or 'z', not {step[0]!r}")
        m = axis_rotation(step[0], step[1]) @ m
    return m


def pose_axis_angle(rotations: dict, where: str) -> np.ndarray:
    """The written rotations of one pose -> (24, 3) axis-angle in radians."""
    mats = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    for name, rotation in rotations.items():
        if name not in JOINT_NAMES:
            raise ValueError(f"{where}: unknown joint {name!r}")
        mats[JOINT_NAMES.index(name)] = joint_matrix(rotation, f"{where}, {name}")
    with torch.no_grad():
        return matrix_to_axis_angle(torch.from_numpy(mats)).numpy()


def read_poses(path: Path) -> list[dict]:
    doc = json.loads(path.read_text())
    poses, seen = [], set()
    for entry in doc["poses"]:
        pid = entry["id"]
        if pid in seen:
            raise ValueError(f"{path.name}: pose id {pid!r} appears twice")
        seen.add(pid)
        aa = pose_axis_angle(entry["rotations"], f"{path.name}: pose {pid!r}")
        poses.append({"id": pid, "descriptions": list(entry.get("descriptions", [])), "aa": aa})
    return poses


def write_descriptions(poses: list[dict], out: Path) -> int:
    lines = []
    for pose in poses:
        target = [round(float(v), 6) for v in pose["aa"].ravel()]
        for text in pose["descriptions"]:
            lines.append(json.dumps({"description": text, "pose_id": pose["id"], "target_pose": target}))
    out.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def joints_of(poses: list[dict]) -> np.ndarray:
    return BodyModel().joints_from_axis_angle(np.stack([p["aa"] for p in poses]))


def draw_sheets(poses: list[dict], out_dir: Path, size: int = 200, cols: int = 8) -> list[Path]:
    """Two contact sheets: seen from the front, and from the body's left side a little from above."""
    from poserft.data.render import render_grid

    out_dir.mkdir(parents=True, exist_ok=True)
    joints = list(joints_of(poses))
    labels = [p["id"] for p in poses]
    written = []
    for name, yaw, pitch in (("front", 0.0, 0.0), ("side", 90.0, 15.0)):
        path = out_dir / f"human_blind_{name}.png"
        sheet = render_grid(
            joints, captions=labels, size=size, cols=min(cols, len(joints)), yaw_deg=yaw, pitch_deg=pitch
        )
        sheet.save(path)
        written.append(path)
    return written


def closest_pairs(poses: list[dict], count: int) -> list[tuple[float, str, str]]:
    from poserft.common.metrics import yaw_mpjpe

    j = torch.from_numpy(joints_of(poses))
    dist = yaw_mpjpe(j[:, None], j[None, :]).numpy()
    pairs = [
        (float(dist[a, b]), poses[a]["id"], poses[b]["id"]) for a in range(len(poses)) for b in range(a + 1, len(poses))
    ]
    return sorted(pairs)[:count]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build the blind human-language evaluation set.")
    ap.add_argument("--poses", type=Path, default=FOLDER / "poses.json")
    ap.add_argument("--out", type=Path, default=FOLDER / "descriptions.jsonl")
    ap.add_argument(
        "--sheets", type=Path, default=None, help="folder for human_blind_front.png and human_blind_side.png"
    )
    ap.add_argument("--only", nargs="*", default=None, help="restrict the sheets to these pose ids")
    ap.add_argument("--pairs", type=int, default=0, help="print this many closest pose pairs (yaw-aligned MPJPE, mm)")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite descriptions.jsonl")
    args = ap.parse_args(argv)

    poses = read_poses(args.poses)
    if not args.no_write:
        n = write_descriptions(poses, args.out)
        print(f"{len(poses)} poses, {n} descriptions -> {args.out}")
    if args.sheets:
        chosen = poses if not args.only else [p for p in poses if p["id"] in set(args.only)]
        for path in draw_sheets(chosen, args.sheets):
            print(f"wrote {path}")
    if args.pairs:
        for d, a, b in closest_pairs(poses, args.pairs):
            print(f"{d:7.1f} mm  {a} ~ {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
