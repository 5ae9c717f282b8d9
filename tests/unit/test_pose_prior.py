import numpy as np
import pytest
import torch

from poserft.common.body import JOINT, BodyModel
from poserft.common.rotations import axis_angle_to_matrix
from poserft.data.pose_prior import CANONICAL_POSES, JOINT_LIMITS, PosePrior, clip_to_limits

BODY = BodyModel()
REQUIRED = (
    "t_pose",
    "a_pose",
    "standing",
    "sitting",
    "kneeling",
    "squatting",
    "arms_up",
    "lunge",
    "bending_forward",
    "lying_on_back",
    "lying_on_side",
)


def _joints(pose):
    return BODY.joints_from_axis_angle(np.asarray(pose)[None])[0]


def _canon(name):
    j = _joints(CANONICAL_POSES[name])
    return j - np.array([0.0, j[:, 1].min(), 0.0])  # lowest joint at height 0


def _within_limits(pose, tol=1e-9):
    body = np.asarray(pose)[..., 1:, :]
    return (body >= JOINT_LIMITS[1:, :, 0] - tol).all() and (body <= JOINT_LIMITS[1:, :, 1] + tol).all()


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --- limits -------------------------------------------------------------------------------------


def test_limits_are_ordered_contain_rest_and_mirror():
    assert JOINT_LIMITS.shape == (24, 3, 2)
    assert (JOINT_LIMITS[..., 0] <= 0).all() and (JOINT_LIMITS[..., 1] >= 0).all()  # T-pose allowed
    assert (JOINT_LIMITS[..., 1] > JOINT_LIMITS[..., 0]).all()
    for name in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist", "hand"):
        left, right = JOINT_LIMITS[JOINT["left_" + name]], JOINT_LIMITS[JOINT["right_" + name]]
        assert np.allclose(right[0], left[0])  # x kept
        assert np.allclose(right[1:], -left[1:, ::-1])  # y, z negated
    deg = np.degrees
    assert deg(JOINT_LIMITS[JOINT["left_knee"], 0]).tolist() == pytest.approx([0, 150])
    assert deg(JOINT_LIMITS[JOINT["left_elbow"], 1]).tolist() == pytest.approx([-150, 0])
    assert deg(JOINT_LIMITS[JOINT["left_hip"], 0]).tolist() == pytest.approx([-120, 30])


def test_clip_to_limits_numpy_and_torch():
    rng = np.random.default_rng(0)
    pose = rng.normal(scale=2.0, size=(50, 24, 3))
    clipped = clip_to_limits(pose)
    assert _within_limits(clipped) and not _within_limits(pose)
    assert np.array_equal(clipped[:, 0], pose[:, 0])  # global orientation untouched
    assert np.array_equal(clip_to_limits(clipped), clipped)
    inside = np.abs(clipped - pose) == 0
    assert inside.any()
    t = clip_to_limits(torch.from_numpy(pose))
    assert isinstance(t, torch.Tensor) and np.allclose(t.numpy(), clipped)
    with pytest.raises(ValueError, match=r"pose must have shape \(\.\.\., 24, 3\), got \(5, 23, 3\)"):
        clip_to_limits(np.zeros((5, 23, 3)))


# --- canonical poses ----------------------------------------------------------------------------


def test_canonical_poses_are_named_shaped_and_within_limits():
    assert len(CANONICAL_POSES) >= 20
    assert set(REQUIRED) <= set(CANONICAL_POSES)
    for name, pose in CANONICAL_POSES.items():
        assert pose.shape == (24, 3) and pose.dtype == np.float64, name
        assert np.isfinite(pose).all(), name
        assert _within_limits(pose), name
    assert not CANONICAL_POSES["t_pose"].any()
    assert np.abs(CANONICAL_POSES["lying_on_back"][0]).max() > 1.0  # lying poses carry their tilt


def test_standing_feet_lowest_hands_at_sides():
    j = _canon("standing")
    lowest = set(np.argsort(j[:, 1])[:2])
    assert lowest == {JOINT["left_foot"], JOINT["right_foot"]}
    assert j[JOINT["head"], 1] == j[:, 1].max()
    for side in ("left", "right"):
        hand, shoulder, hip = (j[JOINT[f"{side}_{k}"]] for k in ("hand", "shoulder", "hip"))
        assert hand[1] < hip[1] + 0.25 and hand[1] < shoulder[1] - 0.4  # arms hang down


def test_arms_up_hands_above_head():
    j = _canon("arms_up")
    head = j[JOINT["head"], 1]
    assert j[JOINT["left_hand"], 1] > head + 0.3 and j[JOINT["right_hand"], 1] > head + 0.3
    assert j[JOINT["left_hand"], 0] > 0 > j[JOINT["right_hand"], 0]  # still on their own sides


