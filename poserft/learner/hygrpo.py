"""HyGRPO: group-relative advantages and the hybrid (token + pose) clipped loss (docs/architecture.md §5).

Pure torch functions, no state. The policy is pi(a, p | q) = pi_LM(a | q) * N(p; mu, std):
text tokens get the usual GRPO clipped surrogate with the discrete advantage F, the sampled pose
gets a second clipped surrogate with the continuous advantage D, computed only over the group's
valid poses V. `continuous=False` is plain GRPO (the paper's ablation).

Choices worth knowing:
- Group std is the population std (ddof=0): the group *is* the population being normalised,
  and it stays defined for a group of two (advantages -1, +1).
- A group whose (valid) rewards are all equal gets exactly 0, not ~0 / eps.
- Log-ratios are clamped to [-MAX_LOG_RATIO, MAX_LOG_RATIO] before exp, so a very stale or
  badly matched sample cannot overflow; beyond the clamp its gradient is cut.
- The pose log-prob is the sum over the 144 numbers, as the rollout workers record it (a
  per-dimension mean was tried and showed no gain; NOTES.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poserft.model.policy import gaussian_entropy, gaussian_kl, gaussian_log_prob

MAX_LOG_RATIO = 20.0


# ---- advantages ----------------------------------------------------------------------------
def _group_index(group_ids, n: int, device) -> tuple[torch.Tensor, int]:
    """Group ids (ints / hashables or a tensor) -> dense indices 0..K-1 (N,) and K."""
    if len(group_ids) != n:
        raise ValueError(f"group_ids has {len(group_ids)} entries, expected one per reward ({n})")
    if isinstance(group_ids, torch.Tensor):
        _, idx = torch.unique(group_ids.reshape(-1), return_inverse=True)
    else:
        dense: dict = {}
        idx = torch.tensor([dense.setdefault(g, len(dense)) for g in group_ids], dtype=torch.long)
    idx = idx.to(device)
    return idx, int(idx.max()) + 1 if n else 0


def _group_center(x: torch.Tensor, idx: torch.Tensor, k: int, member: torch.Tensor, min_size: int):
    """x - mean over the members of each group (0 for non-members), the per-group population
    std, and per row whether its group is live: at least `min_size` members, not all equal."""
    w = member.to(x.dtype)
    x = torch.where(member, x, torch.zeros_like(x))
    count = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, idx, w)
    mean = torch.zeros_like(count).index_add_(0, idx, x * w) / count.clamp(min=1)
    dev = (x - mean[idx]) * w
    std = (torch.zeros_like(count).index_add_(0, idx, dev**2) / count.clamp(min=1)).sqrt()
    hi = torch.full_like(count, -torch.inf).scatter_reduce(0, idx, torch.where(member, x, -torch.inf), "amax")
    lo = torch.full_like(count, torch.inf).scatter_reduce(0, idx, torch.where(member, x, torch.inf), "amin")
    live = (count >= min_size) & (hi > lo)
    return dev, std[idx], member & live[idx]


def _group_standardize(x: torch.Tensor, idx: torch.Tensor, k: int, member: torch.Tensor, eps: float, min_size: int):
    """(x - mean) / (std + eps) over the members of each group; 0 for non-members, for groups
    with fewer than `min_size` members and for groups whose members all have the same x."""
    dev, std, live = _group_center(x, idx, k, member, min_size)
    return torch.where(live, dev / (std + eps), torch.zeros_like(x))


def _as_float(values, name: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    t = t if t.is_floating_point() else t.to(torch.get_default_dtype())
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(t.shape)}")
    return t


def group_advantages(rewards, group_ids, eps: float = 1e-6) -> torch.Tensor:
    """Discrete advantage F_i = (r_i - mean_G r) / (std_G r + eps) over every sample of i's group."""
    r = _as_float(rewards, "rewards")
    if torch.isnan(r).any():
        raise ValueError("rewards contain NaN; score every sample before computing advantages")
    idx, k = _group_index(group_ids, len(r), r.device)
    return _group_standardize(r, idx, k, torch.ones_like(r, dtype=torch.bool), eps, min_size=1)


