import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from poserft.common.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)


def _random_rotvecs(n, seed=0):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0, np.pi, size=(n, 1))
    return axis * angle


def test_axis_angle_to_matrix_matches_scipy():
    rv = _random_rotvecs(2000)
    ours = axis_angle_to_matrix(torch.from_numpy(rv)).numpy()
    ref = Rotation.from_rotvec(rv).as_matrix()
    assert np.abs(ours - ref).max() < 1e-12


def test_matrix_to_axis_angle_matches_scipy():
    rv = _random_rotvecs(2000, seed=1)
    mats = Rotation.from_rotvec(rv).as_matrix()
    ours = matrix_to_axis_angle(torch.from_numpy(mats)).numpy()
    ref = Rotation.from_matrix(mats).as_rotvec()
    assert np.abs(ours - ref).max() < 1e-9


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_round_trips(dtype, tol):
    rv = torch.from_numpy(_random_rotvecs(5000, seed=2)).to(dtype)
    mats = axis_angle_to_matrix(rv)
    assert (matrix_to_axis_angle(mats) - rv).abs().max() < tol * 10
    assert (rot6d_to_matrix(matrix_to_rot6d(mats)) - mats).abs().max() < tol
    assert (axis_angle_to_matrix(matrix_to_axis_angle(mats)) - mats).abs().max() < tol


def test_rot6d_layout_is_first_two_columns():
    m = torch.from_numpy(Rotation.from_rotvec([[0.3, -0.2, 0.9]]).as_matrix())
    six = matrix_to_rot6d(m)
    assert torch.allclose(six[0, :3], m[0, :, 0]) and torch.allclose(six[0, 3:], m[0, :, 1])


def test_rot6d_to_matrix_orthonormalises_any_input():
    x = torch.randn(100, 6, dtype=torch.float64)
    m = rot6d_to_matrix(x)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    assert (m.transpose(-1, -2) @ m - eye).abs().max() < 1e-12
    assert (torch.linalg.det(m) - 1).abs().max() < 1e-12


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-6, 1e-3, np.pi - 1e-3, np.pi - 1e-6, np.pi])
def test_near_zero_and_pi_values_and_gradients(angle):
    axis = np.array([0.48, -0.6, 0.64])
    rv = torch.tensor(axis * angle, dtype=torch.float64, requires_grad=True)
    m = axis_angle_to_matrix(rv[None])
    ref = Rotation.from_rotvec((axis * angle)[None]).as_matrix()
    assert np.abs(m.detach().numpy() - ref).max() < 1e-12
    m.sum().backward()
    assert torch.isfinite(rv.grad).all()
    # Back from the matrix: finite gradients at 0 and near pi.
    mat = torch.from_numpy(ref).requires_grad_(True)
    back = matrix_to_axis_angle(mat)
    back.sum().backward()
    assert torch.isfinite(mat.grad).all()
    if angle < np.pi - 1e-4:  # at pi the sign of the axis is ambiguous
        assert np.abs(back.detach().numpy()[0] - axis * angle).max() < 1e-7


def test_gradcheck_rodrigues_and_inverse():
    rv = torch.from_numpy(_random_rotvecs(4, seed=3)).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (rv,))
    small = (torch.randn(3, 3, dtype=torch.float64) * 1e-6).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (small,))
    mats = axis_angle_to_matrix(rv.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (mats,))


@pytest.mark.parametrize(
    "fn,arg,msg",
    [
        (axis_angle_to_matrix, torch.zeros(5, 4), "axis_angle must have shape"),
        (matrix_to_axis_angle, torch.zeros(5, 3), "matrix must have shape"),
        (rot6d_to_matrix, torch.zeros(2, 5), r"rot6d must have shape \(6,\), got \(2, 5\)"),
        (axis_angle_to_matrix, torch.zeros(5, 3, dtype=torch.int64), "float32 or float64"),
        (axis_angle_to_matrix, torch.full((2, 3), float("nan")), "NaN"),
        (matrix_to_rot6d, np.zeros((3, 3)), "must be a torch.Tensor"),
    ],
)
def test_bad_input_names_the_argument(fn, arg, msg):
    with pytest.raises(ValueError, match=msg):
        fn(arg)
