import io

import numpy as np
import pytest
import torch
from PIL import Image

from poserft.common.body import BodyModel
from poserft.data.pose_prior import CANONICAL_POSES
from poserft.data.render import LEFT_RGB, RIGHT_RGB, render_grid, render_pil, render_skeleton

BODY = BodyModel()


def _joints(name):
    return BODY.joints_from_axis_angle(CANONICAL_POSES[name][None])[0]


def _decode(png):
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def _side_pixels(img):
    """Boolean masks of pixels that look like the left (orange) and right (blue) colours."""
    a = np.asarray(img).astype(int)
    r, b = a[..., 0], a[..., 2]
    lit = a.sum(-1) > 120
    return lit & (r > b + 60), lit & (b > r + 60)


def test_png_decodes_with_the_right_size():
    png = render_skeleton(_joints("standing"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = _decode(png)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert _decode(render_skeleton(_joints("standing"), size=100)).size == (100, 100)
    a = np.asarray(img)
    assert a[0, 0].tolist() == [0, 0, 0]  # dark background
    assert (a.sum(-1) > 100).mean() > 0.03  # something drawn


def test_bytes_are_deterministic_and_depend_on_pose_and_camera():
    j = _joints("walking")
    png = render_skeleton(j)
    assert png == render_skeleton(j.copy())
    assert png == render_skeleton(torch.from_numpy(j))
    assert png != render_skeleton(_joints("running"))
    assert png != render_skeleton(j, yaw_deg=30)
    assert png != render_skeleton(j, pitch_deg=20)
    assert len({render_skeleton(j, yaw_deg=y) for y in (0, 90, 180, 270)}) == 4


def test_left_and_right_sides_have_their_own_colours():
    assert LEFT_RGB != RIGHT_RGB
    j = _joints("t_pose")
    left, right = _side_pixels(render_pil(j, size=64))
    # Seen from the front, the body's left arm (+x) is on the image's right.
    assert left[:, 40:].sum() > 20 and right[:, :24].sum() > 20
    assert left[:, :24].sum() == 0 and right[:, 40:].sum() == 0
    left_back, right_back = _side_pixels(render_pil(j, size=64, yaw_deg=180))  # from behind
    assert left_back[:, :24].sum() > 20 and right_back[:, 40:].sum() > 20


def test_nearer_side_is_drawn_on_top():
    j = _joints("standing")
    left, right = _side_pixels(render_pil(j, size=128, yaw_deg=90))  # camera on the body's left
    assert left.sum() > 2 * right.sum()
    left, right = _side_pixels(render_pil(j, size=128, yaw_deg=-90))
    assert right.sum() > 2 * left.sum()


def _lit_box(img):
    ys, xs = np.nonzero(np.asarray(img).sum(-1) > 60)
    return xs.max() - xs.min(), ys.max() - ys.min()


def test_fixed_scale_keeps_body_size_and_fit_mode_fills_the_image():
    j = _joints("standing")
    w_full, h_full = _lit_box(render_pil(j, size=128))
    w_half, h_half = _lit_box(render_pil(j * 0.5, size=128))
    assert h_half < 0.6 * h_full  # same metres per image: a half-size body looks half as tall
    assert 0.6 * 128 < h_full < 0.95 * 128
    _, h_fit = _lit_box(render_pil(j * 0.5, size=128, metres_per_image=None))
    assert h_fit > 0.85 * 128
    _, h_big = _lit_box(render_pil(j * 3, size=128))  # too big for 2.2 m: shrunk, not cut off
    assert 0.85 * 128 < h_big < 128


def test_bad_inputs_raise_clear_errors():
    j = _joints("standing")
    with pytest.raises(ValueError, match=r"joints_m must have shape \(24, 3\), got \(23, 3\)"):
        render_skeleton(j[:23])
    with pytest.raises(ValueError, match=r"joints_m must have shape \(24, 3\), got \(1, 24, 3\)"):
        render_skeleton(j[None])
    bad = j.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"joints_m contains 1 NaN/inf"):
        render_skeleton(bad)
    with pytest.raises(ValueError, match="joints_m must be a"):
        render_skeleton("not joints")
    with pytest.raises(ValueError, match=r"overlay must have shape \(24, 3\)"):
        render_skeleton(j, overlay=np.zeros((24, 2)))
    with pytest.raises(ValueError, match="size must be an integer"):
        render_skeleton(j, size=4)
    with pytest.raises(ValueError, match="yaw_deg must be finite"):
        render_skeleton(j, yaw_deg=float("inf"))
    with pytest.raises(ValueError, match="metres_per_image must be positive"):
        render_skeleton(j, metres_per_image=0)


def test_grid_with_captions_and_overlay():
    names = ["standing", "sitting", "arms_up"]
    joints = [_joints(n) for n in names]
    caption = "a person stands upright with both arms hanging down by the sides of the body, " * 3
    grid = render_grid(joints, captions=[caption, "sitting", None], size=128, overlay=[joints[1], None, joints[0]])
    assert grid.width == 3 * 128 and grid.height > 128 + 3 * 10  # long caption wraps onto lines
    plain = render_grid(joints, size=128)
    assert plain.size == (3 * 128, 128)
    two_rows = render_grid(joints, size=64, cols=2, yaw_deg=[0, 90, 180])
    assert two_rows.size == (128, 128)
    # The overlay (arms up) adds dim grey pixels above the standing skeleton's head.
    a = np.asarray(render_grid(joints[:1], size=128, overlay=[joints[2]])).astype(int)
    b = np.asarray(render_grid(joints[:1], size=128)).astype(int)
    changed = np.abs(a - b).sum(-1) > 0
    assert changed[:20].sum() > 20
    assert (np.abs(a[..., 0] - a[..., 2])[changed[:20].nonzero()] < 80).mean() > 0.5  # greyish
    with pytest.raises(ValueError, match=r"captions must have one entry per skeleton \(3\), got 2"):
        render_grid(joints, captions=["a", "b"])
    with pytest.raises(ValueError, match=r"joints_list\[1\] must have shape \(24, 3\)"):
        render_grid([joints[0], joints[1][:20]])
    with pytest.raises(ValueError, match="at least one"):
        render_grid([])


def test_image_shows_hands_above_head_for_arms_up():
    img = np.asarray(render_pil(_joints("arms_up"), size=128)).astype(int)
    left, right = _side_pixels(img)
    green = (img[..., 1] > img[..., 0] + 60) & (img[..., 1] > img[..., 2] + 60)  # spine and head
    top_centre = np.nonzero(green.any(1))[0].min()
    assert np.nonzero(left.any(1))[0].min() < top_centre - 5
    assert np.nonzero(right.any(1))[0].min() < top_centre - 5