def continuous_advantages(pose_rewards, group_ids, valid, eps: float = 1e-6, scale_by=None) -> torch.Tensor:
    """Continuous advantage D_i = (s_i - mean_V s) / (std_V s + eps) over the valid poses V of
    i's group; 0 for invalid samples and for groups with |V| < 2. NaN at invalid rows is fine.

    `scale_by` (one label per row, e.g. the task; rl.pose_advantage_scale: task): divide by the
    pooled within-group std of the rows sharing the label instead of the group's own std. A group
    whose poses the reward barely tells apart then gets small advantages, not unit-size ones."""
    s = _as_float(pose_rewards, "pose_rewards")
    v = torch.as_tensor(valid, device=s.device).bool()
    if v.shape != s.shape:
        raise ValueError(f"valid must have shape {tuple(s.shape)} like pose_rewards, got {tuple(v.shape)}")
    if torch.isnan(s[v]).any():
        raise ValueError("pose_rewards contain NaN at valid rows; only invalid rows may be NaN")
    idx, k = _group_index(group_ids, len(s), s.device)
    if scale_by is None:
        return _group_standardize(s, idx, k, v, eps, min_size=2)
    dev, _, live = _group_center(s, idx, k, v, min_size=2)
    lab, n_lab = _group_index(scale_by, len(s), s.device)
    w = live.to(s.dtype)
    pooled = (
        torch.zeros(n_lab, dtype=s.dtype, device=s.device).index_add_(0, lab, dev**2 * w)
        / torch.zeros(n_lab, dtype=s.dtype, device=s.device).index_add_(0, lab, w).clamp(min=1)
    ).sqrt()
    return torch.where(live, dev / (pooled[lab] + eps), torch.zeros_like(s))


