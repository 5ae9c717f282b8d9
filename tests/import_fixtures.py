"""Writers of small data sets in the real on-disk layouts of PoseScript/AMASS, 3DPW and the JSONL
format, for the importer tests and benchmarks. Poses come from the project's pose prior; nothing
here is taken from the real data sets.

- AMASS: `.npz` with `poses` (frames, 156) SMPL-H axis-angle in a z-up world (the SMPL body's
  y-up frame turned +90 degrees about x, then a random heading about z), `trans`, `betas`,
  `gender`, `mocap_framerate`.
- PoseScript: the mapping, split and caption JSON files (human: one caption; auto: a list).
- 3DPW: latin1-readable pickles written with protocol 2 holding 3DPW's keys, and JPEG frames with
  the people's projected keypoints drawn on them (one colour per person).
"""

from __future__ import annotations

import json
import pickle
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from poserft.common.body import BodyModel
from poserft.data.importers.common import CAMERA_TO_Y_UP, aa_to_matrix, matrix_to_aa, rot_z
from poserft.data.pose_prior import PosePrior

RX_90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # SMPL's y-up body -> AMASS's z-up world
# COCO-18 keypoints (OpenPose order) -> the SMPL joint drawn for them (nose, eyes, ears: the head)
PERSON_RGB = ((255, 40, 40), (40, 255, 40))  # 3DPW frames: person 0's keypoints red, person 1's green
COCO18_FROM_SMPL = (15, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 15, 15, 15, 15)


def smpl_poses(n: int, seed: int) -> np.ndarray:
    """(n, 24, 3) axis-angle in poserft's frame, from the pose prior."""
    return PosePrior(seed).sample(n).astype(np.float64)


def to_amass(pose_aa: np.ndarray, rng: np.random.Generator, finger_noise: float = 0.3) -> np.ndarray:
    """(N, 24, 3) y-up SMPL -> (N, 156) SMPL-H in a z-up world with a random heading; hands as index-finger roots."""
    n = len(pose_aa)
    root = rot_z(rng.uniform(-np.pi, np.pi, n)) @ RX_90 @ aa_to_matrix(pose_aa[:, 0])
    out = rng.normal(0, finger_noise, (n, 156))  # the other finger joints: ignored by the importer
    out[:, :3] = matrix_to_aa(root)
    out[:, 3:66] = pose_aa[:, 1:22].reshape(n, 63)
    out[:, 66:69], out[:, 111:114] = pose_aa[:, 22], pose_aa[:, 23]
    return out


def write_amass_npz(path: Path, poses156: np.ndarray, **overrides) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "poses": poses156,
        "trans": np.zeros((0 if poses156 is None else len(poses156), 3)),
        "betas": np.zeros(16),
        "gender": np.array("neutral"),
        "mocap_framerate": np.array(120.0),
    }
    arrays.update(overrides)
    with open(path, "wb") as fh:
        np.savez(fh, **{k: v for k, v in arrays.items() if v is not None})


def write_posescript(
    root: Path, n_poses: int = 60, frames_per_seq: int = 10, seed: int = 0, human_every: int = 2, progress=None
) -> dict:
    """PoseScript + AMASS fixture under root/posescript and root/amass; returns the originals.

    Pose id i is frame i % frames_per_seq of sequence i // frames_per_seq; ids % 10 == 8 are val,
    == 4 test, the rest train; every `human_every`-th id has a human caption (so every split has
    some with the default of 2), every id three auto ones."""
    rng = np.random.default_rng(seed)
    ps, amass = root / "posescript", root / "amass"
    ps.mkdir(parents=True, exist_ok=True)
    mapping, originals = {}, {}
    for start in range(0, n_poses, frames_per_seq):
        ids = list(range(start, min(start + frames_per_seq, n_poses)))
        poses = smpl_poses(len(ids), seed=seed * 100_003 + start)
        rel = f"Fixture/S{start // 1000:03d}/seq{start:07d}_poses.npz"
        write_amass_npz(amass / rel, to_amass(poses, rng))
        for k, pid in enumerate(ids):
            mapping[str(pid)] = ["AMASS", rel, k]
            originals[pid] = poses[k]
        if progress:
            progress(len(ids))
    split_of = {pid: "val" if pid % 10 == 8 else "test" if pid % 10 == 4 else "train" for pid in range(n_poses)}
    files = {
        "ids_2_dataset_sequence_and_frame_index_100k.json": mapping,
        "posescript_human_6293.json": {
            str(i): f"The person stands with pose number {i} and the left knee bent."
            for i in range(0, n_poses, human_every)
        },
        "posescript_auto_100k.json": {
            str(i): [f"Auto caption {k} of pose {i}: the arms are apart." for k in range(3)] for i in range(n_poses)
        },
    }
    for split in ("train", "val", "test"):
        files[f"{split}_ids_100k.json"] = [i for i in range(n_poses) if split_of[i] == split]
    for name, obj in files.items():
        (ps / name).write_text(json.dumps(obj))
    return {"posescript": ps, "amass": amass, "poses": originals, "split_of": split_of}


