"""The user's own captioned poses and images, one JSON object per line (`poserft data import jsonl`).

docs/datasets.md specifies the format. Each line is one TaskRecord row: `id`, `task`, `caption`
and/or `prompt`, `image` (image2pose), one pose (`smpl_pose`, `smplx_body_pose` with
`global_orient`, or `joints`) in poserft's frame (y up, the body facing +z at zero rotation),
and an optional `split`. Unknown fields are errors.

Joints are turned into SMPL axis-angle by `joints_to_pose`: each joint's rotation is the one
that points the skeleton's rest bones at the given joints (the smallest rotation for one child,
the best-fitting rotation for several: pelvis, spine3); twist about a bone is not observable from
positions and is left at zero. With the built-in skeleton's proportions this reproduces the
joints exactly; with other proportions every single-child bone keeps its direction and the
bones from the pelvis and spine3 get the best-fitting one. The targets' joints are then the
FK of that pose, so rewards compare like with like; the card records the fit residual.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from poserft.common.body import NUM_JOINTS, PARENTS
from poserft.common.schemas import IMAGE_TOKEN, POSE_INPUT_TOKEN, TASKS
from poserft.data.dataset import SPLITS
from poserft.data.importers.common import ImportInputError, Skeleton, Skips, StagedImport, matrix_to_aa, task_row

FIELDS = (
    "id",
    "task",
    "caption",
    "prompt",
    "image",
    "smpl_pose",
    "smplx_body_pose",
    "global_orient",
    "joints",
    "split",
)
POSE_FIELDS = ("smpl_pose", "smplx_body_pose", "joints")
MAX_LINE_BYTES = 1 << 20
BATCH_LINES = 512  # lines parsed and converted together (one FK call)
DEFAULT_LICENCE = "unspecified: the user's own data (pass --licence to record its terms)"
_CHILDREN = {j: [c for c in range(NUM_JOINTS) if PARENTS[c] == j] for j in range(NUM_JOINTS)}


def default_split(row_id: str) -> str:
    """Split of a line without `split`: 90% train, 5% val, 5% test by a hash of its id."""
    bucket = zlib.crc32(row_id.encode()) % 20
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


# ---- joints -> axis-angle ---------------------------------------------------------------------


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(N, K, 3) x2 -> (N, 3, 3) rotations R minimising sum |R src_k - dst_k|^2 (no reflection)."""
    h = np.einsum("nki,nkj->nij", src, dst)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("nji,nkj->nik", vt, u)))
    fix = np.ones((len(src), 3))
    fix[:, 2] = np.where(d == 0, 1.0, d)
    return np.einsum("nji,nj,nkj->nik", vt, fix, u)


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 3) x2 -> (N, 3, 3): the smallest rotation taking direction a to direction b."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis, axis=-1), np.einsum("ni,ni->n", a, b)
    angle = np.arctan2(s, c)
    # opposite directions: any axis perpendicular to a
    perp = np.cross(a, np.where(np.abs(a[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
    axis = np.where((s < 1e-9)[:, None] & (c < 0)[:, None], perp, axis)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True).clip(1e-12)
    k = np.zeros((len(a), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 0], k[:, 1, 2], k[:, 2, 0], k[:, 2, 1] = (
        -axis[:, 2],
        axis[:, 1],
        axis[:, 2],
        -axis[:, 0],
        -axis[:, 1],
        axis[:, 0],
    )
    sa, ca = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + sa * k + (1 - ca) * (k @ k)


def joints_to_pose(joints: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(N, 24, 3) joints (metres, y up) -> (N, 24, 3) axis-angle whose FK on `rest` points every bone the same way."""
    n = len(joints)
    offsets = rest - rest[[max(p, 0) for p in PARENTS]]
    glob = np.zeros((n, NUM_JOINTS, 3, 3))
    local = np.tile(np.eye(3), (n, NUM_JOINTS, 1, 1))
    for j in range(NUM_JOINTS):
        parent_glob = glob[:, PARENTS[j]] if j else np.tile(np.eye(3), (n, 1, 1))
        kids = _CHILDREN[j]
        if kids:
            want = np.einsum(
                "nji,nkj->nki", parent_glob, joints[:, kids] - joints[:, j : j + 1]
            )  # in the parent's frame
            if len(kids) == 1:
                local[:, j] = _align(np.repeat(offsets[kids], n, 0), want[:, 0])
            else:
                local[:, j] = _kabsch(np.repeat(offsets[kids][None], n, 0), want)
        glob[:, j] = parent_glob @ local[:, j]
    return matrix_to_aa(local)


# ---- lines ------------------------------------------------------------------------------------


def _numbers(value, count: int, where: str) -> np.ndarray:
    flat = value
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        flat = [x for v in value for x in v]
    if not isinstance(flat, list) or len(flat) != count or not all(type(x) in (int, float) for x in flat):
        got = f"{len(flat)} values" if isinstance(flat, list) else type(value).__name__
        raise ImportInputError(f"{where} must be {count} numbers, got {got}")
    arr = np.asarray(flat, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ImportInputError(f"{where} holds a NaN or infinite value")
    return arr


def _string(obj: dict, key: str, where: str, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ImportInputError(
            f"{where}: field {key!r} must be a non-empty string" + ("" if key in obj else " and is missing")
        )
    return " ".join(value.split()) if key == "caption" else value


def parse_line(obj, where: str) -> dict:
    """A decoded JSON line -> the checked fields: id, task, caption, prompt, image, split, pose kind and numbers."""
    if not isinstance(obj, dict):
        raise ImportInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        raise ImportInputError(f"{where}: unknown field {str(unknown[0])[:40]!r}; known fields: {', '.join(FIELDS)}")
    row_id = _string(obj, "id", where, True)
    where = f"{where} (id {row_id[:60]!r})"
    task = obj.get("task")
    if task not in TASKS:
        raise ImportInputError(f"{where}: field 'task' is {str(task)[:40]!r}; known tasks: {', '.join(TASKS)}")
    caption = _string(obj, "caption", where, task != "image2pose") or ""
    prompt = _string(obj, "prompt", where, False)
    token = {"image2pose": IMAGE_TOKEN, "pose2text": POSE_INPUT_TOKEN}.get(task)
    if prompt is not None and token and token not in prompt:
        raise ImportInputError(f"{where}: field 'prompt' of a {task} line must contain {token}")
    if prompt is not None and task == "text2pose" and (IMAGE_TOKEN in prompt or POSE_INPUT_TOKEN in prompt):
        raise ImportInputError(
            f"{where}: field 'prompt' of a text2pose line cannot contain {IMAGE_TOKEN} or {POSE_INPUT_TOKEN}"
        )
    image = _string(obj, "image", where, task == "image2pose")
    if image is not None and task != "image2pose":
        raise ImportInputError(f"{where}: field 'image' is only for image2pose lines")
    split = obj.get("split", default_split(row_id))
    if split not in SPLITS:
        raise ImportInputError(f"{where}: field 'split' is {str(split)[:40]!r}; known splits: {', '.join(SPLITS)}")
    given = [k for k in POSE_FIELDS if k in obj]
    if len(given) != 1:
        raise ImportInputError(f"{where}: give exactly one pose field of {', '.join(POSE_FIELDS)} (got {len(given)})")
    kind = given[0]
    if ("global_orient" in obj) != (kind == "smplx_body_pose"):
        raise ImportInputError(f"{where}: field 'global_orient' goes with 'smplx_body_pose' and only with it")
    if kind == "smpl_pose":
        pose = _numbers(obj[kind], 72, f"{where}: field 'smpl_pose'")
    elif kind == "smplx_body_pose":
        body = _numbers(obj[kind], 63, f"{where}: field 'smplx_body_pose'")
        pose = np.concatenate([_numbers(obj["global_orient"], 3, f"{where}: field 'global_orient'"), body, np.zeros(6)])
    else:
        pose = _numbers(obj[kind], 72, f"{where}: field 'joints'")
    return {
        "id": row_id,
        "task": task,
        "caption": caption,
        "prompt": prompt,
        "image": image,
        "split": split,
        "kind": kind,
        "pose": pose,
    }


def load_image_png(path: Path, image_size: int, where: str) -> bytes:
    """The image padded to a square (black) and resized to image_size, as PNG bytes."""
    if not path.is_file():
        raise ImportInputError(f"{where}: image {path} is missing")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise ImportInputError(f"{where}: image {path} cannot be read ({type(err).__name__})") from None
    side = max(img.size)
    square = Image.new("RGB", (side, side))
    square.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    buf = io.BytesIO()
    square.resize((image_size, image_size), Image.BILINEAR).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _lines(path: Path):
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise ImportInputError(f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes")
            yield number, raw


def import_jsonl(
    file: str | Path,
    out: str | Path,
    images: str | Path | None = None,
    image_size: int = 64,
    licence: str = DEFAULT_LICENCE,
    smpl_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Write the rows of a JSONL file to `out` (train/val/test.parquet, card); returns the card."""
    file = Path(file)
    if not file.is_file():
        raise ImportInputError(f"--file {file} is missing")
    image_root = Path(images) if images is not None else file.parent
    if images is not None and not image_root.is_dir():
        raise ImportInputError(f"--images {image_root} is not a folder")
    if type(image_size) is not int or not 16 <= image_size <= 1024:
        raise ImportInputError(f"--image-size must be between 16 and 1024, got {image_size!r}")
    skel, skips = Skeleton(smpl_dir), Skips()
    rest = skel.body.rest_joints.numpy()
    seen: set[str] = set()
    residuals = []
    with StagedImport(out) as staged:
        batch = []

        def flush():
            if not batch:
                return
            poses = np.stack([b["pose"] for b in batch]).reshape(-1, NUM_JOINTS, 3)
            is_joints = np.array([b["kind"] == "joints" for b in batch])
            given_joints = poses[is_joints] - poses[is_joints][:, :1]
            if is_joints.any():
                poses[is_joints] = joints_to_pose(given_joints, rest)
            joints = skel.joints(poses)
            if is_joints.any():
                residuals.extend(np.linalg.norm(joints[is_joints] - given_joints, axis=-1).mean(-1).tolist())
            for b, aa, jo in zip(batch, poses, joints):
                image = (
                    load_image_png(image_root / b["image"], image_size, b["where"])
                    if b["task"] == "image2pose"
                    else None
                )
                staged.add(
                    task_row(
                        b["id"], b["task"], b["split"], b["line"], aa, jo, b["caption"], image=image, prompt=b["prompt"]
                    )
                )
            batch.clear()

        for number, raw in tqdm(_lines(file), desc="import jsonl", unit="line", disable=not progress):
            where = f"{file}:{number}"
            if not raw.strip():
                skips.add("blank line", f"line {number}: blank")
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
                raise ImportInputError(
                    f"{where}: not a JSON object ({getattr(err, 'msg', type(err).__name__)})"
                ) from None
            row = parse_line(obj, where)
            if row["id"] in seen:
                raise ImportInputError(f"{where}: id {row['id'][:60]!r} appears on an earlier line; ids must be unique")
            seen.add(row["id"])
            if row["image"] is not None and (Path(row["image"]).is_absolute() or ".." in Path(row["image"]).parts):
                raise ImportInputError(
                    f"{where}: field 'image' must be a path inside the images folder, got {row['image'][:80]!r}"
                )
            batch.append({**row, "line": number, "where": where})
            if len(batch) >= BATCH_LINES:
                flush()
        flush()
        if not seen:
            raise ImportInputError(f"--file {file} has no rows")
        fit = {"joint_lines": len(residuals)}
        if residuals:
            fit.update(
                mean_mm=round(1000 * float(np.mean(residuals)), 3), max_mm=round(1000 * float(np.max(residuals)), 3)
            )
        source = {
            "dataset": "user JSONL",
            "file": str(file),
            "images": str(image_root),
            "image_size": image_size,
            "joints_fit": fit,
            "body": skel.body.backend,
        }
        card = staged.commit("jsonl", source, licence, skips)
    return card
