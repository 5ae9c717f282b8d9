"""Fast stick-figure renderer for 24-joint SMPL skeletons (the image2pose inputs and report figures).

Camera: orthographic. At yaw 0 and pitch 0 it looks at the body from the front (from +z towards
-z), so the body's left (+x) is on the image's right and +y is up. `yaw_deg` orbits the camera
about the vertical axis (positive: the camera moves towards the body's left side, +x);
`pitch_deg` then raises it (positive: looking down from above).

Framing: the image is centred on the middle of the skeleton's projected 2D bounding box, and
`metres_per_image` (default 2.2 m) is the width and height of the image in metres, so bodies have
the same size in every image. A skeleton larger than 95% of that is shrunk to fit instead of
being cut off. `metres_per_image=None` always scales the bounding box to fit.

Drawing: bones coloured by side (left orange, right blue, centre green), drawn from far to near,
nearer bones brighter and thicker; joints as small dots, the head as a larger one; black
background. The figure is drawn at `supersample` times the size and reduced with a box filter
(anti-aliasing). PNG output has no metadata, so equal inputs give equal bytes.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from poserft.common.body import JOINT_NAMES, NUM_JOINTS, PARENTS

LEFT_RGB = (255, 150, 30)
RIGHT_RGB = (40, 150, 255)
CENTRE_RGB = (60, 220, 90)
OVERLAY_RGB = (150, 150, 150)
BACKGROUND_RGB = (0, 0, 0)

_BONES = np.array([(PARENTS[c], c) for c in range(1, NUM_JOINTS)])  # (23, 2) parent, child


def _side_rgb(name: str) -> tuple[int, int, int]:
    return LEFT_RGB if name.startswith("left_") else RIGHT_RGB if name.startswith("right_") else CENTRE_RGB


_BONE_RGB = np.array([_side_rgb(JOINT_NAMES[c]) for _, c in _BONES], dtype=np.float64)
_JOINT_RGB = np.array([_side_rgb(n) for n in JOINT_NAMES], dtype=np.float64)
_HEAD = JOINT_NAMES.index("head")
_FIT_FRACTION = 0.95  # fixed-scale images shrink when the skeleton exceeds this fraction
_DEPTH_RANGE_M = 0.5  # depth offsets (from the skeleton's mean depth) mapped to the full cue range


def check_joints(name: str, joints) -> np.ndarray:
    """Return `joints` as a finite (24, 3) float64 array, or raise ValueError naming `name`."""
    try:
        arr = np.asarray(joints, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        got = type(joints).__name__
        raise ValueError(f"{name} must be a (24, 3) array of joint positions in metres, got {got}") from exc
    if arr.shape != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must have shape (24, 3), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN/inf values (shape {arr.shape})")
    return arr


def _check_number(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _camera(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """(3, 3) rows: image-right, image-up and towards-the-camera axes in body coordinates."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    right = np.array([math.cos(y), 0.0, -math.sin(y)])
    forward = np.array([math.sin(y), 0.0, math.cos(y)])  # from the body to the camera at pitch 0
    up = np.array([0.0, 1.0, 0.0])
    towards = math.cos(p) * forward + math.sin(p) * up
    up = -math.sin(p) * forward + math.cos(p) * up
    return np.stack([right, up, towards])


def _frame(views: list[np.ndarray], size_px: int, metres_per_image: float | None):
    """Centre (2,) in metres and pixels-per-metre that fit all projected skeletons."""
    pts = np.concatenate([v[:, :2] for v in views])
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    extent = max(float((hi - lo).max()), 1e-6)
    if metres_per_image is None or extent > _FIT_FRACTION * metres_per_image:
        return centre, _FIT_FRACTION * size_px / extent
    return centre, size_px / metres_per_image


def _draw_skeleton(draw, cam_pts, centre, px_per_m, size_px, overlay: bool) -> None:
    uv = np.empty((NUM_JOINTS, 2))
    uv[:, 0] = (cam_pts[:, 0] - centre[0]) * px_per_m + size_px / 2
    uv[:, 1] = size_px / 2 - (cam_pts[:, 1] - centre[1]) * px_per_m
    depth = cam_pts[:, 2] - cam_pts[:, 2].mean()
    near = np.clip(0.5 + 0.5 * depth / _DEPTH_RANGE_M, 0.0, 1.0)  # per joint: 0 far .. 1 near
    bone_near = near[_BONES].mean(1)
    if overlay:  # dim, greyish, thin, a weak depth cue
        rgb = (0.35 * _BONE_RGB + 0.65 * np.array(OVERLAY_RGB)) * (0.55 + 0.25 * bone_near)[:, None]
        width = np.full(len(_BONES), 0.016 * size_px)
    else:
        rgb = _BONE_RGB * (0.45 + 0.55 * bone_near)[:, None]
        width = (0.02 + 0.025 * bone_near) * size_px
    colours = [tuple(c) for c in np.rint(np.clip(rgb, 0, 255)).astype(int).tolist()]
    width = np.maximum(1, np.rint(width)).astype(int).tolist()
    dot_rgb = np.rint(np.clip(0.6 * _JOINT_RGB + 100 * (0.5 + near[:, None]), 0, 255)).astype(int).tolist()
    for b in np.argsort(bone_near, kind="stable"):  # far bones first, near ones drawn over them
        i, j = _BONES[b]
        draw.line([tuple(uv[i]), tuple(uv[j])], fill=colours[b], width=width[b])
        if not overlay:  # a dot at the child joint, which also rounds the line's end
            r = max(width[b] * 0.5, 0.02 * size_px)
            x, y = uv[j]
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(dot_rgb[j]))
    if not overlay:
        r = max(0.09 * px_per_m, 0.03 * size_px)  # head outline: 9 cm radius at the body's scale
        x, y = uv[_HEAD]
        draw.ellipse([x - r, y - r, x + r, y + r], outline=CENTRE_RGB, width=max(1, int(0.015 * size_px)))


