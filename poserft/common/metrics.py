"""Pose and retrieval metrics.

Pose errors are per sample, in millimetres, after root alignment (joint 0, the pelvis).
PA-MPJPE first maps the prediction onto the target with the best similarity transform
(scale, proper rotation, translation) in closed form (Umeyama 1991), never a reflection.
Retrieval metrics take two (N, D) embedding matrices whose row i belongs to the same pose.
"""

from __future__ import annotations

import numpy as np
import torch

from poserft.common.checks import check_tensor


def _pair(pred, target):
    """Check two (N, J, 3) joint arrays of equal shape; return them as float64 tensors."""
    pred = torch.as_tensor(pred) if isinstance(pred, np.ndarray) else pred
    target = torch.as_tensor(target) if isinstance(target, np.ndarray) else target
    joints = pred.shape[-2] if isinstance(pred, torch.Tensor) and pred.dim() == 3 else 24
    check_tensor("pred", pred, (joints, 3))
    check_tensor("target", target, (joints, 3))
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return pred.double(), target.double()


def root_align(joints: torch.Tensor) -> torch.Tensor:
    return joints - joints[:, :1]


def mpjpe(pred, target) -> torch.Tensor:
    """Mean per-joint position error, (N, J, 3) x2 metres -> (N,) mm, after root alignment."""
    pred, target = _pair(pred, target)
    return (root_align(pred) - root_align(target)).norm(dim=-1).mean(-1) * 1000.0


def similarity_align(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Best s, R (det +1), t with s R pred + t ~ target, per sample; returns aligned pred."""
    mu_p, mu_t = pred.mean(1, keepdim=True), target.mean(1, keepdim=True)
    p, t = pred - mu_p, target - mu_t
    var_p = (p * p).sum(dim=(1, 2))
    cov = t.transpose(1, 2) @ p  # (N, 3, 3) = sum_j t_j p_j^T
    u, s, vt = torch.linalg.svd(cov)
    d = torch.ones_like(s)
    d[:, -1] = torch.sign(torch.linalg.det(u @ vt))
    d[:, -1] = torch.where(d[:, -1] == 0, torch.ones_like(d[:, -1]), d[:, -1])
    rot = u @ torch.diag_embed(d) @ vt
    scale = (s * d).sum(-1) / var_p.clamp_min(1e-12)
    return scale[:, None, None] * (p @ rot.transpose(1, 2)) + mu_t


def pa_mpjpe(pred, target) -> torch.Tensor:
    """Procrustes-aligned MPJPE, (N, J, 3) x2 metres -> (N,) mm."""
    pred, target = _pair(pred, target)
    aligned = similarity_align(root_align(pred), root_align(target))
    return (aligned - root_align(target)).norm(dim=-1).mean(-1) * 1000.0


# ---- retrieval -------------------------------------------------------------------------


def _check_embeddings(text_emb, pose_emb):
    text_emb = torch.as_tensor(np.asarray(text_emb)) if not isinstance(text_emb, torch.Tensor) else text_emb
    pose_emb = torch.as_tensor(np.asarray(pose_emb)) if not isinstance(pose_emb, torch.Tensor) else pose_emb
    for name, x in (("text_emb", text_emb), ("pose_emb", pose_emb)):
        if x.dim() != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
        check_tensor(name, x.double(), (x.shape[1],))
    if text_emb.shape != pose_emb.shape:
        raise ValueError(
            f"text_emb and pose_emb must have the same shape, got {tuple(text_emb.shape)} and {tuple(pose_emb.shape)}"
        )
    return text_emb.double(), pose_emb.double()


def _ranks(sim: torch.Tensor) -> torch.Tensor:
    """Rank (0 = best) of the diagonal entry in each row; ties count against the query."""
    diag = sim.diagonal()[:, None]
    return (sim > diag).sum(1) + ((sim == diag).sum(1) - 1)


def retrieval_recalls(text_emb, pose_emb, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@K (percent) both ways over the full set, plus mRecall (their mean)."""
    t, p = _check_embeddings(text_emb, pose_emb)
    sim = t @ p.T  # rows: text queries over poses
    rank_t2p, rank_p2t = _ranks(sim), _ranks(sim.T)
    out = {}
    for k in ks:
        out[f"recall_at_{k}_t2p"] = float((rank_t2p < k).double().mean() * 100)
        out[f"recall_at_{k}_p2t"] = float((rank_p2t < k).double().mean() * 100)
    out["mrecall"] = float(np.mean([v for v in out.values()]))
    return out


def r_precision(text_emb, pose_emb, pool: int = 32, seed: int = 0, k: int = 1) -> dict[str, float]:
    """R-precision (percent) over random pools: each query against its match and pool-1 others."""
    t, p = _check_embeddings(text_emb, pose_emb)
    n = t.shape[0]
    if n < pool:
        raise ValueError(f"r_precision needs at least pool={pool} pairs, got {n}")
    rng = np.random.default_rng(seed)
    others = np.stack([rng.choice(np.delete(np.arange(n), i), size=pool - 1, replace=False) for i in range(n)])
    idx = torch.as_tensor(np.concatenate([np.arange(n)[:, None], others], axis=1))
    res = {}
    for name, q, g in (("t2p", t, p), ("p2t", p, t)):
        scores = (q[:, None, :] * g[idx]).sum(-1)  # (n, pool), column 0 is the match
        rank = (scores[:, 1:] >= scores[:, :1]).sum(1)
        res[f"r_precision_{name}"] = float((rank < k).double().mean() * 100)
    return res


def yaw_mpjpe(pred_m: torch.Tensor, target_m: torch.Tensor) -> torch.Tensor:
    """MPJPE in mm after root alignment and the best rotation of `pred_m` about the vertical axis.

    Broadcasts over leading dimensions: (..., J, 3) with (..., J, 3) -> (...). The angle maximises
    sum_j <R_y(theta) p_j, t_j> = A cos(theta) + B sin(theta), so theta = atan2(B, A) with
    A = sum(px tx + pz tz), B = sum(pz tx - px tz) (root-aligned joints).
    """
    p = pred_m.double() - pred_m.double()[..., :1, :]
    t = target_m.double() - target_m.double()[..., :1, :]
    p, t = torch.broadcast_tensors(p, t)
    a = (p[..., 0] * t[..., 0] + p[..., 2] * t[..., 2]).sum(-1)
    b = (p[..., 2] * t[..., 0] - p[..., 0] * t[..., 2]).sum(-1)
    theta = torch.atan2(b, a)[..., None]
    c, s = torch.cos(theta), torch.sin(theta)
    turned = torch.stack([c * p[..., 0] + s * p[..., 2], p[..., 1], -s * p[..., 0] + c * p[..., 2]], dim=-1)
    return (turned - t).norm(dim=-1).mean(-1) * 1000.0
