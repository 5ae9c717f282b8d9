"""3DPW sequences -> image2pose rows (`poserft data import 3dpw`).

Inputs (the user's 3DPW folder):
- `sequenceFiles/{train,validation,test}/*.pkl`: Python 2 pickles (read with encoding latin1),
  one per sequence. Per person (lists, one entry each): `poses` (frames, 72) SMPL axis-angle in
  the world frame, `betas`, `trans`, `poses2d` (frames, 3, 18) 2D keypoints (x, y, confidence),
  `campose_valid` (frames,). Per sequence: `sequence` (name), `cam_poses` (frames, 4, 4)
  world-to-camera, `cam_intrinsics` (3, 3), `img_frame_ids` (frames,).
- `imageFiles/<sequence>/image_XXXXX.jpg`: frame i of the sequence is image_{i:05d}.jpg.

Per kept (person, frame): the image is cropped to a square around the bounding box of the
person's confident 2D keypoints (side = CROP_MARGIN x the longer box side, black outside the
picture) and resized to `image_size`. The target pose is the SMPL pose with its global
orientation turned into the camera frame (cam_poses' rotation) and then into poserft's y-up
frame (180 degrees about the camera's x axis).

The pickles are read by an unpickler that only rebuilds numpy arrays, lists, dicts and strings:
a pickle naming any other class is an error, so a foreign file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from poserft.data.importers.common import (
    CAMERA_TO_Y_UP,
    ImportInputError,
    Skeleton,
    Skips,
    StagedImport,
    aa_to_matrix,
    check_finite,
    task_row,
    with_root,
)

SPLIT_FOLDERS = (("train", "train"), ("validation", "val"), ("test", "test"))
CROP_MARGIN = 1.3  # crop side / longer side of the keypoint box
MIN_KEYPOINTS = 4  # confident 2D keypoints a person needs to be cropped
PERSON_KEYS = ("poses", "betas", "trans", "poses2d", "campose_valid")
SEQUENCE_KEYS = ("sequence", "cam_poses", "cam_intrinsics", "img_frame_ids")
LICENCE = (
    "3DPW: the 3DPW licence (Max Planck Institute for Intelligent Systems), non-commercial scientific research only"
)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("_codecs", "encode"),  # how Python 3 writes bytes (array data) into a protocol-2 pickle
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refuses to load {module}.{name} (only numpy arrays, lists, dicts and strings)")


def load_sequence(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            seq = _ArrayUnpickler(fh, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
        OverflowError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
        OSError,
    ) as err:
        raise ImportInputError(
            f"3DPW file {path} is not a readable pickle ({type(err).__name__}: {str(err)[:100]})"
        ) from None
    if not isinstance(seq, dict):
        raise ImportInputError(f"3DPW file {path} must hold a dict, not {type(seq).__name__}")
    missing = [k for k in (*SEQUENCE_KEYS, *PERSON_KEYS) if k not in seq]
    if missing:
        raise ImportInputError(f"3DPW file {path} is missing key {missing[0]!r}")
    return seq


def _array(seq: dict, key: str, shape: tuple, path: Path, person: int | None = None, dtype=np.float64) -> np.ndarray:
    """seq[key] (or seq[key][person]) as an array of `shape` (None = any length), or a one-line error."""
    value = seq[key] if person is None else seq[key][person]
    where = f"3DPW file {path}: key {key!r}" + ("" if person is None else f", person {person}")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ImportInputError(f"{where} is not a numeric array") from None
    if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        want = "(" + ", ".join("frames" if w is None else str(w) for w in shape) + ")"
        raise ImportInputError(f"{where} has shape {arr.shape}, expected {want}")
    return arr


def _checked(seq: dict, path: Path):
    name = seq["sequence"]
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ImportInputError(f"3DPW file {path}: key 'sequence' must be the sequence name, got {str(name)[:60]!r}")
    cams = _array(seq, "cam_poses", (None, 4, 4), path)
    frames = len(cams)
    intr = _array(seq, "cam_intrinsics", (3, 3), path)
    _array(seq, "img_frame_ids", (frames,), path)
    for key in ("cam_poses", "cam_intrinsics"):
        check_finite(cams if key == "cam_poses" else intr, f"3DPW file {path}: key {key!r}")
    people = seq["poses"]
    if not isinstance(people, list) or not people:
        raise ImportInputError(f"3DPW file {path}: key 'poses' must be a list with one array per person")
    for key in PERSON_KEYS:
        if not isinstance(seq[key], list) or len(seq[key]) != len(people):
            raise ImportInputError(
                f"3DPW file {path}: key {key!r} must be a list with one entry per person ({len(people)})"
            )
    persons = []
    for p in range(len(people)):
        poses = _array(seq, "poses", (frames, 72), path, p)
        _array(seq, "betas", (None,), path, p)
        _array(seq, "trans", (frames, 3), path, p)
        kp = _array(seq, "poses2d", (frames, 3, 18), path, p)
        valid = _array(seq, "campose_valid", (frames,), path, p, dtype=np.float64)
        persons.append((poses, kp, valid != 0))
    return name, cams, persons


def crop_box(keypoints: np.ndarray) -> tuple[float, float, float] | None:
    """(3, 18) keypoints -> (centre x, centre y, side) of the square crop, or None if too few are confident."""
    ok = (keypoints[2] > 0) & np.isfinite(keypoints[:2]).all(0)
    if ok.sum() < MIN_KEYPOINTS:
        return None
    x, y = keypoints[0, ok], keypoints[1, ok]
    side = CROP_MARGIN * max(x.max() - x.min(), y.max() - y.min(), 1.0)
    return (x.max() + x.min()) / 2, (y.max() + y.min()) / 2, side


def _open_image(path: Path, largest_side: float, image_size: int) -> tuple[Image.Image, float]:
    """The frame, decoded at a reduced JPEG scale where the crops stay at least twice the output size."""
    try:
        img = Image.open(path)
        full_w = img.size[0]
        if img.format == "JPEG":
            scale = 1
            while scale < 8 and largest_side / (2 * scale) >= 2 * image_size:
                scale *= 2
            img.draft("RGB", (max(1, img.size[0] // scale), max(1, img.size[1] // scale)))
        img = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise ImportInputError(f"3DPW image {path} cannot be read ({type(err).__name__})") from None
    return img, img.size[0] / full_w


def crop_png(img: Image.Image, box: tuple[float, float, float], scale: float, image_size: int) -> bytes:
    cx, cy, side = (v * scale for v in box)
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = left + max(1, round(side)), top + max(1, round(side))
    crop = img.crop((left, top, right, bottom)).resize((image_size, image_size), Image.BILINEAR)
    buf = io.BytesIO()
    crop.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def camera_pose(pose_aa: np.ndarray, cam_poses: np.ndarray) -> np.ndarray:
    """(N, 24, 3) world-frame SMPL poses + (N, 4, 4) world-to-camera -> poses in poserft's y-up camera frame."""
    root = CAMERA_TO_Y_UP @ cam_poses[:, :3, :3] @ aa_to_matrix(pose_aa[:, 0])
    return with_root(pose_aa, root)


