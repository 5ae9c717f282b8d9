"""Pose files a user's tools open: `.npz` (numpy), `.json`, `.png` (front and side views) and `.bvh`.

Every writer takes one `PoseRecord`: the SMPL axis-angle pose (24, 3), the 24 joints in metres
from the project's forward kinematics, and the Gaussian head's mean and std (144 each, 6D per
joint) when the pose came from the model.

BVH (Biovision hierarchy), written here because no maintained Python package writes it:
- the hierarchy is the built-in 24-joint SMPL skeleton (`poserft.common.body`), each joint's
  OFFSET its rest-pose offset from its parent, in metres (Blender's importer at scale 1 reads
  metres); the five leaf joints (feet, head, hands) end in an End Site 5-10 cm along the limb
  (the length is ours: SMPL has no joint there);
- one frame: the root's position (0, 0, 0: FK puts the pelvis at the origin) and every joint's
  local rotation as Z, X, Y Euler angles in degrees, i.e. R_local = Rz(z) Rx(x) Ry(y), the
  channel order most BVH tools write and read;
- the frame's axes are the body's: y up, x to the body's left, z forward, as SMPL and Blender's
  BVH importer (Y-up by default) expect.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from poserft.common.body import JOINT_NAMES, NUM_JOINTS, PARENTS, POSE_6D_DIM, BodyModel

FORMATS = ("npz", "json", "png", "bvh")
BVH_FRAME_TIME_S = 1 / 30
_END_SITES_M = {  # leaf joint -> End Site offset (ours)
    "left_foot": (0.0, 0.0, 0.05),
    "right_foot": (0.0, 0.0, 0.05),
    "head": (0.0, 0.10, 0.0),
    "left_hand": (0.08, 0.0, 0.0),
    "right_hand": (-0.08, 0.0, 0.0),
}


@dataclass
class PoseRecord:
    """One pose and where it came from; arrays are float64."""

    axis_angle: np.ndarray  # (24, 3) radians, SMPL joint order, joint 0 = global orientation
    joints_m: np.ndarray  # (24, 3) metres, pelvis at the origin
    mu: np.ndarray | None = None  # (144,) the head's mean (6D per joint)
    std: np.ndarray | None = None  # (144,) the head's standard deviation
    text: str = ""  # the model's response

    @classmethod
    def from_axis_angle(cls, axis_angle, body: BodyModel | None = None, **fields) -> PoseRecord:
        aa = check_axis_angle(axis_angle)
        joints = (body or BodyModel()).joints_from_axis_angle(aa[None])[0]
        return cls(aa, joints, **fields)

    def as_dict(self) -> dict:
        """Plain lists, for JSON."""
        out = {
            "axis_angle": self.axis_angle.reshape(-1).tolist(),
            "joints_m": self.joints_m.tolist(),
            "joint_names": list(JOINT_NAMES),
            "parents": list(PARENTS),
            "text": self.text,
        }
        out["mu"] = None if self.mu is None else np.asarray(self.mu).tolist()
        out["std"] = None if self.std is None else np.asarray(self.std).tolist()
        return out


def check_axis_angle(pose, name: str = "pose") -> np.ndarray:
    """72 numbers or (24, 3) -> finite (24, 3) float64, else ValueError naming `name`."""
    try:
        arr = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be 72 numbers (24 joints x axis-angle), got {type(pose).__name__}") from exc
    if arr.size != NUM_JOINTS * 3 or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape != (NUM_JOINTS, 3)):
        raise ValueError(f"{name} must be 72 numbers or 24 x 3 (axis-angle per joint), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return arr.reshape(NUM_JOINTS, 3)


# ---------------------------------------------------------------- npz / json


def npz_bytes(rec: PoseRecord) -> bytes:
    buf = io.BytesIO()
    nan = np.full(POSE_6D_DIM, np.nan)
    np.savez(
        buf,
        axis_angle=rec.axis_angle.reshape(-1),
        joints_m=rec.joints_m,
        mu=nan if rec.mu is None else np.asarray(rec.mu, np.float64),
        std=nan if rec.std is None else np.asarray(rec.std, np.float64),
        joint_names=np.array(JOINT_NAMES),
        parents=np.array(PARENTS),
        text=np.array(rec.text),
    )
    return buf.getvalue()


def json_bytes(rec: PoseRecord) -> bytes:
    return (json.dumps(rec.as_dict(), indent=1) + "\n").encode()


# ---------------------------------------------------------------- png


def png_bytes(rec: PoseRecord, size: int = 256) -> bytes:
    """Front (camera in front of the body) and side (camera at the body's left) views."""
    from poserft.data.render import png_bytes as encode
    from poserft.data.render import render_grid

    grid = render_grid(
        [rec.joints_m, rec.joints_m], captions=["front", "side (from the left)"], size=size, yaw_deg=[0.0, 90.0]
    )
    return encode(grid)


# ---------------------------------------------------------------- bvh


def rest_offsets_m(body: BodyModel | None = None) -> np.ndarray:
    """(24, 3) offset of each joint from its parent in the rest pose (joint 0: from the origin)."""
    rest = (body or BodyModel()).rest_joints.numpy()
    offsets = rest.copy()
    offsets[1:] = rest[1:] - rest[list(PARENTS[1:])]
    return offsets


def bvh_text(rec: PoseRecord, body: BodyModel | None = None) -> str:
    offsets = rest_offsets_m(body)
    children = {j: [c for c in range(NUM_JOINTS) if PARENTS[c] == j] for j in range(NUM_JOINTS)}
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        kind = "ROOT" if j == 0 else "JOINT"
        lines.append(f"{pad}{kind} {JOINT_NAMES[j]}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {_num(offsets[j][0])} {_num(offsets[j][1])} {_num(offsets[j][2])}")
        chans = (
            "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
            if j == 0
            else "3 Zrotation Xrotation Yrotation"
        )
        lines.append(f"{pad}  CHANNELS {chans}")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            end = _END_SITES_M[JOINT_NAMES[j]]
            lines.extend(
                [f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET {' '.join(_num(v) for v in end)}", pad + "  }"]
            )
        lines.append(pad + "}")

    emit(0, 0)
    euler = bvh_euler_zxy_deg(rec.axis_angle)
    order = _depth_first_order(children)
    values = [0.0, 0.0, 0.0] + [v for j in order for v in euler[j]]
    lines += ["MOTION", "Frames: 1", f"Frame Time: {BVH_FRAME_TIME_S:.6f}", " ".join(_num(v) for v in values)]
    return "\n".join(lines) + "\n"


def bvh_euler_zxy_deg(axis_angle: np.ndarray) -> np.ndarray:
    """(24, 3) axis-angle -> (24, 3) intrinsic Z, X, Y angles in degrees (R = Rz Rx Ry).
    At X = +-90 degrees scipy warns of gimbal lock and sets Y to 0: the angles still give R exactly."""
    rot = Rotation.from_rotvec(np.asarray(axis_angle, np.float64).reshape(NUM_JOINTS, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return rot.as_euler("ZXY", degrees=True)


def _depth_first_order(children: dict[int, list[int]]) -> list[int]:
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack += reversed(children[j])
    return order


def _num(v: float) -> str:
    return f"{float(v):.6f}"


# ---------------------------------------------------------------- all of them

WRITERS = {"npz": npz_bytes, "json": json_bytes, "png": png_bytes, "bvh": lambda rec: bvh_text(rec).encode()}


def export_bytes(rec: PoseRecord, formats=FORMATS) -> dict[str, bytes]:
    """{"pose.npz": bytes, ...} for the requested formats."""
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(map(str, unknown))}; known: {', '.join(FORMATS)}")
    return {f"pose.{f}": WRITERS[f](rec) for f in formats}


def write_exports(rec: PoseRecord, out_dir: str | Path, formats=FORMATS) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in export_bytes(rec, formats).items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths
