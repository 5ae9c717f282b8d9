"""Batched rotation conversions: axis-angle <-> matrix <-> 6D, differentiable everywhere.

Conventions
- axis-angle: (..., 3), the rotation vector (unit axis times angle in radians).
- matrix: (..., 3, 3), acting on column vectors (x' = R x).
- 6D (Zhou et al., CVPR 2019): the first two *columns* of R, stored as
  (R[:, 0], R[:, 1]) -> (..., 6). `rot6d_to_matrix` re-orthonormalises by Gram-Schmidt, so it
  accepts any 6-vector whose two halves are not parallel.

Small-angle and near-pi cases are handled with series expansions and a quaternion route
(Shepperd's method) so that values and gradients stay finite.
"""

from __future__ import annotations

import torch

from poserft.common.checks import check_tensor

_SMALL = 1e-4  # below this angle (rad) the Taylor series are exact to float64 precision


def _sinc_half_terms(theta2: torch.Tensor):
    """Return (sin t / t, (1 - cos t) / t^2) as functions of t^2, with series near 0."""
    small = theta2 < _SMALL**2
    safe = torch.where(small, torch.ones_like(theta2), theta2)
    t = safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6 + theta2**2 / 120, torch.sin(t) / t)
    b = torch.where(small, 0.5 - theta2 / 24 + theta2**2 / 720, (1 - torch.cos(t)) / safe)
    return a, b


def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3) matrices (Rodrigues' formula)."""
    check_tensor("axis_angle", axis_angle, (3,), min_dims=1)
    theta2 = (axis_angle * axis_angle).sum(-1)
    a, b = _sinc_half_terms(theta2)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def _matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternions (w, x, y, z) with w >= 0 (Shepperd's method)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate solutions, each well conditioned when its leading component is largest.
    cands = torch.stack(
        [
            torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    lead = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = lead.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors with angle in [0, pi]."""
    check_tensor("matrix", matrix, (3, 3), min_dims=2)
    q = _matrix_to_quaternion(matrix)
    w, v = q[..., 0], q[..., 1:]
    s2 = (v * v).sum(-1)
    small = s2 < _SMALL**2
    s = torch.where(small, torch.ones_like(s2), s2).sqrt()
    # angle = 2 atan2(|v|, w); axis-angle = v * angle / |v|. Near 0 use the series of 2 atan(s/w)/s.
    ratio_big = 2 * torch.atan2(s, w) / s
    ratio_small = 2 / w * (1 - s2 / (3 * w * w))
    ratio = torch.where(small, ratio_small, ratio_big)
    return v * ratio[..., None]


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, column 0 first."""
    check_tensor("matrix", matrix, (3, 3), min_dims=2)
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two column vectors."""
    check_tensor("rot6d", rot6d, (6,), min_dims=1)
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def axis_angle_to_rot6d(axis_angle: torch.Tensor) -> torch.Tensor:
    return matrix_to_rot6d(axis_angle_to_matrix(axis_angle))


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


def geodesic_angle(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Angle in radians of R1^T R2, (..., 3, 3) x2 -> (...)."""
    cos = ((r1.transpose(-1, -2) @ r2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))


def heading_undo(root: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) root rotations -> (N, 3, 3) rotations about y that turn each body to face +z.

    The heading is the ground-plane direction of the sum of the body's forward and up axes
    (root @ e_z + root @ e_y): the facing direction of an upright body, the direction of the head
    of one lying on its back or front, in between for a body bent at the hips. The forward axis
    alone is vertical for a lying body, so its heading would be noise. Tilt (lying, leaning) is
    left alone by the undo. The sum vanishes, and the heading is undefined, only for a body
    reclined 45 degrees backwards with its face turned 45 degrees up."""
    axis = root[:, :, 2] + root[:, :, 1]
    heading = torch.atan2(axis[:, 0], axis[:, 2])
    c, s = torch.cos(-heading), torch.sin(-heading)
    o, i = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, o, s, o, i, o, -s, o, c], -1).reshape(-1, 3, 3)