def import_3dpw(
    root: str | Path,
    out: str | Path,
    stride: int = 1,
    image_size: int = 64,
    smpl_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Write 3DPW's image2pose rows to `out` (train/val/test.parquet, card); returns the card."""
    root = Path(root)
    if type(stride) is not int or stride < 1:
        raise ImportInputError(f"--stride must be a positive integer, got {stride!r}")
    if type(image_size) is not int or not 16 <= image_size <= 1024:
        raise ImportInputError(f"--image-size must be between 16 and 1024, got {image_size!r}")
    if not root.is_dir():
        raise ImportInputError(f"--root {root} is not a folder")
    files = []
    for folder, split in SPLIT_FOLDERS:
        d = root / "sequenceFiles" / folder
        if not d.is_dir():
            raise ImportInputError(f"3DPW folder {root} has no sequenceFiles/{folder}")
        files += [(split, p) for p in sorted(d.glob("*.pkl"))]
    if not files:
        raise ImportInputError(f"3DPW folder {root} has no sequenceFiles/*/*.pkl")
    skel, skips = Skeleton(smpl_dir), Skips()
    pose_id = 0
    with StagedImport(out) as staged:
        for split, path in tqdm(files, desc="import 3dpw", unit="sequence", disable=not progress):
            seq = load_sequence(path)
            name, cams, persons = _checked(seq, path)
            for p, (poses, _, _) in enumerate(persons):
                check_finite(poses, f"3DPW file {path}: key 'poses', person {p}")
            for i in range(0, len(cams), stride):
                kept = []
                for p, (poses, kp, valid) in enumerate(persons):
                    if not valid[i]:
                        skips.add("campose_valid false", f"{name} frame {i} person {p}: campose_valid false")
                        continue
                    box = crop_box(kp[i])
                    if box is None:
                        skips.add(
                            "too few 2D keypoints",
                            f"{name} frame {i} person {p}: fewer than {MIN_KEYPOINTS} confident 2D keypoints",
                        )
                        continue
                    kept.append((p, box))
                if not kept:
                    continue
                image_path = root / "imageFiles" / name / f"image_{i:05d}.jpg"
                if not image_path.is_file():
                    raise ImportInputError(f"3DPW image {image_path} is missing (sequence {name}, frame {i})")
                img, scale = _open_image(image_path, min(b[2] for _, b in kept), image_size)
                pose_aa = camera_pose(
                    np.stack([persons[p][0][i].reshape(24, 3) for p, _ in kept]),
                    np.repeat(cams[i : i + 1], len(kept), 0),
                )
                joints = skel.joints(pose_aa)
                for (p, box), aa, jo in zip(kept, pose_aa, joints):
                    row_id = f"3dpw-{name}-p{p}-f{i:05d}-image2pose"
                    staged.add(
                        task_row(
                            row_id,
                            "image2pose",
                            split,
                            pose_id,
                            aa,
                            jo,
                            "",
                            image=crop_png(img, box, scale, image_size),
                        )
                    )
                    pose_id += 1
        source = {
            "dataset": "3DPW",
            "root": str(root),
            "stride": stride,
            "image_size": image_size,
            "crop_margin": CROP_MARGIN,
            "body": skel.body.backend,
        }
        return staged.commit("3dpw", source, LICENCE, skips)
