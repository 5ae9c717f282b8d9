import numpy as np
import pytest
import torch

from poserft.common.body import JOINT, JOINT_NAMES, PARENTS, BodyModel, neutral_rest_joints
from poserft.common.rotations import axis_angle_to_rot6d
from tests.synthetic_smpl import write_synthetic_smpl


def _random_pose(n, seed=0, scale=0.6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 24, 3, generator=g, dtype=torch.float64) * scale).to(dtype)


def test_tree_is_smpl():
    assert len(JOINT_NAMES) == 24 and len(PARENTS) == 24
    assert PARENTS == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
    assert JOINT_NAMES[20] == "left_wrist" and JOINT_NAMES[15] == "head"


def test_rest_skeleton_is_plausible():
    j = neutral_rest_joints()
    assert j.shape == (24, 3) and np.allclose(j[0], 0)
    assert j[JOINT["left_hip"], 0] > 0 > j[JOINT["right_hip"], 0]  # x points to the body's left
    assert j[JOINT["head"], 1] > j[JOINT["neck"], 1] > j[JOINT["spine3"], 1] > 0 > j[JOINT["left_knee"], 1]
    height = j[JOINT["head"], 1] - j[JOINT["left_foot"], 1]
    assert 1.4 < height < 1.7
    arm_span = j[JOINT["left_hand"], 0] - j[JOINT["right_hand"], 0]
    assert 1.4 < arm_span < 1.9


def test_zero_pose_gives_rest_joints_and_both_input_forms_agree():
    body = BodyModel()
    aa = _random_pose(16)
    j_aa = body.forward_kinematics(aa)
    j_6d = body.forward_kinematics(axis_angle_to_rot6d(aa).reshape(16, 144))
    assert torch.allclose(j_aa, j_6d, atol=1e-10)
    zero = body.forward_kinematics(torch.zeros(1, 24, 3))
    assert torch.allclose(zero[0].double(), body.rest_joints, atol=1e-6)
    assert zero.dtype == torch.float32


def test_bone_lengths_are_preserved():
    body = BodyModel()
    j = body.forward_kinematics(_random_pose(64, seed=3))
    rest = body.rest_joints
    for c in range(1, 24):
        p = PARENTS[c]
        lengths = (j[:, c] - j[:, p]).norm(dim=-1)
        assert torch.allclose(lengths, (rest[c] - rest[p]).norm().expand(64), atol=1e-10)


def test_knee_flexion_moves_ankle_backwards():
    body = BodyModel()
    pose = torch.zeros(1, 24, 3, dtype=torch.float64)
    pose[0, JOINT["left_knee"], 0] = np.pi / 2  # knee flexion: rotation about +x
    j = body.forward_kinematics(pose)[0]
    shin = j[JOINT["left_ankle"]] - j[JOINT["left_knee"]]
    assert shin[2] < -0.3 and abs(shin[1]) < 0.05  # foot goes behind the knee, shin horizontal


def test_fk_is_differentiable():
    body = BodyModel()
    pose = _random_pose(2, seed=4).requires_grad_(True)
    body.forward_kinematics(pose).sum().backward()
    assert torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0


def test_smplx_backend_matches_builtin(tmp_path):
    write_synthetic_smpl(tmp_path)
    smpl = BodyModel(smpl_dir=tmp_path)
    assert smpl.backend == "smplx"
    builtin = BodyModel()
    assert torch.allclose(smpl.rest_joints, builtin.rest_joints, atol=1e-9)
    pose = _random_pose(1000, seed=5)
    a = smpl.forward_kinematics(pose)
    b = builtin.forward_kinematics(pose)
    assert (a - b).abs().max() < 1e-5
    a32 = smpl.forward_kinematics(pose.float())
    assert a32.dtype == torch.float32 and (a32.double() - b).abs().max() < 1e-5


def test_missing_smpl_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="SMPL_NEUTRAL.pkl"):
        BodyModel(smpl_dir=tmp_path)


@pytest.mark.parametrize(
    "pose,msg",
    [
        (torch.zeros(2, 23, 3), r"got \(2, 23, 3\)"),
        (torch.zeros(2, 143), r"got \(2, 143\)"),
        (torch.zeros(24, 3), r"got \(24, 3\)"),
        (torch.full((1, 24, 3), float("nan")), "NaN"),
        (torch.zeros(1, 24, 3, dtype=torch.int32), "float32 or float64"),
    ],
)
def test_fk_bad_input(pose, msg):
    with pytest.raises(ValueError, match=msg):
        BodyModel().forward_kinematics(pose)