def token_kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - logp (>= 0)."""
    d = (ref_logp - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return (torch.expm1(d) - d).clamp(min=0)


# ---- loss ----------------------------------------------------------------------------------
@dataclass
class HyGRPOBatch:
    """One learner minibatch. B sequences, T token positions, P pose rows, D = 144 pose numbers."""

    logp: torch.Tensor  # (B, T) current token log-probs
    old_logp: torch.Tensor  # (B, T) behaviour (or recomputed old) token log-probs
    mask: torch.Tensor  # (B, T) bool, True at response tokens
    adv_discrete: torch.Tensor  # (B,) F
    ref_logp: torch.Tensor | None = None  # (B, T) frozen SFT policy, needed when beta > 0
    token_entropy: torch.Tensor | None = None  # (B, T) optional, only reported
    # The pose part has its own P rows: P = B with one pose per sequence, or one row per pose
    # sample (mu / log_std then repeat their sequence's head output).
    pose: torch.Tensor | None = None  # (P, D) sampled pose (anything, even NaN, at invalid rows)
    mu: torch.Tensor | None = None  # (P, D) current head mean
    log_std: torch.Tensor | None = None  # (P, D) current head log-std
    old_pose_logp: torch.Tensor | None = None  # (P,) behaviour log N(pose), summed over D
    valid: torch.Tensor | None = None  # (P,) bool, exactly one valid <POSE>
    adv_continuous: torch.Tensor | None = None  # (P,) D
    ref_mu: torch.Tensor | None = None  # (P, D) needed when beta_c > 0
    ref_log_std: torch.Tensor | None = None  # (P, D)


def _check(name: str, t, shape: tuple, nan_rows=None, required: bool = True):
    """Shape check, and a NaN check where `nan_rows` (True = everywhere, or a bool mask) says."""
    if t is None:
        if required:
            raise ValueError(f"{name} is required here (expected shape {tuple(shape)}), got None")
        return
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if nan_rows is None or not t.is_floating_point():
        return
    x = t.detach() if nan_rows is True else t.detach()[nan_rows.to(t.device)]
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN; check the forward pass or rollout record that produced it")


def _validate(b: HyGRPOBatch, continuous: bool, beta: float, beta_c: float):
    if b.logp.dim() != 2:
        raise ValueError(f"logp must be 2-D (B, T), got shape {tuple(b.logp.shape)}")
    bt, n = tuple(b.logp.shape), b.logp.shape[0]
    _check("mask", b.mask, bt)
    m = b.mask.bool()
    _check("logp", b.logp, bt, nan_rows=True)
    _check("old_logp", b.old_logp, bt, nan_rows=m)
    _check("adv_discrete", b.adv_discrete, (n,), nan_rows=True)
    _check("ref_logp", b.ref_logp, bt, nan_rows=m, required=beta > 0)
    _check("token_entropy", b.token_entropy, bt, required=False)
    if not continuous:
        return
    if b.mu is None or b.mu.dim() != 2:
        raise ValueError(f"mu must have shape (P, D), got {None if b.mu is None else tuple(b.mu.shape)}")
    bd, p = tuple(b.mu.shape), b.mu.shape[0]  # P pose rows: B, or more with several poses per response
    _check("valid", b.valid, (p,))
    v = b.valid.bool()
    _check("mu", b.mu, bd, nan_rows=True)
    _check("log_std", b.log_std, bd, nan_rows=True)
    _check("pose", b.pose, bd, nan_rows=v)
    _check("old_pose_logp", b.old_pose_logp, (p,), nan_rows=v)
    _check("adv_continuous", b.adv_continuous, (p,), nan_rows=v)
    _check("ref_mu", b.ref_mu, bd, nan_rows=v, required=beta_c > 0)
    _check("ref_log_std", b.ref_log_std, bd, nan_rows=v, required=beta_c > 0)


def _clipped_surrogate(log_ratio: torch.Tensor, adv: torch.Tensor, eps: float):
    """min(rho A, clip(rho, 1-e, 1+e) A) and where clipping cut the gradient."""
    ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
    unclipped, clipped = ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv
    return torch.minimum(unclipped, clipped), ratio, clipped < unclipped


def _masked_mean(x: torch.Tensor, w: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of x where w (0/1 floats); exactly 0 (and still differentiable) where w is all 0."""
    if dim is None:
        return (x * w).sum() / w.sum().clamp(min=1)
    return (x * w).sum(dim) / w.sum(dim).clamp(min=1)


def _summary(x: torch.Tensor, w: torch.Tensor, prefix: str) -> dict:
    """Mean, population std and largest |x| where w (0/1); all 0 where w is all 0. Every
    tensor made here follows x's device, so the stats stack with the loss terms on a GPU."""
    w = w.detach().double()
    x = torch.where(w > 0, x.detach().double(), torch.zeros_like(w))  # rows outside w may be NaN
    n = w.sum().clamp(min=1)
    mean = x.sum() / n
    std = (((x - mean) * w) ** 2).sum().div(n).sqrt()
    absmax = torch.cat([x.abs(), x.new_zeros(1)]).amax()
    return {f"{prefix}_mean": mean, f"{prefix}_std": std, f"{prefix}_absmax": absmax}


