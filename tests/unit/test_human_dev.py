"""The human-language dev sets (benchmarks/data/human_dev, and human_blind written blind to the
training captions) and the metrics of poserft.describe_eval."""

import importlib.util
import json
import math
import re

import numpy as np
import pytest
import torch

from poserft.common.body import BodyModel
from poserft.data.pose_prior import JOINT_LIMITS
from poserft.describe_eval import BLIND_SET, DEV_SET, describe_metrics, load_descriptions, target_ranks, yaw_mpjpe

HUMAN_DEV = DEV_SET.parent
MIN_SIZE = {DEV_SET: (40, 120), BLIND_SET: (30, 100)}  # poses, descriptions
# Hand-built poses may pass the prior's sampling ranges (per axis-angle component, not anatomical
# limits): child's pose and cross-legged hips, an arm raised overhead. The blind set was written
# without knowing those ranges (its deepest: child's pose hips flexed 160, an arm overhead 140).
LIMIT_MARGIN_DEG = {DEV_SET: 40, BLIND_SET: 55}


def _build_module():
    spec = importlib.util.spec_from_file_location("human_dev_build", HUMAN_DEV / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=[DEV_SET, BLIND_SET], ids=["human_dev", "human_blind"])
def dev(request):
    return load_descriptions(request.param)


def test_dev_set_size(dev):
    poses, descriptions = MIN_SIZE[dev.path]
    assert len(dev.pose_ids) >= poses
    assert len(dev.descriptions) >= descriptions
    per_pose = np.bincount(dev.target_index, minlength=len(dev.pose_ids))
    assert per_pose.min() >= 3, [dev.pose_ids[i] for i in np.flatnonzero(per_pose < 3)]


def test_descriptions_unique(dev):
    norm = [re.sub(r"[^a-z0-9 ]", "", d.lower()).strip() for d in dev.descriptions]
    dupes = sorted({d for d in norm if norm.count(d) > 1})
    assert not dupes


def test_poses_finite_and_within_limits(dev):
    poses = dev.poses_aa
    assert poses.shape == (len(dev.pose_ids), 24, 3)
    assert np.isfinite(poses).all()
    assert np.linalg.norm(poses, axis=-1).max() <= math.pi + 1e-6
    margin = math.radians(LIMIT_MARGIN_DEG[dev.path])
    over = np.maximum(poses[:, 1:] - JOINT_LIMITS[1:, :, 1], JOINT_LIMITS[1:, :, 0] - poses[:, 1:])
    bad = [dev.pose_ids[i] for i in np.flatnonzero(over.reshape(len(poses), -1).max(1) > margin)]
    assert not bad
    joints = BodyModel().joints_from_axis_angle(poses)
    assert np.isfinite(joints).all()
    # distinct poses: no two closer than 35 mm after yaw alignment (arm-only differences are small on 24 joints)
    d = yaw_mpjpe(torch.from_numpy(joints)[:, None], torch.from_numpy(joints)[None])
    d.fill_diagonal_(float("inf"))
    assert float(d.min()) > 35.0


def test_jsonl_matches_poses_json(tmp_path):
    build = _build_module()
    poses = build.load_poses()
    desc_path, _ = build.write_jsonl(poses, tmp_path)
    assert desc_path.read_text() == DEV_SET.read_text(), (
        "descriptions.jsonl is stale: run benchmarks/data/human_dev/build.py"
    )


def test_a_squat_is_a_squat():
    """The readable form means what it says: the squat's knees are forward, and above the hips' height minus a thigh."""
    build = _build_module()
    poses = {p["id"]: p["pose_aa"] for p in build.load_poses()}
    j = BodyModel().joints_from_axis_angle(np.stack([poses["squat"], poses["standing"], poses["lying_on_back"]]))
    squat, standing, lying = j
    knee, hip, ankle = 4, 1, 7  # left
    assert squat[knee, 2] - squat[hip, 2] > 0.3  # thigh forward
    assert abs(squat[knee, 1] - squat[hip, 1]) < 0.15  # thigh about level
    assert standing[ankle, 1] - standing[0, 1] < -0.8  # standing: feet far below the pelvis
    assert abs(lying[15, 1] - lying[ankle, 1]) < 0.1  # lying: head and feet at one height


def test_descriptions_not_in_captioner_output(dev):
    """The synthetic captioner never writes a dev-set description (on the dev poses and on prior samples)."""
    from poserft.data.captioner import Captioner
    from poserft.data.pose_prior import PosePrior

    body = BodyModel()
    joints = np.concatenate(
        [body.joints_from_axis_angle(dev.poses_aa), body.joints_from_axis_angle(PosePrior(0).sample(600))]
    )
    captions = Captioner(0).caption(joints, ids=list(range(len(joints))))

    def norm(text):
        return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()

    sentences = {norm(s) for c in captions for s in re.split(r"[.;!?]", c) if norm(s)}
    whole = {norm(c) for c in captions}
    hits = [d for d in dev.descriptions if norm(d) in sentences or norm(d) in whole]
    assert not hits


def test_dev_set_not_read_by_the_data_builder():
    import poserft.data.captioner
    import poserft.data.dataset
    import poserft.data.registers
    import poserft.data.registers_rich
    import poserft.model.checkpoint

    for module in (poserft.data.dataset, poserft.data.captioner, poserft.model.checkpoint):
        text = open(module.__file__).read()
        assert "human_dev" not in text and "human_blind" not in text
    for module in (poserft.data.registers, poserft.data.registers_rich):  # their docstrings name the dev set
        text = open(module.__file__).read()
        assert "descriptions.jsonl" not in text and "describe_eval" not in text


