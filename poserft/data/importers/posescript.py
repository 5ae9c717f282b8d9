"""PoseScript v2 captions on AMASS poses -> text2pose and pose2text rows (`poserft data import posescript`).

Inputs (the PoseScript release folder and the user's AMASS SMPL-H folder):
- `ids_2_dataset_sequence_and_frame_index_100k.json`: pose id -> ["AMASS", npz path relative to
  the AMASS folder, frame index];
- `{train,val,test}_ids_100k.json`: the pose ids of each split;
- `posescript_human_6293.json`, `posescript_auto_100k.json`: pose id -> caption or list of captions;
- AMASS `.npz` files: `poses` (frames, 156) SMPL-H axis-angle.

Pose: SMPL's 22 body joints are the first 66 numbers of an SMPL-H pose; SMPL's two hand joints
take the rotations of the SMPL-H index-finger roots (left 66:69, right 111:114), the usual SMPL-H
to SMPL mapping. The global orientation loses its rotation about AMASS's vertical z axis (as
PoseScript normalises it), then turns from z-up to y-up. `trans` and `betas` are not used: the
targets are root-relative and the project's body is the neutral shape.

Streaming: the requested poses are grouped by npz file and the files are read one at a time in
sorted order, so memory holds one sequence plus the JSON files.
"""

from __future__ import annotations

import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from poserft.data.dataset import SPLITS
from poserft.data.importers.common import (
    Z_UP_TO_Y_UP,
    ImportInputError,
    Skeleton,
    Skips,
    StagedImport,
    aa_to_matrix,
    check_finite,
    drop_z_heading,
    read_json,
    task_row,
    with_root,
)

MAPPING_FILE = "ids_2_dataset_sequence_and_frame_index_100k.json"
SPLIT_FILE = "{split}_ids_100k.json"
CAPTION_FILES = {"human": "posescript_human_6293.json", "auto": "posescript_auto_100k.json"}
CAPTION_CHOICES = {"human": ("human",), "auto": ("auto",), "all": ("human", "auto")}
SMPLH_POSE_DIM = 156
LEFT_INDEX1, RIGHT_INDEX1 = slice(66, 69), slice(111, 114)  # SMPL-H finger roots standing in for SMPL's hands
LICENCE = (
    "PoseScript: CC BY-NC-SA 4.0 (NAVER LABS Europe), non-commercial use, share alike; "
    "AMASS: the AMASS licence (Max Planck Institute for Intelligent Systems), non-commercial scientific research only"
)


def smplh_to_smpl(poses: np.ndarray) -> np.ndarray:
    """(N, 156) SMPL-H axis-angle -> (N, 24, 3) SMPL: 22 body joints + the index-finger roots as hands."""
    return np.concatenate([poses[:, :66], poses[:, LEFT_INDEX1], poses[:, RIGHT_INDEX1]], axis=1).reshape(-1, 24, 3)


def normalise_amass(pose_aa: np.ndarray) -> np.ndarray:
    """(N, 24, 3) AMASS SMPL poses (z-up world) -> poserft's frame: no heading about z, then y up."""
    root = Z_UP_TO_Y_UP @ drop_z_heading(aa_to_matrix(pose_aa[:, 0]))
    return with_root(pose_aa, root)


def _pose_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ImportInputError(f"{where}: pose id {value!r} is not an integer")
    try:
        pid = int(value)
    except ValueError:
        raise ImportInputError(f"{where}: pose id {value!r} is not an integer") from None
    if pid < 0:
        raise ImportInputError(f"{where}: pose id {pid} is negative")
    return pid


def _read_mapping(path: Path) -> dict[int, tuple[str, int]]:
    raw = read_json(path, "PoseScript mapping")
    if not isinstance(raw, dict):
        raise ImportInputError(f"PoseScript mapping {path} must hold an object (pose id -> [dataset, npz path, frame])")
    out = {}
    for key, entry in raw.items():
        pid = _pose_id(key, str(path))
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[1], str) and type(entry[2]) is int):
            raise ImportInputError(
                f'PoseScript mapping {path}: id {key}: expected ["AMASS", npz path, frame index], got {str(entry)[:80]}'
            )
        if entry[0] != "AMASS":
            raise ImportInputError(f"PoseScript mapping {path}: id {key}: dataset {str(entry[0])[:40]!r} is not AMASS")
        if entry[2] < 0 or not entry[1] or Path(entry[1]).is_absolute() or ".." in Path(entry[1]).parts:
            raise ImportInputError(
                f"PoseScript mapping {path}: id {key}: npz path {entry[1][:80]!r} or frame {entry[2]} is invalid"
            )
        out[pid] = (entry[1], entry[2])
    return out


def _read_split(path: Path, mapping: dict) -> list[int]:
    raw = read_json(path, "PoseScript split file")
    if not isinstance(raw, list):
        raise ImportInputError(f"PoseScript split file {path} must hold a list of pose ids")
    ids = [_pose_id(v, str(path)) for v in raw]
    for pid in ids:
        if pid not in mapping:
            raise ImportInputError(f"PoseScript split file {path}: id {pid} is not in {MAPPING_FILE}")
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise ImportInputError(f"PoseScript split file {path}: id {dup} appears more than once")
    return ids