def camera(yaw: float, pitch: float, distance: float = 4.0) -> np.ndarray:
    """A 4x4 world-to-camera matrix (OpenCV axes) looking at the world origin; the world is y-up."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r = CAMERA_TO_Y_UP.T @ rx @ ry  # the y-up frame of the camera, then OpenCV's axes
    ext = np.eye(4)
    ext[:3, :3] = r
    ext[:3, 3] = [0.0, 0.0, distance]
    return ext


def project(points_world: np.ndarray, ext: np.ndarray, intr: np.ndarray) -> np.ndarray:
    cam = points_world @ ext[:3, :3].T + ext[:3, 3]
    uv = cam @ intr.T
    return uv[:, :2] / uv[:, 2:]


def write_3dpw(
    root: Path,
    sequences: dict[str, list[str]] | None = None,
    frames: int = 6,
    people: int = 2,
    size=(240, 320),
    seed: int = 0,
    standing: bool = False,
) -> dict:
    """3DPW fixture under root; returns per sequence the originals: world poses, cameras, keypoints.

    Frame 1 of person 0 has campose_valid false; everything else is valid."""
    sequences = sequences or {
        "train": ["courtyard_fixture_00"],
        "validation": ["downtown_fixture_00"],
        "test": ["office_fixture_00"],
    }
    rng = np.random.default_rng(seed)
    body = BodyModel()
    w, h = size
    intr = np.array([[0.9 * h, 0, w / 2], [0, 0.9 * h, h / 2], [0, 0, 1.0]])
    info = {}
    for folder, names in sequences.items():
        (root / "sequenceFiles" / folder).mkdir(parents=True, exist_ok=True)
        for s, name in enumerate(names):
            cams = np.stack([camera(rng.uniform(-0.6, 0.6), rng.uniform(-0.2, 0.2)) for _ in range(frames)])
            poses, kps, trans = [], [], []
            for p in range(people):
                aa = smpl_poses(frames, seed=seed * 1000 + 10 * s + p + zlib.crc32(folder.encode()) % 97)
                if standing:
                    aa[:] = 0.0
                aa[:, 0] = matrix_to_aa(
                    aa_to_matrix(np.array([[0.0, rng.uniform(-1, 1), 0.0]])).repeat(frames, 0)
                )  # upright, some heading
                tr = np.tile([0.6 * (p - (people - 1) / 2), 0.0, 0.0], (frames, 1))
                joints = body.joints_from_axis_angle(aa.reshape(frames, 24, 3)) + tr[:, None]
                kp = np.zeros((frames, 3, 18))
                for i in range(frames):
                    uv = project(joints[i][list(COCO18_FROM_SMPL)], cams[i], intr)
                    kp[i, :2], kp[i, 2] = uv.T, 1.0
                poses.append(aa.reshape(frames, 72))
                kps.append(kp)
                trans.append(tr)
            valid = [np.ones(frames, dtype=bool) for _ in range(people)]
            valid[0][1] = False
            seq = {
                "sequence": name,
                "poses": poses,
                "betas": [np.zeros(10) for _ in range(people)],
                "trans": trans,
                "poses2d": kps,
                "campose_valid": valid,
                "cam_poses": cams,
                "cam_intrinsics": intr,
                "img_frame_ids": np.arange(frames),
                "genders": ["m"] * people,
            }
            with open(root / "sequenceFiles" / folder / f"{name}.pkl", "wb") as fh:
                pickle.dump(seq, fh, protocol=2)
            img_dir = root / "imageFiles" / name
            img_dir.mkdir(parents=True, exist_ok=True)
            for i in range(frames):
                img = Image.new("RGB", (w, h), (20, 20, 20))
                draw = ImageDraw.Draw(img)
                for p, kp in enumerate(kps):
                    for x, y in kp[i, :2].T:
                        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=PERSON_RGB[p % 2])
                img.save(img_dir / f"image_{i:05d}.jpg", quality=95, subsampling=0)
            info[name] = {"split": folder, "poses": poses, "cams": cams, "keypoints": kps, "intrinsics": intr}
    return info