def test_blind_jsonl_matches_poses_json(tmp_path):
    spec = importlib.util.spec_from_file_location("human_blind_build", BLIND_SET.parent / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.write_descriptions(build.read_poses(BLIND_SET.parent / "poses.json"), tmp_path / "d.jsonl")
    assert (tmp_path / "d.jsonl").read_text() == BLIND_SET.read_text(), (
        "descriptions.jsonl is stale: run benchmarks/data/human_blind/build.py"
    )


# ---- metrics against hand-computed references ----------------------------------------------


def test_yaw_mpjpe_hand_computed():
    target = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    # the prediction faces 90 degrees away, is 5 m off, and its third joint is 0.2 m higher
    pred = torch.tensor([[[5.0, 5, 5], [5, 5, 6], [5, 6.2, 5]]], dtype=torch.float64)
    assert yaw_mpjpe(pred, target).item() == pytest.approx(200.0 / 3, abs=1e-6)
    # a tilt is not forgiven: (0, 0, 1) vs (0, 1, 0) stays sqrt(2) apart for every yaw
    tilted = torch.tensor([[[0.0, 0, 0], [0, 0, 1]]], dtype=torch.float64)
    upright = torch.tensor([[[0.0, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    assert yaw_mpjpe(tilted, upright).item() == pytest.approx(1000 * math.sqrt(2) / 2, abs=1e-6)


def test_yaw_mpjpe_is_zero_for_any_turn_and_matches_brute_force():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(24, 3)))
    b = torch.from_numpy(rng.normal(size=(24, 3)))
    for deg in (0, 37, 180, -120):
        t = math.radians(deg)
        r = torch.tensor(
            [[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]], dtype=torch.float64
        )
        assert yaw_mpjpe((a @ r.T)[None], a[None]).item() == pytest.approx(0.0, abs=1e-9)
    # least squares over the angle: no angle on a fine grid gives a smaller summed squared error
    a0, b0 = a - a[:1], b - b[:1]
    best = min(
        float(
            (
                (
                    a0
                    @ torch.tensor(
                        [[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]], dtype=torch.float64
                    ).T
                    - b0
                )
                ** 2
            ).sum()
        )
        for t in np.linspace(-math.pi, math.pi, 3601)
    )
    c = yaw_mpjpe(a[None], b[None])  # mean distance at the least-squares angle
    t = math.atan2(
        float((a0[:, 2] * b0[:, 0] - a0[:, 0] * b0[:, 2]).sum()),
        float((a0[:, 0] * b0[:, 0] + a0[:, 2] * b0[:, 2]).sum()),
    )
    r = torch.tensor([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]], dtype=torch.float64)
    assert float(((a0 @ r.T - b0) ** 2).sum()) <= best + 1e-9
    assert c.item() == pytest.approx(float((a0 @ r.T - b0).norm(dim=-1).mean()) * 1000, rel=1e-9)


def test_target_ranks_ties_count_against():
    dist = torch.tensor([[1.0, 2, 3], [2, 2, 1], [5, 4, 3]])
    assert target_ranks(dist, [0, 1, 2]).tolist() == [0, 2, 0]


def test_describe_metrics_small_reference():
    poses = torch.tensor(
        [[[0.0, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 1, 0]], [[0, 0, 0], [0, -1, 0]]], dtype=torch.float64
    )  # (P=3, J=2, 3)
    pred = torch.tensor(
        [[[0.0, 0, 0], [0, 0, 1]], [[0, 0, 0], [0, 0.9, 0]], [[0, 0, 0], [0, 0.8, 0]]], dtype=torch.float64
    )
    mean = torch.tensor([[0.0, 0, 0], [0, 0, 0]], dtype=torch.float64)
    m = describe_metrics(pred, poses, [0, 1, 2], mean)
    # pred 0: pose 0 turned 90 degrees (distance 0); pred 1: 50 mm from pose 1; pred 2 points up, described as pose 2
    assert m["top1"] == pytest.approx(200 / 3)
    assert m["top3"] == pytest.approx(100.0)
    assert m["chance_top1"] == pytest.approx(100 / 3) and m["chance_top3"] == pytest.approx(100.0)
    assert m["yaw_mpjpe_mm"] == pytest.approx((0 + 50 + 900) / 3)
    assert m["baseline_mean_pose_yaw_mpjpe_mm"] == pytest.approx(500.0)  # every target bone is 1 m long
    assert m["n"] == 3 and m["poses"] == 3


# ---- the file format -------------------------------------------------------------------------


def _write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_load_descriptions_errors_name_file_line_key(tmp_path):
    good = {"description": "a squat", "pose_id": "squat", "target_pose": [0.0] * 72}
    with pytest.raises(ValueError, match=r"line 2: missing key 'target_pose'"):
        load_descriptions(_write(tmp_path, [good, {"description": "x", "pose_id": "y"}]))
    with pytest.raises(ValueError, match=r"d.jsonl, line 1: 'target_pose' must be a list of 72 numbers"):
        load_descriptions(_write(tmp_path, [{**good, "target_pose": [0.0] * 71}]))
    with pytest.raises(ValueError, match=r"line 2: 'target_pose' differs .* 'squat'"):
        load_descriptions(_write(tmp_path, [good, {**good, "description": "b", "target_pose": [0.1] * 72}]))
    with pytest.raises(ValueError, match=r"line 1: not valid JSON"):
        load_descriptions(_write(tmp_path, ["{nope"]))
    with pytest.raises(FileNotFoundError, match="descriptions file not found"):
        load_descriptions(tmp_path / "missing.jsonl")
    ds = load_descriptions(
        _write(tmp_path, [good, {**good, "description": "low"}, {**good, "pose_id": "t", "target_pose": [0.2] * 72}])
    )
    assert ds.pose_ids == ["squat", "t"] and ds.target_index.tolist() == [0, 0, 1]