def hygrpo_loss(
    batch: HyGRPOBatch,
    *,
    clip_eps: float = 0.2,
    clip_eps_pose: float = 0.2,
    lambda_c: float = 1.0,
    beta: float = 0.0,
    beta_c: float = 0.0,
    continuous: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The HyGRPO loss (scalar, to minimise) and its metrics (python floats).

    Metrics are present when their inputs are: token KL only with ref_logp, pose ones only when
    `continuous`. Means over V are 0.0 when V is empty (see `pose_valid_frac`).
    """
    _validate(batch, continuous, beta, beta_c)
    loss, stats = hygrpo_terms(
        batch,
        clip_eps=clip_eps,
        clip_eps_pose=clip_eps_pose,
        lambda_c=lambda_c,
        beta=beta,
        beta_c=beta_c,
        continuous=continuous,
    )
    names = list(stats)
    values = torch.stack([stats[k].detach().double().reshape(()) for k in names]).cpu().tolist()
    return loss, dict(zip(names, values))


def hygrpo_terms(
    b: HyGRPOBatch,
    *,
    clip_eps: float,
    clip_eps_pose: float,
    lambda_c: float,
    beta: float,
    beta_c: float,
    continuous: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and its metrics as 0-d tensors on the batch's device, for a validated batch.
    Only tensor ops: it runs on any device, `meta` included (tests use that to catch a tensor
    left on the CPU)."""
    m = b.mask.bool()
    mf = m.to(b.logp.dtype)
    zero = torch.zeros_like(b.logp)
    logp = torch.where(m, b.logp, zero)  # padding may hold anything (-inf, NaN): keep it out

    # Discrete part: per-sequence mean over response tokens, then mean over sequences.
    tok_log_ratio = logp - torch.where(m, b.old_logp, zero).detach()
    tok_surr, tok_ratio, tok_cut = _clipped_surrogate(tok_log_ratio, b.adv_discrete.detach()[:, None], clip_eps)
    loss_token = -_masked_mean(tok_surr, mf, dim=1).mean()
    loss = loss_token
    stats = {
        "loss_token": loss_token,
        "clip_frac_token": _masked_mean(tok_cut.to(mf.dtype), mf),
        "ratio_token_mean": _masked_mean(tok_ratio, mf),
        **_summary(b.adv_discrete, torch.ones_like(b.adv_discrete), "adv_discrete"),
    }
    if b.ref_logp is not None:
        kl_token = _masked_mean(token_kl_k3(logp, torch.where(m, b.ref_logp, zero).detach()), mf, dim=1).mean()
        loss = loss + beta * kl_token
        stats["kl_token"] = kl_token
    if b.token_entropy is not None:
        stats["token_entropy"] = _masked_mean(torch.where(m, b.token_entropy, zero), mf)

    # Continuous part: one clipped surrogate per valid pose, averaged over V.
    if continuous:
        v = b.valid.bool()
        vf = v.to(b.mu.dtype)
        pose = torch.where(v[:, None], b.pose, b.mu.detach())  # invalid rows: finite placeholder
        old_lp = torch.where(v, b.old_pose_logp, torch.zeros_like(b.old_pose_logp)).detach()
        lp = gaussian_log_prob(pose.detach(), b.mu, b.log_std)
        pose_log_ratio = torch.where(v, lp - old_lp, torch.zeros_like(lp))
        adv_c = torch.where(v, b.adv_continuous.detach(), torch.zeros_like(vf))
        pose_surr, pose_ratio, pose_cut = _clipped_surrogate(pose_log_ratio, adv_c, clip_eps_pose)
        loss_pose = -_masked_mean(pose_surr, vf)
        loss = loss + lambda_c * loss_pose
        stats |= {
            "loss_pose": loss_pose,
            "clip_frac_pose": _masked_mean(pose_cut.to(vf.dtype), vf),
            "ratio_pose_mean": _masked_mean(pose_ratio, vf),
            "pose_valid_frac": vf.mean(),
            "pose_entropy": _masked_mean(gaussian_entropy(b.log_std), vf),
            **_summary(b.adv_continuous, vf, "adv_continuous"),
        }
        if b.ref_mu is not None and b.ref_log_std is not None:
            ref_mu = torch.where(v[:, None], b.ref_mu, b.mu).detach()
            ref_log_std = torch.where(v[:, None], b.ref_log_std, b.log_std).detach()
            kl_pose = _masked_mean(gaussian_kl(b.mu, b.log_std, ref_mu, ref_log_std), vf)
            loss = loss + beta_c * kl_pose
            stats["kl_pose"] = kl_pose

    stats["loss"] = loss
    return loss, stats