def render_pil(
    joints_m,
    size: int = 64,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    metres_per_image: float | None = 2.2,
    overlay=None,
    supersample: int = 2,
) -> Image.Image:
    """Draw one (24, 3) skeleton in metres as a size x size RGB image.

    `overlay` is an optional second (24, 3) skeleton drawn behind it in dim colours, framed
    together with the first (e.g. the target under a prediction).
    """
    joints = check_joints("joints_m", joints_m)
    other = None if overlay is None else check_joints("overlay", overlay)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer number of pixels >= 8, got {size!r}")
    if isinstance(supersample, bool) or not isinstance(supersample, (int, np.integer)) or not 1 <= supersample <= 8:
        raise ValueError(f"supersample must be an integer in 1..8, got {supersample!r}")
    if metres_per_image is not None and not _check_number("metres_per_image", metres_per_image) > 0:
        raise ValueError(f"metres_per_image must be positive or None, got {metres_per_image!r}")
    cam = _camera(_check_number("yaw_deg", yaw_deg), _check_number("pitch_deg", pitch_deg))

    big = int(size) * supersample
    views = [joints @ cam.T] + ([] if other is None else [other @ cam.T])
    centre, px_per_m = _frame(views, big, metres_per_image)
    img = Image.new("RGB", (big, big), BACKGROUND_RGB)
    draw = ImageDraw.Draw(img)
    if other is not None:
        _draw_skeleton(draw, views[1], centre, px_per_m, big, overlay=True)
    _draw_skeleton(draw, views[0], centre, px_per_m, big, overlay=False)
    if supersample > 1:
        img = img.reduce(supersample)
    return img


def png_bytes(img: Image.Image) -> bytes:
    """Encode a PIL image as PNG with no metadata (identical pixels -> identical bytes)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def render_skeleton(
    joints_m,
    size: int = 64,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    metres_per_image: float | None = 2.2,
    overlay=None,
    supersample: int = 2,
) -> bytes:
    """PNG bytes of `render_pil` (same arguments)."""
    return png_bytes(render_pil(joints_m, size, yaw_deg, pitch_deg, metres_per_image, overlay, supersample))


def render_grid(
    joints_list: Sequence,
    captions: Sequence[str] | None = None,
    size: int = 256,
    overlay: Sequence | None = None,
    cols: int | None = None,
    yaw_deg: float | Sequence[float] = 0.0,
    pitch_deg: float | Sequence[float] = 0.0,
    metres_per_image: float | None = 2.2,
) -> Image.Image:
    """A grid of skeleton panels, each `size` pixels square, with wrapped captions underneath.

    `overlay`, if given, has one (24, 3) skeleton (or None) per panel, drawn dim behind the main
    one. `yaw_deg` / `pitch_deg` may be one value or one per panel. `cols` defaults to all panels
    in one row, up to 8.
    """
    if isinstance(joints_list, np.ndarray) and joints_list.ndim == 3:
        joints_list = list(joints_list)
    n = len(joints_list)
    if n == 0:
        raise ValueError("joints_list must hold at least one (24, 3) skeleton, got 0")

    def per_panel(name, value):
        if value is None or isinstance(value, (int, float, np.number)):
            return [value] * n
        if len(value) != n:
            raise ValueError(f"{name} must have one entry per skeleton ({n}), got {len(value)}")
        return list(value)

    captions = per_panel("captions", captions)
    overlays = per_panel("overlay", overlay)
    yaws, pitches = per_panel("yaw_deg", yaw_deg), per_panel("pitch_deg", pitch_deg)
    cols = min(n, 8) if cols is None else int(cols)
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    rows = math.ceil(n / cols)

    font_px = max(10, size // 18)
    font = ImageFont.load_default(size=font_px)
    line_h = font_px + 3
    chars = max(8, int(size / (0.55 * font_px)))
    wrapped = [textwrap.wrap(str(c), chars) if c else [] for c in captions]
    text_h = max((len(w) for w in wrapped), default=0) * line_h + (6 if any(wrapped) else 0)

    sheet = Image.new("RGB", (cols * size, rows * (size + text_h)), BACKGROUND_RGB)
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        r, c = divmod(k, cols)
        x0, y0 = c * size, r * (size + text_h)
        panel = render_pil(
            check_joints(f"joints_list[{k}]", joints_list[k]),
            size,
            yaws[k],
            pitches[k],
            metres_per_image,
            None if overlays[k] is None else check_joints(f"overlay[{k}]", overlays[k]),
        )
        sheet.paste(panel, (x0, y0))
        draw.rectangle([x0, y0, x0 + size - 1, y0 + size - 1], outline=(60, 60, 60))
        for li, line in enumerate(wrapped[k]):
            draw.text((x0 + 4, y0 + size + 3 + li * line_h), line, fill=(230, 230, 230), font=font)
    return sheet
