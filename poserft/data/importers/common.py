"""What every importer shares: frame conversions, TaskRecord rows, the staged writer and the card.

Choices worth knowing
- Staged, then swapped in. An import writes into a hidden sibling folder of `--out`, one
  Parquet row group at a time, and only when every split is complete does it move that folder
  to `--out` (the old folder is renamed aside first and deleted last). An interrupted or failed
  import therefore leaves `--out` as it was; nothing half-written is ever visible there.
- Deterministic. Rows are written in an order fixed by the inputs (sorted file names, then
  frame or line order), prompt templates are picked by a hash of the row id, and the Parquet
  writer settings are fixed, so the same inputs give byte-identical files.
- Frames. poserft's frame is SMPL's: y up, x towards the body's left, z out of the chest
  (see poserft.common.body). Importers turn the global orientation (joint 0) into it; the
  other 23 joints are local rotations and need no conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from poserft.common.body import NUM_JOINTS, BodyModel
from poserft.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from poserft.common.schemas import AA_DIM, POSE_RESPONSE, TASK_RECORD_SCHEMA, TASKS
from poserft.data.dataset import CARD_NAME, FORMAT_VERSION, PROMPTS, SPLITS, DatasetError, check_writable

ROW_GROUP_ROWS = 2048
MAX_SKIP_MESSAGES = 10_000  # the card keeps the first ones; the counts per reason are always complete

# AMASS is z-up: a rotation of -90 degrees about x takes its +z to poserft's +y.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# A camera frame as OpenCV and 3DPW use it (x right, y down, z forward) turned by 180 degrees
# about x: y up, and a person facing the camera faces +z, towards the viewer.
CAMERA_TO_Y_UP = np.diag([1.0, -1.0, -1.0])

POSE_ONLY_NAME = "pose_only.parquet"
POSE_ONLY_SCHEMA = pa.schema(
    [
        pa.field("pose_id", pa.int64(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("target_pose", pa.list_(pa.float32(), AA_DIM), nullable=False),
        pa.field("target_joints", pa.list_(pa.float32(), AA_DIM), nullable=False),
    ]
)


class ImportInputError(DatasetError):
    """An input file of an import is missing, unreadable or not in the documented layout."""


# ---- frames and poses -------------------------------------------------------------------------


def rot_z(angle: np.ndarray) -> np.ndarray:
    """(N,) radians -> (N, 3, 3) rotations about z."""
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros(np.shape(angle) + (3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1], out[..., 2, 2] = c, -s, s, c, 1.0
    return out


def aa_to_matrix(aa: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(aa, dtype=torch.float64)).numpy()


def matrix_to_aa(m: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.as_tensor(m, dtype=torch.float64)).numpy()


def drop_z_heading(root: np.ndarray) -> np.ndarray:
    """(N, 3, 3) root rotations in a z-up frame -> the same without their rotation about z.

    As PoseScript normalises AMASS poses: write R = Rz(a) Ry(b) Rx(c) (Euler angles, z last
    applied) and set a = 0, i.e. return Rz(-a) R with a = atan2(R[1, 0], R[0, 0])."""
    heading = np.arctan2(root[..., 1, 0], root[..., 0, 0])
    return rot_z(-heading) @ root


def with_root(pose_aa: np.ndarray, root: np.ndarray) -> np.ndarray:
    """(N, 24, 3) axis-angle with joint 0 replaced by the (N, 3, 3) rotations `root`."""
    out = np.array(pose_aa, dtype=np.float64, copy=True)
    out[:, 0] = matrix_to_aa(root)
    return out


@dataclass
class Skeleton:
    """FK for the importers: the built-in neutral skeleton, or SMPL via smplx when smpl_dir is set."""

    smpl_dir: str | None = None
    body: BodyModel = field(init=False)

    def __post_init__(self):
        self.body = BodyModel(smpl_dir=self.smpl_dir)

    def joints(self, pose_aa: np.ndarray) -> np.ndarray:
        """(N, 24, 3) axis-angle -> (N, 24, 3) joints in metres, root at the origin."""
        return self.body.joints_from_axis_angle(np.asarray(pose_aa, dtype=np.float64).reshape(-1, NUM_JOINTS, 3))


def check_finite(pose: np.ndarray, where: str) -> None:
    if not np.isfinite(pose).all():
        raise ImportInputError(f"{where} holds a NaN or infinite value")


# ---- rows -------------------------------------------------------------------------------------


def prompt_for(task: str, row_id: str, caption: str) -> str:
    """A prompt template picked by a hash of the row id (stable across runs and machines)."""
    templates = PROMPTS[task]
    return templates[zlib.crc32(row_id.encode()) % len(templates)].format(caption=caption)


def task_row(
    row_id: str,
    task: str,
    split: str,
    pose_id: int,
    pose_aa,
    joints,
    caption: str,
    image: bytes | None = None,
    prompt: str | None = None,
) -> dict:
    """One TaskRecord row (the columns `poserft data build` writes)."""
    return {
        "id": row_id,
        "task": task,
        "split": split,
        "pose_id": int(pose_id),
        "prompt": prompt if prompt is not None else prompt_for(task, row_id, caption),
        "image": image if task == "image2pose" else None,
        "target_pose": np.asarray(pose_aa, dtype=np.float32).reshape(-1),
        "target_joints": np.asarray(joints, dtype=np.float32).reshape(-1),
        "reference_text": caption if task == "pose2text" else POSE_RESPONSE,
        "caption": caption,
    }


class Skips:
    """Rows left out, with the reason for each: counted per reason, the messages kept for the card."""

    def __init__(self):
        self.by_reason: Counter = Counter()
        self.messages: list[str] = []

    def add(self, reason: str, message: str) -> None:
        self.by_reason[reason] += 1
        if len(self.messages) < MAX_SKIP_MESSAGES:
            self.messages.append(message)

    def card(self) -> dict:
        total = sum(self.by_reason.values())
        return {
            "total": total,
            "by_reason": dict(sorted(self.by_reason.items())),
            "rows": self.messages,
            "rows_not_listed": total - len(self.messages),
        }


# ---- writing ----------------------------------------------------------------------------------


class _Stream:
    """Rows for one Parquet file, written a row group at a time."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.buffer: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        if self.buffer:
            self.writer.write_table(self._table(), row_group_size=ROW_GROUP_ROWS)
            self.rows += len(self.buffer)
            self.buffer = []

    def _table(self) -> pa.Table:
        """The buffered rows as a table; pose vectors go in as one numpy block per column (faster than from_pylist)."""
        columns = []
        for f in self.schema:
            values = [row[f.name] for row in self.buffer]
            if pa.types.is_fixed_size_list(f.type):
                flat = pa.array(np.stack(values).astype(np.float32).reshape(-1), type=f.type.value_type)
                columns.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
            else:
                columns.append(pa.array(values, type=f.type))
        return pa.Table.from_arrays(columns, schema=self.schema)

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _process_alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StagedImport:
    """The output of one import: rows stream into a hidden staging folder; `commit` swaps it in.

    Use as a context manager: leaving the block with an exception (or Ctrl-C) deletes the
    staging folder and leaves `out` untouched."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        check_writable(self.out)
        if self.out.is_dir() and any(self.out.iterdir()) and not (self.out / CARD_NAME).is_file():
            raise ImportInputError(
                f"--out {self.out} holds files but no {CARD_NAME}; choose an empty folder or a dataset folder to "
                "replace"
            )
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.stage = self.out.parent / f".{self.out.name}.importing-{os.getpid()}"
        self.splits: dict[str, _Stream] = {}
        self.pose_only: _Stream | None = None
        self.counts = {s: Counter() for s in SPLITS}
        self.poses = {s: set() for s in SPLITS}
        self.pose_only_counts: Counter = Counter()

    def __enter__(self):
        # FK and rotations run on batches of a few hundred poses: one torch thread is faster than
        # several (0.02 s vs 0.7 s for 500 poses on the shared 2-core box; NOTES), restored on exit.
        self.torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for stale in self.out.parent.glob(f".{self.out.name}.importing-*"):  # left by a killed import
            if not _process_alive(stale.name.rsplit("-", 1)[1]):
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir()
        self.splits = {s: _Stream(self.stage / f"{s}.parquet", TASK_RECORD_SCHEMA) for s in SPLITS}
        return self

    def __exit__(self, exc_type, exc, tb):
        torch.set_num_threads(self.torch_threads)
        if exc_type is not None:
            for stream in [*self.splits.values(), self.pose_only]:
                if stream is not None and stream.writer is not None:
                    stream.writer.close()
            shutil.rmtree(self.stage, ignore_errors=True)
        return False

    def add(self, row: dict) -> None:
        split = row["split"]
        self.splits[split].add(row)
        self.counts[split][row["task"]] += 1
        self.poses[split].add(row["pose_id"])

    def add_pose_only(self, pose_id: int, source_id: str, split: str, pose_aa, joints) -> None:
        if self.pose_only is None:
            self.pose_only = _Stream(self.stage / POSE_ONLY_NAME, POSE_ONLY_SCHEMA)
        self.pose_only.add(
            {
                "pose_id": int(pose_id),
                "source_id": source_id,
                "split": split,
                "target_pose": np.asarray(pose_aa, np.float32).reshape(-1),
                "target_joints": np.asarray(joints, np.float32).reshape(-1),
            }
        )
        self.pose_only_counts[split] += 1

    def commit(self, name: str, source: dict, licence: str, skips: Skips, extra: dict | None = None) -> dict:
        """Close the files, write the card and move the staging folder to `out`; returns the card."""
        files = {}
        for split, stream in self.splits.items():
            stream.close()
            files[split] = {
                "file": stream.path.name,
                "rows": stream.rows,
                "poses": len(self.poses[split]),
                "sha256": _sha256(stream.path),
            }
        card = {
            "name": name,
            "format_version": FORMAT_VERSION,
            "tasks": [t for t in TASKS if any(self.counts[s][t] for s in SPLITS)],
            "splits": files,
            "counts": {s: {t: self.counts[s][t] for t in TASKS} for s in SPLITS},
            "source": source,
            "licence": licence,
            "skipped": skips.card(),
        }
        if self.pose_only is not None:
            self.pose_only.close()
            card["pose_only"] = {
                "file": POSE_ONLY_NAME,
                "rows": self.pose_only.rows,
                "per_split": {s: self.pose_only_counts[s] for s in SPLITS},
                "sha256": _sha256(self.pose_only.path),
            }
        card.update(extra or {})
        (self.stage / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        self._swap()
        return card

    def _swap(self) -> None:
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.replaced-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.stage, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_json(path: Path, what: str):
    """A JSON file, or a one-line ImportInputError naming it."""
    if not path.is_file():
        raise ImportInputError(f"{what} {path} is missing")
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        raise ImportInputError(f"{what} {path} cannot be read ({type(err).__name__})") from None
    except json.JSONDecodeError as err:
        raise ImportInputError(
            f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