def test_sitting_thighs_horizontal_shanks_vertical():
    j = _canon("sitting")
    for side in ("left", "right"):
        thigh = _unit(j[JOINT[f"{side}_knee"]] - j[JOINT[f"{side}_hip"]])
        shank = _unit(j[JOINT[f"{side}_ankle"]] - j[JOINT[f"{side}_knee"]])
        assert abs(thigh[1]) < np.sin(np.radians(15)) and thigh[2] > 0.9  # forward, level
        assert shank[1] < -0.95
    assert j[JOINT["head"], 1] - j[0, 1] > 0.55  # trunk upright


def test_kneeling_knees_on_the_ground():
    for name in ("kneeling", "kneeling_on_heels"):
        j = _canon(name)
        for side in ("left", "right"):
            assert j[JOINT[f"{side}_knee"], 1] < 0.08, name
            assert j[JOINT[f"{side}_ankle"], 2] < j[JOINT[f"{side}_knee"], 2] - 0.2, name  # feet behind
    assert _canon("kneeling")[0, 1] > _canon("kneeling_on_heels")[0, 1] + 0.15


def test_squat_lunge_and_bends():
    squat = _canon("squatting")
    assert squat[0, 1] < 0.6 and squat[JOINT["left_foot"], 1] < 0.03
    for side in ("left", "right"):
        thigh = _unit(squat[JOINT[f"{side}_knee"]] - squat[JOINT[f"{side}_hip"]])
        assert abs(thigh[1]) < 0.3
    lunge = _canon("lunge")
    front = _unit(lunge[JOINT["left_knee"]] - lunge[JOINT["left_hip"]])
    assert abs(front[1]) < 0.2 and front[2] > 0.9  # front thigh level
    assert lunge[JOINT["right_knee"], 1] < 0.15  # back knee near the floor
    bend = _canon("bending_forward")
    assert bend[JOINT["head"], 1] < bend[0, 1]  # head below the pelvis
    assert bend[JOINT["left_foot"], 1] < 0.03 and bend[JOINT["left_hand"], 1] < 0.5


def test_lying_and_plank_are_horizontal():
    back = _canon("lying_on_back")
    assert np.ptp(back[:, 1]) < 0.3
    chest_normal = back[JOINT["left_shoulder"]] - back[JOINT["right_shoulder"]]
    up = np.cross(back[JOINT["neck"]] - back[0], chest_normal)  # body up x body left -> forward
    assert _unit(-up)[1] > 0.9 or _unit(up)[1] > 0.9
    side = _canon("lying_on_side")
    assert abs(_unit(side[JOINT["neck"]] - side[0])[1]) < 0.2
    assert side[JOINT["left_hip"], 1] > side[JOINT["right_hip"], 1] + 0.1  # on the right side
    plank = _canon("plank")
    for k in ("left_hand", "right_hand", "left_foot", "right_foot"):
        assert plank[JOINT[k], 1] < 0.06, k
    assert plank[JOINT["neck"], 1] > 0.4


def test_asymmetric_gestures_use_the_right_side():
    wave = _canon("waving")
    assert wave[JOINT["right_hand"], 1] > wave[JOINT["head"], 1] > wave[JOINT["left_hand"], 1]
    floor = _canon("sitting_on_floor")
    assert floor[JOINT["left_ankle"], 0] < 0 < floor[JOINT["right_ankle"], 0]  # legs crossed
    assert floor[JOINT["left_knee"], 0] > 0.25


def test_yoga_floor_and_upside_down_poses():
    stand = _canon("handstand")
    assert stand[JOINT["left_hand"], 1] < 0.03 and stand[JOINT["right_hand"], 1] < 0.03
    assert stand[JOINT["left_foot"], 1] > stand[0, 1] + 0.8 > stand[JOINT["head"], 1] + 0.8  # feet up, head down
    dog = _canon("downward_dog")
    for k in ("left_hand", "right_hand", "left_foot", "right_foot"):
        assert dog[JOINT[k], 1] < 0.05, k
    assert dog[0, 1] == dog[:, 1].max() or dog[0, 1] > dog[JOINT["head"], 1] + 0.3  # hips high
    tree = _canon("tree_pose")
    assert tree[JOINT["left_ankle"], 1] > 0.25 and tree[JOINT["left_knee"], 0] > tree[JOINT["left_hip"], 0] + 0.15
    assert tree[JOINT["left_hand"], 1] > tree[JOINT["head"], 1] + 0.2 < tree[JOINT["right_hand"], 1]
    warrior = _canon("warrior_two")
    assert warrior[JOINT["left_ankle"], 0] > 0.3 > -0.3 > warrior[JOINT["right_ankle"], 0]  # feet wide
    bridge = _canon("bridge")
    assert bridge[0, 1] > bridge[JOINT["neck"], 1] + 0.15 and bridge[JOINT["left_foot"], 1] < 0.06
    throw = _canon("throwing")
    # the right arm throws, the left one aims ahead
    assert throw[JOINT["right_hand"], 1] > throw[JOINT["head"], 1] > throw[JOINT["left_hand"], 1]
    assert throw[JOINT["left_hand"], 2] > throw[JOINT["left_shoulder"], 2] + 0.4


