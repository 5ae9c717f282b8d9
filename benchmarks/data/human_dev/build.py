"""Build the human-language dev set from its readable form.

`poses.json` holds hand-built poses and, with each, descriptions written by people (never by the
captioner). This script turns it into `descriptions.jsonl` (one line per description: the text,
the pose id and the target pose as 72 axis-angle numbers in radians, SMPL joint order) and
`poses.jsonl` (one line per pose), and with `--sheet PNG` renders a contact sheet of all poses.

    .venv/bin/python benchmarks/data/human_dev/build.py --sheet docs/img/human_dev_poses.png

How a pose is written (frame of `poserft.common.body`: y up, x towards the body's left, z
forward out of the chest; the rest pose is the T-pose):
- `"joint": [["x", deg], ["z", deg], ...]` rotates a joint by these steps in order, each about
  its parent's fixed axes (`poserft.data.pose_prior` documents the sign of every motion).
  Angles of `right_*` joints are written as for the left side and mirrored (y and z negated),
  so the same numbers mean the same movement on either side; `both_*` sets both sides.
  `pelvis` is the global orientation (e.g. `[["x", -90]]` lies the body on its back).
- `"left_arm"` / `"right_arm"` / `"left_leg"` / `"right_leg"`: `{"upper": [x, y, z], "lower":
  [x, y, z]}` aims the upper arm (thigh) and forearm (shank) along these world directions; the
  shoulder (hip) and elbow (knee) rotations follow. `lower` omitted: the limb is straight.
  Limbs are solved after every step-joint, root to leaves, so they see the trunk's rotation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from poserft.common.body import JOINT, NUM_JOINTS, PARENTS, BodyModel
from poserft.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle

HERE = Path(__file__).resolve().parent
_AXES = {"x": 0, "y": 1, "z": 2}
# limb -> (upper joint, hinge joint, end joint, the hinge's flexion as a steps list of 1 degree)
_LIMBS = {
    "left_arm": ("left_shoulder", "left_elbow", "left_wrist", ("y", -1.0)),
    "right_arm": ("right_shoulder", "right_elbow", "right_wrist", ("y", 1.0)),
    "left_leg": ("left_hip", "left_knee", "left_ankle", ("x", 1.0)),
    "right_leg": ("right_hip", "right_knee", "right_ankle", ("x", 1.0)),
}


def _steps_matrix(steps, mirror: bool) -> np.ndarray:
    m = np.eye(3)
    for axis, deg in steps:
        if axis not in _AXES:
            raise ValueError(f"axis must be x, y or z, got {axis!r}")
        v = np.zeros(3)
        v[_AXES[axis]] = np.radians(deg) * (-1.0 if mirror and axis != "x" else 1.0)
        m = _matrix(v) @ m
    return m


def _matrix(aa) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, dtype=np.float64))).numpy()


def _axis_angle(m: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(m)).numpy()


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if v.shape != (3,) or not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"a limb direction must be 3 finite numbers, not all zero, got {v.tolist()}")
    return v / n


def _frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e1 = _unit(a)
    e2 = _unit(b - np.dot(b, e1) * e1)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def _shortest_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    src, dst = _unit(src), _unit(dst)
    axis = np.cross(src, dst)
    s, c = np.linalg.norm(axis), float(np.dot(src, dst))
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        perp = np.cross(src, [1.0, 0, 0] if abs(src[0]) < 0.9 else [0, 1.0, 0])
        return _matrix(_unit(perp) * np.pi)
    return _matrix(axis / s * np.arctan2(s, c))


def _global_rotation(local: np.ndarray, joint: int) -> np.ndarray:
    """World rotation of `joint`'s frame: the product of the local rotations from the root."""
    chain = []
    while joint >= 0:
        chain.append(joint)
        joint = PARENTS[joint]
    g = np.eye(3)
    for j in reversed(chain):
        g = g @ local[j]
    return g