def _read_captions(path: Path) -> dict[int, list[str]]:
    raw = read_json(path, "PoseScript caption file")
    if not isinstance(raw, dict):
        raise ImportInputError(
            f"PoseScript caption file {path} must hold an object (pose id -> caption or list of captions)"
        )
    out = {}
    for key, value in raw.items():
        pid = _pose_id(key, str(path))
        caps = [value] if isinstance(value, str) else value
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise ImportInputError(
                f"PoseScript caption file {path}: id {key}: expected a caption or a list of captions, got "
                f"{str(value)[:60]}"
            )
        out[pid] = [" ".join(c.split()) for c in caps]
    return out


def _load_npz_poses(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "poses" not in npz.files:
                raise ImportInputError(f"AMASS file {path} has no key 'poses' (keys: {', '.join(npz.files)[:120]})")
            poses = npz["poses"]
    except ImportInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ImportInputError(f"AMASS file {path} is not a readable npz ({type(err).__name__})") from None
    if poses.ndim != 2 or poses.shape[1] != SMPLH_POSE_DIM or not np.issubdtype(poses.dtype, np.floating):
        raise ImportInputError(
            f"AMASS file {path}: key 'poses' has shape {poses.shape} and dtype {poses.dtype}, expected (frames, 156) "
            "floats (SMPL-H)"
        )
    return poses


def import_posescript(
    posescript_dir: str | Path,
    amass_dir: str | Path,
    out: str | Path,
    captions: str = "human",
    smpl_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Write the PoseScript/AMASS rows to `out` (train/val/test.parquet, pose_only.parquet, card); returns the card."""
    if captions not in CAPTION_CHOICES:
        raise ImportInputError(f"--captions {captions!r}: choose one of {', '.join(CAPTION_CHOICES)}")
    ps, amass = Path(posescript_dir), Path(amass_dir)
    for flag, folder in (("--posescript", ps), ("--amass", amass)):
        if not folder.is_dir():
            raise ImportInputError(f"{flag} {folder} is not a folder")
    mapping = _read_mapping(ps / MAPPING_FILE)
    split_ids = {s: _read_split(ps / SPLIT_FILE.format(split=s), mapping) for s in SPLITS}
    seen: dict[int, str] = {}
    for s, ids in split_ids.items():
        for pid in ids:
            if pid in seen:
                raise ImportInputError(f"PoseScript split files: id {pid} is in both {seen[pid]} and {s}")
            seen[pid] = s
    kinds = CAPTION_CHOICES[captions]
    caption_sets = {kind: _read_captions(ps / CAPTION_FILES[kind]) for kind in kinds}

    by_file: dict[str, list[tuple[int, int, str]]] = defaultdict(list)  # npz path -> (frame, id, split)
    for pid, split in seen.items():
        rel, frame = mapping[pid]
        by_file[rel].append((frame, pid, split))
    skel, skips = Skeleton(smpl_dir), Skips()
    total = len(seen)
    with StagedImport(out) as staged:
        bar = tqdm(total=total, desc="import posescript", unit="pose", disable=not progress, smoothing=0)
        for rel in sorted(by_file):
            wanted = sorted(by_file[rel])
            path = amass / rel
            if not path.is_file():
                for _, pid, _ in wanted:
                    skips.add("npz missing", f"id {pid}: npz missing ({rel})")
                bar.update(len(wanted))
                continue
            poses = _load_npz_poses(path)
            keep = []
            for frame, pid, split in wanted:
                if frame >= len(poses):
                    skips.add("frame out of range", f"id {pid}: frame {frame} beyond the {len(poses)} frames of {rel}")
                else:
                    check_finite(poses[frame], f"AMASS file {path}: key 'poses', frame {frame} (id {pid})")
                    keep.append((frame, pid, split))
            if keep:
                pose_aa = normalise_amass(smplh_to_smpl(poses[[f for f, _, _ in keep]].astype(np.float64)))
                joints = skel.joints(pose_aa)
                for (frame, pid, split), aa, jo in zip(keep, pose_aa, joints):
                    _emit(staged, skips, pid, split, aa, jo, caption_sets)
            bar.update(len(wanted))
        bar.close()
        source = {
            "dataset": "PoseScript v2 (AMASS poses)",
            "posescript": str(ps),
            "amass": str(amass),
            "captions": captions,
            "hands": "SMPL hand joints from the SMPL-H index-finger roots",
            "body": skel.body.backend,
        }
        return staged.commit("posescript", source, LICENCE, skips)


def _emit(staged: StagedImport, skips: Skips, pid: int, split: str, pose_aa, joints, caption_sets: dict) -> None:
    written = False
    for kind, caps in caption_sets.items():
        for k, cap in enumerate(caps.get(pid, ())):
            if not cap:
                skips.add("empty caption", f"id {pid}: {kind} caption {k} is empty")
                continue
            for task in ("text2pose", "pose2text"):
                staged.add(task_row(f"posescript-{pid:06d}-{kind}{k}-{task}", task, split, pid, pose_aa, joints, cap))
            written = True
    if not written:
        staged.add_pose_only(pid, f"posescript-{pid:06d}", split, pose_aa, joints)
