"""The synthetic pose benchmark: an offline stand-in for PoseScript and 3DPW-style data.

`build_dataset(out, seed, ...)` samples poses from the pose prior, computes joints by FK,
captions them with the posecode captioner, renders the image2pose inputs, and writes one Parquet
file per split (TaskRecord rows for the three tasks) plus `dataset_card.json`.
Every pose belongs to exactly one split; the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from poserft.common.body import BodyModel
from poserft.common.schemas import POSE_RESPONSE, TASK_RECORD_SCHEMA, TASKS

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1

PROMPTS = {
    "text2pose": (
        "Generate the 3D body pose described here: {caption}",
        "Here is a description of a person's pose: {caption} What is the SMPL pose?",
        "Create the SMPL pose that matches this text. {caption}",
    ),
    "image2pose": (
        "<image>\nWhat is the SMPL pose of the person in this image?",
        "<image>\nEstimate the 3D body pose shown in the picture.",
        "<image>\nGive the SMPL pose of this person.",
    ),
    "pose2text": (
        "<pose>\nDescribe this body pose in words.",
        "<pose>\nWhat is this person doing with their body? Describe the pose.",
        "<pose>\nWrite a short description of this pose.",
    ),
}


class DatasetError(ValueError):
    """A dataset folder or file is missing, unreadable or has the wrong schema."""


def check_writable(out: Path) -> None:
    """Fail before any work if `out` cannot be created or written."""
    out = Path(out)
    probe_dir = out
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise DatasetError(f"--out {out}: {probe_dir} exists and is not a folder")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise DatasetError(f"--out {out}: folder {probe_dir} is not writable")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} exists and is not a folder")


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_dataset(
    out: str | Path,
    seed: int = 0,
    train_poses: int = 20000,
    val_poses: int = 1000,
    test_poses: int = 1000,
    image_size: int = 64,
    smpl_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Write the benchmark to `out`; returns the dataset card."""
    from poserft.common.captioner import Captioner
    from poserft.common.pose_prior import PosePrior
    from poserft.common.render import render_skeleton

    out = Path(out)
    counts = {"train": train_poses, "val": val_poses, "test": test_poses}
    for split, n in counts.items():
        if int(n) < 1:
            raise DatasetError(f"{split}_poses must be at least 1, got {n}")
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)

    total = sum(counts.values())
    body = BodyModel(smpl_dir=smpl_dir)
    bar = tqdm(total=4 * total, desc="data build", unit="step", disable=not progress, smoothing=0)
    poses = PosePrior(seed).sample(total)  # (total, 24, 3) axis-angle
    bar.update(total)
    joints = np.concatenate(
        [body.joints_from_axis_angle(poses[i : i + 4096]) for i in range(0, total, 4096)]
    )  # (total, 24, 3) metres
    bar.update(total)
    captioner = Captioner(seed)
    captions = []
    for i in range(0, total, 2048):
        captions += captioner.caption(joints[i : i + 2048], ids=list(range(i, min(i + 2048, total))))
        bar.update(min(2048, total - i))
    images = []
    for i in range(total):
        images.append(render_skeleton(joints[i], size=image_size))
        bar.update(1)
    bar.close()

    rng = np.random.default_rng([seed, 7])
    template_choice = {task: rng.integers(0, len(PROMPTS[task]), size=total) for task in TASKS}
    card_files = {}
    start = 0
    for split in SPLITS:
        idx = np.arange(start, start + counts[split])
        start += counts[split]
        table = _split_table(split, idx, poses, joints, captions, images, template_choice)
        path = out / f"{split}.parquet"
        _write_atomic(path, lambda tmp, t=table: pq.write_table(t, tmp, compression="zstd", row_group_size=4096))
        card_files[split] = {"file": path.name, "rows": table.num_rows, "poses": len(idx), "sha256": _sha256(path)}

    card = {
        "name": "poserft-synthetic",
        "format_version": FORMAT_VERSION,
        "tasks": list(TASKS),
        "splits": card_files,
        "rows_per_task": {s: card_files[s]["poses"] for s in SPLITS},
        "captions": _caption_stats(captions, counts),
        "generator": {
            "seed": seed,
            "train_poses": train_poses,
            "val_poses": val_poses,
            "test_poses": test_poses,
            "image_size": image_size,
            "body_backend": body.backend,
            "pose_representation": "target_pose: 24x3 axis-angle (radians), target_joints: 24x3 metres, root at origin",
            "camera": "orthographic, front view (yaw 0, pitch 0); poses are expressed in the camera frame",
        },
    }
    _write_atomic(out / "dataset_card.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    return card


def _split_table(split, idx, poses, joints, captions, images, template_choice) -> pa.Table:
    rows = {name: [] for name in TASK_RECORD_SCHEMA.names}
    for task in TASKS:
        for i in idx:
            cap = captions[i]
            rows["id"].append(f"{split}-{i:06d}-{task}")
            rows["task"].append(task)
            rows["split"].append(split)
            rows["pose_id"].append(int(i))
            rows["prompt"].append(PROMPTS[task][template_choice[task][i]].format(caption=cap))
            rows["image"].append(images[i] if task == "image2pose" else None)
            rows["target_pose"].append(poses[i].reshape(-1).astype(np.float32))
            rows["target_joints"].append(joints[i].reshape(-1).astype(np.float32))
            rows["reference_text"].append(cap if task == "pose2text" else POSE_RESPONSE)
            rows["caption"].append(cap)
    return pa.Table.from_pydict(rows, schema=TASK_RECORD_SCHEMA)


def _caption_stats(captions: list[str], counts: dict) -> dict:
    lengths = np.array([len(c.split()) for c in captions])
    test = captions[counts["train"] + counts["val"] :]
    shared = Counter(test)
    return {
        "distinct": len(set(captions)),
        "total": len(captions),
        "mean_words": round(float(lengths.mean()), 2),
        "max_words": int(lengths.max()),
        "vocabulary": len({w.strip(".,;").lower() for c in captions for w in c.split()}),
        "test_poses_sharing_a_caption": int(sum(n for n in shared.values() if n > 1)),
    }


# ---- loading ----------------------------------------------------------------------------


def load_split(data_dir: str | Path, split: str, task: str | None = None) -> pa.Table:
    """Read one split, checked against the TaskRecord schema; optionally one task's rows."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if task is not None and task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise DatasetError(f"dataset file {path} is missing; build it with `poserft data build --out {data_dir}`")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for broken files
        raise DatasetError(f"dataset file {path} is not readable Parquet: {err}") from None
    validate_task_table(table, str(path))
    if task is not None:
        table = table.filter(pa.compute.equal(table["task"], task))
    return table


def validate_task_table(table: pa.Table, where: str = "table") -> None:
    missing = [f.name for f in TASK_RECORD_SCHEMA if f.name not in table.schema.names]
    if missing:
        raise DatasetError(f"{where} is missing columns {missing}")
    for field in TASK_RECORD_SCHEMA:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise DatasetError(f"{where}: column {field.name!r} has type {got}, expected {field.type}")
    bad_tasks = set(table["task"].to_pylist()) - set(TASKS)
    if bad_tasks:
        raise DatasetError(f"{where}: unknown task values {sorted(map(str, bad_tasks))}")
    for name in ("target_pose", "target_joints"):
        values = table[name].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        if not np.isfinite(values).all():
            raise DatasetError(f"{where}: column {name!r} contains NaN or infinite values")
