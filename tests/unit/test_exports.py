"""The pose exports read back: BVH by an independent parser (`bvh` from PyPI) with FK written here,
npz with numpy, JSON with json, PNG with PIL."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from bvh import Bvh
from PIL import Image
from scipy.spatial.transform import Rotation

from poserft.common.body import JOINT_NAMES, PARENTS, BodyModel
from poserft.inference.exports import FORMATS, PoseRecord, bvh_text, check_axis_angle, export_bytes, write_exports


def _random_pose(seed: int, scale: float = 0.6) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, (24, 3))


def bvh_world_positions(text: str) -> dict[str, np.ndarray]:
    """FK of frame 0 of a BVH file from the parsed hierarchy alone: p_child = p_parent + R_parent @ offset,
    R_joint = R_parent @ (the joint's rotation channels applied in their listed order)."""
    mocap = Bvh(text)
    axes = {"Xrotation": "X", "Yrotation": "Y", "Zrotation": "Z"}
    pos, rot = {}, {}
    for name in mocap.get_joints_names():  # parents come before their children
        offset = np.array(mocap.joint_offset(name), dtype=np.float64)
        channels = mocap.joint_channels(name)
        values = mocap.frame_joint_channels(0, name, channels)
        rots = [(axes[c], v) for c, v in zip(channels, values) if c in axes]
        local = Rotation.from_euler("".join(a for a, _ in rots), [v for _, v in rots], degrees=True).as_matrix()
        parent = mocap.joint_parent(name)
        if parent is None:
            shift = np.array([v for c, v in zip(channels, values) if c.endswith("position")], dtype=np.float64)
            pos[name], rot[name] = offset + shift, local
        else:
            pos[name] = pos[parent.name] + rot[parent.name] @ offset
            rot[name] = rot[parent.name] @ local
    return pos


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bvh_joints_match_fk_within_1mm(seed):
    body = BodyModel()
    rec = PoseRecord.from_axis_angle(_random_pose(seed), body)
    text = bvh_text(rec, body)
    mocap = Bvh(text)
    assert mocap.nframes == 1
    assert mocap.get_joints_names() == [JOINT_NAMES[j] for j in _preorder()]
    for j, name in enumerate(JOINT_NAMES):
        parent = mocap.joint_parent(name)
        assert (parent.name if parent else None) == (JOINT_NAMES[PARENTS[j]] if j else None)
    pos = bvh_world_positions(text)
    err = max(np.linalg.norm(pos[n] - rec.joints_m[j]) for j, n in enumerate(JOINT_NAMES))
    assert err < 1e-3, f"BVH joints differ from FK by {err * 1000:.3f} mm"


def test_bvh_rest_pose_is_the_rest_skeleton():
    body = BodyModel()
    rec = PoseRecord.from_axis_angle(np.zeros(72), body)
    pos = bvh_world_positions(bvh_text(rec, body))
    got = np.stack([pos[n] for n in JOINT_NAMES])
    assert np.abs(got - body.rest_joints.numpy()).max() < 1e-6


def test_bvh_gimbal_lock_pose():
    """X at +-90 degrees is the ZXY decomposition's singular case: positions must still match."""
    aa = np.zeros((24, 3))
    aa[16] = [np.pi / 2, 0, 0]
    aa[18] = [0, 0.3, 0]
    aa[0] = [-np.pi / 2, 0.0, 0.0]
    rec = PoseRecord.from_axis_angle(aa)
    pos = bvh_world_positions(bvh_text(rec))
    assert max(np.linalg.norm(pos[n] - rec.joints_m[j]) for j, n in enumerate(JOINT_NAMES)) < 1e-3


def _preorder() -> list[int]:
    out = []

    def visit(j):
        out.append(j)
        for c in range(24):
            if PARENTS[c] == j:
                visit(c)

    visit(0)
    return out


def test_npz_json_png_read_back(tmp_path):
    rng = np.random.default_rng(3)
    rec = PoseRecord.from_axis_angle(
        _random_pose(3), mu=rng.normal(size=144), std=rng.uniform(0.1, 1, 144), text="a pose"
    )
    paths = write_exports(rec, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"pose.{f}" for f in FORMATS)

    with np.load(tmp_path / "pose.npz") as z:
        assert z["axis_angle"].shape == (72,) and np.allclose(z["axis_angle"], rec.axis_angle.reshape(-1))
        assert z["joints_m"].shape == (24, 3) and np.allclose(
            z["joints_m"], BodyModel().joints_from_axis_angle(rec.axis_angle[None])[0]
        )
        assert np.allclose(z["mu"], rec.mu) and np.allclose(z["std"], rec.std)
        assert list(z["joint_names"]) == list(JOINT_NAMES) and str(z["text"]) == "a pose"

    doc = json.loads((tmp_path / "pose.json").read_text())
    assert np.allclose(doc["axis_angle"], rec.axis_angle.reshape(-1)) and np.allclose(doc["joints_m"], rec.joints_m)
    assert len(doc["mu"]) == 144 and len(doc["std"]) == 144 and doc["parents"] == list(PARENTS)

    img = Image.open(tmp_path / "pose.png")
    assert img.format == "PNG" and img.width == 512 and img.height >= 256
    pixels = np.asarray(img.convert("RGB"))
    front, side = pixels[:256, :256], pixels[:256, 256:]
    assert (front.max(-1) > 100).sum() > 100 and (side.max(-1) > 100).sum() > 100
    assert not np.array_equal(front, side)  # two different views


def test_npz_without_head_has_nan_mu():
    with np.load(io.BytesIO(export_bytes(PoseRecord.from_axis_angle(np.zeros(72)), ["npz"])["pose.npz"])) as z:
        assert np.isnan(z["mu"]).all() and z["mu"].shape == (144,)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros(71), "72 numbers"),
        (np.zeros((3, 24)), "24 x 3"),
        ([float("nan")] * 72, "NaN"),
        ("abc", "72 numbers"),
        ({"a": 1}, "72 numbers"),
    ],
)
def test_bad_pose_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_axis_angle(bad)


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown export format.*fbx"):
        export_bytes(PoseRecord.from_axis_angle(np.zeros(72)), ["bvh", "fbx"])