# --- sampler ------------------------------------------------------------------------------------


def test_sample_shape_dtype_and_determinism():
    a = PosePrior(7).sample(300)
    b = PosePrior(7).sample(300)
    c = PosePrior(8).sample(300)
    assert a.shape == (300, 24, 3) and a.dtype == np.float64
    assert np.array_equal(a, b) and not np.allclose(a, c)
    prior = PosePrior(7)
    first, second = prior.sample(10), prior.sample(10)
    assert not np.allclose(first, second)  # the generator advances
    assert PosePrior(0).sample(0).shape == (0, 24, 3)
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        PosePrior(0).sample(-1)


def test_samples_within_limits():
    prior = PosePrior(1)
    poses = prior.sample(20000)
    assert np.isfinite(poses).all() and _within_limits(poses)
    assert np.linalg.norm(poses[:, 0], axis=-1).max() <= np.pi + 1e-9


@pytest.fixture(scope="module")
def sampled():
    poses = PosePrior(3).sample(2500)
    return poses, BODY.joints_from_axis_angle(poses)


def test_samples_are_diverse(sampled):
    poses, joints = sampled
    local = poses.copy()
    local[:, 0] = 0.0
    lj = BODY.joints_from_axis_angle(local[:400])  # orientation removed
    pair = np.linalg.norm(lj[:, None] - lj[None], axis=-1).mean(-1)
    assert pair[np.triu_indices(400, 1)].mean() > 0.15  # metres, mean per-joint distance
    assert len(np.unique(np.round(poses, 6), axis=0)) == len(poses)

    head_y = joints[:, JOINT["head"], 1]
    hands_up = (joints[:, JOINT["left_hand"], 1] > head_y) & (joints[:, JOINT["right_hand"], 1] > head_y)
    knee_bent = np.maximum(poses[:, JOINT["left_knee"], 0], poses[:, JOINT["right_knee"], 0]) > np.radians(60)
    trunk_up = _unit(joints[:, JOINT["neck"]] - joints[:, 0])[:, 1]
    fractions = {"hands_up": hands_up.mean(), "knee_bent": knee_bent.mean(), "lying": (trunk_up < 0.3).mean()}
    assert 0.02 < fractions["hands_up"] < 0.5, fractions
    assert 0.1 < fractions["knee_bent"] < 0.7, fractions
    assert 0.02 < fractions["lying"] < 0.3, fractions
    assert (trunk_up > 0.9).mean() > 0.5  # most people are upright


def test_global_orientation_yaw_uniform_tilt_small(sampled):
    poses, joints = sampled
    left = joints[:, JOINT["left_hip"]] - joints[:, JOINT["right_hip"]]
    yaw = np.arctan2(-left[:, 2], left[:, 0])  # heading of the body's left-right axis
    counts, _ = np.histogram(yaw, bins=8, range=(-np.pi, np.pi))
    assert counts.min() > 0.6 * counts.mean()
    rot = axis_angle_to_matrix(torch.from_numpy(poses[:, 0])).numpy()
    pelvis_up = rot[:, :, 1]  # the body's up axis in the world
    assert np.median(pelvis_up[:, 1]) > 0.98  # little pitch / roll for most poses
    # 0.7 with the first 33 canonical poses; the floor, yoga and upside-down poses added later
    # carry their own tilt (20 of the 48 canonical poses now, 8 of 33 before), hence 0.6.
    assert (pelvis_up[:, 1] > np.cos(np.radians(20))).mean() > 0.6
    assert (np.abs(pelvis_up[:, 1]) < 0.3).mean() > 0.02  # lying / plank bases keep their tilt


def test_mixed_poses_combine_groups(sampled):
    # Some samples take arms and legs from different canonical poses, e.g. both hands above the
    # head with a knee bent more than 60 deg (sitting, kneeling, lunging with arms up).
    poses, j = sampled
    head = j[:, JOINT["head"], 1]
    up = (j[:, JOINT["left_hand"], 1] > head) & (j[:, JOINT["right_hand"], 1] > head)
    knees = np.maximum(poses[:, JOINT["left_knee"], 0], poses[:, JOINT["right_knee"], 0]) > np.radians(60)
    assert (up & knees).sum() >= 4