def pose_from_spec(spec: dict, rest_joints: np.ndarray, where: str = "pose") -> np.ndarray:
    """A pose written as above -> (24, 3) axis-angle, radians."""
    local = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    limbs = {}
    for key, value in spec.items():
        if key in _LIMBS:
            limbs[key] = value
            continue
        names = [f"left_{key[5:]}", f"right_{key[5:]}"] if key.startswith("both_") else [key]
        for name in names:
            if name not in JOINT:
                raise ValueError(f"{where}: unknown joint {key!r}")
            local[JOINT[name]] = _steps_matrix(value, mirror=name.startswith("right_"))
    for limb in sorted(limbs, key=lambda k: JOINT[_LIMBS[k][0]]):
        upper_j, hinge_j, end_j = (JOINT[n] for n in _LIMBS[limb][:3])
        axis, sign = _LIMBS[limb][3]
        aim = limbs[limb]
        unknown = set(aim) - {"upper", "lower"}
        if unknown or "upper" not in aim:
            raise ValueError(f"{where}: {limb} takes 'upper' and optional 'lower' directions, got {sorted(aim)}")
        upper_rest = rest_joints[hinge_j] - rest_joints[upper_j]
        lower_rest = rest_joints[end_j] - rest_joints[hinge_j]
        upper = _unit(aim["upper"])
        lower = _unit(aim.get("lower", upper))
        bend = np.degrees(np.arccos(np.clip(np.dot(upper, lower), -1.0, 1.0)))
        local[hinge_j] = _steps_matrix([(axis, sign * bend)], mirror=False)
        parent = _global_rotation(local, PARENTS[upper_j])
        if bend < 1.0:
            world = _shortest_rotation(upper_rest, upper)
        else:
            world = _frame(upper, lower) @ _frame(upper_rest, local[hinge_j] @ lower_rest).T
        local[upper_j] = parent.T @ world
    return np.stack([_axis_angle(m) for m in local])


def load_poses(path: Path = HERE / "poses.json") -> list[dict]:
    """The poses of `poses.json`, each with `pose_aa` (24, 3) radians added."""
    doc = json.loads(Path(path).read_text())
    rest = BodyModel().rest_joints.numpy()
    out = []
    for entry in doc["poses"]:
        pose = pose_from_spec(entry["joints"], rest, where=f"{path.name}: pose {entry['id']!r}")
        out.append({**entry, "pose_aa": pose})
    return out


def write_jsonl(poses: list[dict], out_dir: Path = HERE) -> tuple[Path, Path]:
    desc_path, pose_path = out_dir / "descriptions.jsonl", out_dir / "poses.jsonl"
    with open(desc_path, "w") as f:
        for p in poses:
            target = [round(float(v), 6) for v in p["pose_aa"].reshape(-1)]
            for d in p["descriptions"]:
                f.write(json.dumps({"description": d, "pose_id": p["id"], "target_pose": target}) + "\n")
    with open(pose_path, "w") as f:
        for p in poses:
            f.write(
                json.dumps({"pose_id": p["id"], "target_pose": [round(float(v), 6) for v in p["pose_aa"].reshape(-1)]})
                + "\n"
            )
    return desc_path, pose_path


def contact_sheet(
    poses: list[dict], out_png: Path, size: int = 192, cols: int = 8, yaw_deg: float = 0.0, pitch_deg: float = 0.0
) -> None:
    from poserft.data.render import render_grid

    joints = BodyModel().joints_from_axis_angle(np.stack([p["pose_aa"] for p in poses]))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    render_grid(
        list(joints), captions=[p["id"] for p in poses], size=size, cols=cols, yaw_deg=yaw_deg, pitch_deg=pitch_deg
    ).save(out_png)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sheet", type=Path, default=None, help="also write a contact sheet PNG of every pose (front view)"
    )
    ap.add_argument(
        "--side-sheet", type=Path, default=None, help="also write one seen from the body's left, slightly from above"
    )
    args = ap.parse_args(argv)
    poses = load_poses()
    desc_path, pose_path = write_jsonl(poses)
    print(f"{len(poses)} poses, {sum(len(p['descriptions']) for p in poses)} descriptions -> {desc_path}, {pose_path}")
    if args.sheet:
        contact_sheet(poses, args.sheet)
        print(f"wrote {args.sheet}")
    if args.side_sheet:
        contact_sheet(poses, args.side_sheet, yaw_deg=70.0, pitch_deg=20.0)
        print(f"wrote {args.side_sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
