"""HyGRPO advantages and loss against float64 references written here with plain loops."""

import math

import pytest
import torch

from poserft.learner.hygrpo import (
    HyGRPOBatch,
    continuous_advantages,
    group_advantages,
    hygrpo_loss,
    token_kl_k3,
)

GROUP_SIZES = [1, 2, 3, 5, 8]  # several groups, different sizes, one singleton


# ---- references (float64, loops, nothing from poserft) -------------------------------------
def ref_standardize(values, groups, member, eps, min_size):
    out = [0.0] * len(values)
    for g in set(groups):
        rows = [i for i in range(len(values)) if groups[i] == g and member[i]]
        if len(rows) < min_size:
            continue
        xs = [float(values[i]) for i in rows]
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
        if max(xs) == min(xs):
            continue
        for i in rows:
            out[i] = (float(values[i]) - mean) / (std + eps)
    return out


def ref_gauss_logp(x, mu, log_std):
    """log N(x; mu, diag exp(log_std)^2), one dimension at a time."""
    lp = 0.0
    for d in range(len(x)):
        lp = lp - 0.5 * ((x[d] - mu[d]) / torch.exp(log_std[d])) ** 2 - log_std[d] - 0.5 * math.log(2 * math.pi)
    return lp


def ref_gauss_kl(mu_p, ls_p, mu_q, ls_q):
    kl = 0.0
    for d in range(len(mu_p)):
        vp, vq = torch.exp(2 * ls_p[d]), torch.exp(2 * ls_q[d])
        kl = kl + ls_q[d] - ls_p[d] + (vp + (mu_p[d] - mu_q[d]) ** 2) / (2 * vq) - 0.5
    return kl


def ref_clip_term(ratio, adv, eps):
    return torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv)


def ref_loss(b, clip_eps=0.2, clip_eps_pose=0.2, lambda_c=1.0, beta=0.0, beta_c=0.0, continuous=True):
    n, t_len = b.logp.shape
    pg, kl = 0.0, 0.0
    for i in range(n):
        toks = [t for t in range(t_len) if b.mask[i, t]]
        s, k = 0.0, 0.0
        for t in toks:
            s = s + ref_clip_term(torch.exp(b.logp[i, t] - b.old_logp[i, t]), float(b.adv_discrete[i]), clip_eps)
            if b.ref_logp is not None:
                d = b.ref_logp[i, t] - b.logp[i, t]
                k = k + torch.exp(d) - d - 1
        pg = pg + s / max(len(toks), 1)
        kl = kl + k / max(len(toks), 1)
    loss = -pg / n + beta * kl / n
    if not continuous:
        return loss
    rows = [i for i in range(n) if b.valid[i]]
    pose_sum, kl_sum = 0.0, 0.0
    for i in rows:
        lp, old = ref_gauss_logp(b.pose[i], b.mu[i], b.log_std[i]), float(b.old_pose_logp[i])
        pose_sum = pose_sum + ref_clip_term(torch.exp(lp - old), float(b.adv_continuous[i]), clip_eps_pose)
        if b.ref_mu is not None:
            kl_sum = kl_sum + ref_gauss_kl(b.mu[i], b.log_std[i], b.ref_mu[i], b.ref_log_std[i])
    if rows:
        loss = loss - lambda_c * pose_sum / len(rows) + beta_c * kl_sum / len(rows)
    return loss


def f64(x):
    return torch.tensor(x, dtype=torch.float64)


# ---- data ----------------------------------------------------------------------------------
def make_groups(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = [k for k, size in enumerate(GROUP_SIZES) for _ in range(size)]
    order = torch.randperm(len(ids), generator=g).tolist()
    return [ids[i] * 7 + 3 for i in order], g  # shuffled, non-contiguous ids


def make_batch(seed=0, dim=144, t_len=6, off_policy=0.3, with_ref=True):
    groups, g = make_groups(seed)
    n = len(groups)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    rewards = torch.rand(n, generator=g, dtype=torch.float64)
    rewards[[i for i, k in enumerate(groups) if k == 3 * 7 + 3]] = 0.5  # the 5-group: all equal
    valid = torch.rand(n, generator=g) < 0.7
    valid[[i for i, k in enumerate(groups) if k == 2 * 7 + 3][:2]] = True
    pose_rewards = torch.where(valid, torch.rand(n, generator=g, dtype=torch.float64), torch.nan)
    mask = torch.zeros(n, t_len, dtype=torch.bool)
    for i in range(n):
        mask[i, : 1 + i % t_len] = True
    logp = (-r(n, t_len).abs() - 0.1).requires_grad_()
    mu = (0.5 * r(n, dim)).requires_grad_()
    log_std = (-1.5 + 0.2 * r(n, dim)).requires_grad_()
    pose = (mu + log_std.exp() * r(n, dim)).detach()
    pose[~valid] = torch.nan  # invalid rows carry no pose at all
    old_pose_logp = torch.stack(
        [ref_gauss_logp(pose[i], mu[i], log_std[i]).detach() if valid[i] else f64(math.nan) for i in range(n)]
    )
    old_logp = logp.detach() + off_policy * r(n, t_len)
    old_logp[~mask] = -torch.inf  # padding may hold garbage
    b = HyGRPOBatch(
        logp=logp,
        old_logp=old_logp,
        mask=mask,
        adv_discrete=torch.tensor(ref_standardize(rewards, groups, [True] * n, 1e-6, 1)),
        ref_logp=(logp.detach() + 0.2 * r(n, t_len)).masked_fill(~mask, torch.nan) if with_ref else None,
        pose=pose,
        mu=mu,
        log_std=log_std,
        old_pose_logp=old_pose_logp + off_policy * 3 * r(n),
        valid=valid,
        adv_continuous=torch.tensor(ref_standardize(pose_rewards, groups, valid.tolist(), 1e-6, 2)),
        ref_mu=(mu.detach() + 0.1 * r(n, dim)) if with_ref else None,
        ref_log_std=(log_std.detach() + 0.1 * r(n, dim)) if with_ref else None,
    )
    return b, groups, rewards, pose_rewards


def grads(loss, *ts):
    return torch.autograd.grad(loss, ts, allow_unused=True, retain_graph=True)


# ---- advantages ----------------------------------------------------------------------------
def test_group_advantages_match_reference():
    _, groups, rewards, _ = make_batch(dim=4)
    got = group_advantages(rewards, groups)
    want = torch.tensor(ref_standardize(rewards, groups, [True] * len(groups), 1e-6, 1), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # ids as a LongTensor or as strings give the same answer
    torch.testing.assert_close(group_advantages(rewards, torch.tensor(groups)), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(group_advantages(rewards, [f"g{k}" for k in groups]), want, rtol=1e-12, atol=1e-12)


def test_equal_rewards_and_singletons_give_exact_zero():
    rewards = [0.1, 0.1, 0.1, 0.7, 0.3, 0.9]
    adv = group_advantages(rewards, [0, 0, 0, 1, 1, 2])
    assert adv[:3].tolist() == [0.0, 0.0, 0.0] and adv[5].item() == 0.0
    # population std: a group of two gets exactly +-1 (up to eps)
    assert adv[3].item() == pytest.approx(1.0, abs=1e-5) and adv[4].item() == pytest.approx(-1.0, abs=1e-5)


def test_continuous_advantages_match_reference_and_ignore_nan():
    _, groups, _, pose_rewards = make_batch(dim=4)
    valid = ~torch.isnan(pose_rewards)
    got = continuous_advantages(pose_rewards, groups, valid)
    want = torch.tensor(ref_standardize(pose_rewards, groups, valid.tolist(), 1e-6, 2), dtype=torch.float64)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert (got[~valid] == 0).all()


def test_continuous_advantages_need_two_valid_poses():
    s = torch.tensor([0.9, float("nan"), 0.2, 0.4, float("nan")])
    valid = torch.tensor([True, False, True, True, False])
    adv = continuous_advantages(s, [0, 0, 1, 1, 1], valid)  # group 0 has |V| = 1
    assert adv[:2].tolist() == [0.0, 0.0] and adv[4].item() == 0.0
    assert adv[2].item() == pytest.approx(-1.0, abs=1e-4) and adv[3].item() == pytest.approx(1.0, abs=1e-4)


def test_task_scale_divides_by_the_pooled_within_group_std_of_the_task():
    # task a: a group the reward tells apart (spread 1) and one it barely does (spread 0.1);
    # task b: one group on another scale. NaN rows are invalid and stay 0.
    s = torch.tensor([0.0, 2.0, 5.0, 5.2, 10.0, 30.0, float("nan")], dtype=torch.float64)
    groups = [0, 0, 1, 1, 2, 2, 2]
    tasks = ["a", "a", "a", "a", "b", "b", "b"]
    valid = ~torch.isnan(s)
    got = continuous_advantages(s, groups, valid, scale_by=tasks)
    pooled_a = math.sqrt((1.0 + 1.0 + 0.01 + 0.01) / 4)  # centred: -1, 1, -0.1, 0.1
    want = [-1 / pooled_a, 1 / pooled_a, -0.1 / pooled_a, 0.1 / pooled_a, -1.0, 1.0, 0.0]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    per_group = continuous_advantages(s, groups, valid)  # the paper's: both task-a groups at +-1
    assert per_group[2].item() == pytest.approx(-1.0, abs=1e-4) and abs(got[2].item()) < 0.15


def test_task_scale_keeps_dead_groups_at_zero():
    s = torch.tensor([0.3, 0.3, 0.1, 0.5, 0.7])
    got = continuous_advantages(s, [0, 0, 1, 1, 2], torch.ones(5, dtype=torch.bool), scale_by=["t"] * 5)
    assert got[:2].tolist() == [0.0, 0.0] and got[4].item() == 0.0  # all equal; a single pose
    assert got[2].item() == pytest.approx(-1.0, abs=1e-4) and got[3].item() == pytest.approx(1.0, abs=1e-4)


# ---- loss vs reference ---------------------------------------------------------------------
def test_loss_and_gradients_match_reference():
    b, *_ = make_batch(seed=1)
    kw = dict(clip_eps=0.2, clip_eps_pose=0.3, lambda_c=0.7, beta=0.05, beta_c=0.02)
    loss, metrics = hygrpo_loss(b, **kw)
    want = ref_loss(b, 0.2, 0.3, 0.7, 0.05, 0.02)
    assert loss.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)
    for got_g, want_g in zip(grads(loss, b.logp, b.mu, b.log_std), grads(want, b.logp, b.mu, b.log_std)):
        assert torch.isfinite(got_g).all()
        torch.testing.assert_close(got_g, want_g, rtol=1e-9, atol=1e-12)
    assert 0 < metrics["clip_frac_token"] < 1 and 0 < metrics["clip_frac_pose"] < 1
    assert metrics["pose_valid_frac"] == pytest.approx(b.valid.double().mean().item())
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


# ---- structural properties -----------------------------------------------------------------
def test_on_policy_step_is_the_plain_policy_gradient():
    b, *_ = make_batch(seed=3, dim=8, off_policy=0.0, with_ref=False)
    b.old_logp = b.logp.detach().clone()
    loss, m = hygrpo_loss(b, lambda_c=0.5)
    assert m["ratio_token_mean"] == pytest.approx(1.0) and m["ratio_pose_mean"] == pytest.approx(1.0)
    assert m["clip_frac_token"] == 0.0 and m["clip_frac_pose"] == 0.0
    n = b.logp.shape[0]
    pg, pose_pg = 0.0, 0.0
    rows = [i for i in range(n) if b.valid[i]]
    for i in range(n):
        toks = [t for t in range(b.logp.shape[1]) if b.mask[i, t]]
        pg = pg + sum(float(b.adv_discrete[i]) * b.logp[i, t] for t in toks) / len(toks)
    for i in rows:
        pose_pg = pose_pg + float(b.adv_continuous[i]) * ref_gauss_logp(b.pose[i], b.mu[i], b.log_std[i])
    plain = -pg / n - 0.5 * pose_pg / len(rows)  # REINFORCE: grad of -A log pi
    for got_g, want_g in zip(grads(loss, b.logp, b.mu, b.log_std), grads(plain, b.logp, b.mu, b.log_std)):
        torch.testing.assert_close(got_g, want_g, rtol=1e-9, atol=1e-12)


def test_equal_reward_group_and_small_V_contribute_no_gradient():
    b, groups, *_ = make_batch(seed=4, dim=8)
    loss, _ = hygrpo_loss(b, beta=0.0, beta_c=0.0)
    g_logp, g_mu = grads(loss, b.logp, b.mu)
    flat = [i for i, k in enumerate(groups) if k == 3 * 7 + 3]  # all-equal rewards
    single = [i for i, k in enumerate(groups) if k == 0 * 7 + 3]  # group of one: |V| <= 1
    assert (b.adv_discrete[flat] == 0).all() and (g_logp[flat] == 0).all()
    assert (g_logp[single] == 0).all() and (g_mu[single] == 0).all()
    assert (g_mu[~b.valid] == 0).all()


def test_empty_V_gives_zero_continuous_term_and_finite_gradient():
    b, *_ = make_batch(seed=5, dim=8)
    b.valid = torch.zeros_like(b.valid)
    b.pose = torch.full_like(b.pose, torch.nan)
    b.old_pose_logp = torch.full_like(b.old_pose_logp, torch.nan)
    b.adv_continuous = torch.zeros_like(b.adv_continuous)
    loss, m = hygrpo_loss(b, lambda_c=1.0, beta_c=0.1)
    assert m["loss_pose"] == 0.0 and m["kl_pose"] == 0.0 and m["pose_valid_frac"] == 0.0
    g_mu, g_ls = grads(loss, b.mu, b.log_std)
    assert g_mu is not None and (g_mu == 0).all() and (g_ls == 0).all()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_clipping_cuts_the_gradient_on_the_right_side(adv):
    # four one-token sequences with ratios 1.5, 0.5, 1.1, 0.9 and eps 0.2
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.9], dtype=torch.float64)
    logp = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
    log_std = torch.zeros(4, 1, dtype=torch.float64)
    pose = torch.zeros(4, 1, dtype=torch.float64)  # log N(0; 0, 1) = -0.5 log 2pi
    b = HyGRPOBatch(
        logp=logp,
        old_logp=-ratios.log()[:, None],
        mask=torch.ones(4, 1, dtype=torch.bool),
        adv_discrete=torch.full((4,), adv, dtype=torch.float64),
        pose=pose,
        mu=mu,
        log_std=log_std,
        valid=torch.ones(4, dtype=torch.bool),
        old_pose_logp=-0.5 * math.log(2 * math.pi) - ratios.log(),
        adv_continuous=torch.full((4,), adv, dtype=torch.float64),
    )
    loss, m = hygrpo_loss(b, clip_eps=0.2, clip_eps_pose=0.2)
    g_logp, _ = grads(loss, logp, mu)
    clipped = [0] if adv > 0 else [1]  # A > 0: cut above 1+e; A < 0: cut below 1-e
    live = [i for i in range(4) if i not in clipped]
    assert (g_logp[clipped] == 0).all()
    torch.testing.assert_close(g_logp[live, 0], -adv * ratios[live] / 4)
    assert m["clip_frac_token"] == 0.25 and m["clip_frac_pose"] == 0.25
    # pose: d/dmu log N(0; mu, 1) at mu = 0 is 0, so perturb the pose instead and check the cut
    b.pose = torch.ones(4, 1, dtype=torch.float64)
    b.old_pose_logp = -0.5 - 0.5 * math.log(2 * math.pi) - ratios.log()
    loss, _ = hygrpo_loss(b, clip_eps_pose=0.2)
    g_mu = grads(loss, mu)[0]
    assert (g_mu[clipped] == 0).all()
    torch.testing.assert_close(g_mu[live, 0], -adv * ratios[live] * 1.0 / 4)  # d log N / d mu = (p - mu)


def test_pose_ratio_overflow_is_guarded():
    b, *_ = make_batch(seed=6, dim=8)
    b.old_pose_logp = torch.where(b.valid, torch.full_like(b.old_pose_logp, -1e5), b.old_pose_logp)
    loss, m = hygrpo_loss(b)
    assert torch.isfinite(loss) and math.isfinite(m["ratio_pose_mean"])
    assert all(torch.isfinite(g).all() for g in grads(loss, b.mu, b.log_std))


def test_k3_is_nonnegative_and_zero_when_equal():
    g = torch.Generator().manual_seed(0)
    a, c = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    kl = token_kl_k3(a, c)
    assert (kl >= 0).all()
    assert (token_kl_k3(a, a) == 0).all()
    want = f64([math.exp(ci - ai) - (ci - ai) - 1 for ai, ci in zip(a.tolist(), c.tolist())])
    torch.testing.assert_close(kl, want, rtol=1e-12, atol=1e-14)


def test_gaussian_kl_term_matches_monte_carlo():
    g = torch.Generator().manual_seed(7)
    dim, samples = 3, 400_000
    mu, ls = f64([[0.3, -0.2, 1.0]]), f64([[-0.5, 0.1, -1.0]])
    ref_mu, ref_ls = f64([[0.0, 0.4, 0.8]]), f64([[-0.3, 0.0, -0.7]])
    b = HyGRPOBatch(
        logp=torch.zeros(1, 1, dtype=torch.float64),
        old_logp=torch.zeros(1, 1, dtype=torch.float64),
        mask=torch.ones(1, 1, dtype=torch.bool),
        adv_discrete=torch.zeros(1, dtype=torch.float64),
        pose=mu.clone(),
        mu=mu,
        log_std=ls,
        old_pose_logp=torch.zeros(1, dtype=torch.float64),
        valid=torch.ones(1, dtype=torch.bool),
        adv_continuous=torch.zeros(1, dtype=torch.float64),
        ref_mu=ref_mu,
        ref_log_std=ref_ls,
    )
    _, m = hygrpo_loss(b, beta_c=1.0)
    x = mu + ls.exp() * torch.randn(samples, dim, generator=g, dtype=torch.float64)
    log_ratio = (-0.5 * ((x - mu) / ls.exp()) ** 2 - ls + 0.5 * ((x - ref_mu) / ref_ls.exp()) ** 2 + ref_ls).sum(1)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(samples)
    assert m["kl_pose"] == pytest.approx(mc, abs=5 * se)
    assert m["kl_pose"] == pytest.approx(ref_gauss_kl(mu[0], ls[0], ref_mu[0], ref_ls[0]).item(), rel=1e-12)


def test_grpo_switch_ignores_pose_inputs():
    b, *_ = make_batch(seed=8, dim=8)
    loss, m = hygrpo_loss(b, continuous=False, lambda_c=1.0, beta=0.05, beta_c=1.0)
    assert grads(loss, b.mu)[0] is None
    assert loss.item() == pytest.approx(ref_loss(b, beta=0.05, continuous=False).item(), rel=1e-10)
    assert not any(k.startswith(("adv_continuous", "clip_frac_pose", "kl_pose", "pose_")) for k in m)
    b.pose = b.mu = b.log_std = b.old_pose_logp = b.valid = b.adv_continuous = None  # not needed at all
    loss2, _ = hygrpo_loss(b, continuous=False, beta=0.05)
    assert loss2.item() == loss.item()


# ---- bad inputs ----------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors_that_name_the_argument():
    b, groups, rewards, _ = make_batch(seed=9, dim=8)
    n = sum(GROUP_SIZES)
    with pytest.raises(ValueError, match=rf"old_logp.*\({n}, 5\)"):
        hygrpo_loss(HyGRPOBatch(**{**vars(b), "old_logp": b.old_logp[:, :5]}))
    with pytest.raises(ValueError, match=rf"adv_continuous.*\({n - 1},\)"):
        hygrpo_loss(HyGRPOBatch(**{**vars(b), "adv_continuous": b.adv_continuous[:-1]}))
    with pytest.raises(ValueError, match=rf"log_std.*\({n}, 7\)"):
        hygrpo_loss(HyGRPOBatch(**{**vars(b), "log_std": b.log_std[:, :7]}))
    with pytest.raises(ValueError, match="logp contains NaN"):
        bad = b.logp.detach().clone()
        bad[0, 0] = torch.nan
        hygrpo_loss(HyGRPOBatch(**{**vars(b), "logp": bad}))
    with pytest.raises(ValueError, match="mu contains NaN"):
        hygrpo_loss(HyGRPOBatch(**{**vars(b), "mu": torch.full_like(b.mu, torch.nan)}))
    with pytest.raises(ValueError, match="ref_logp is required"):
        hygrpo_loss(HyGRPOBatch(**{**vars(b), "ref_logp": None}), beta=0.1)
    with pytest.raises(ValueError, match="group_ids has 3 entries"):
        group_advantages(rewards, groups[:3])
    with pytest.raises(ValueError, match="rewards must be 1-D"):
        group_advantages(rewards[:, None], groups)
    with pytest.raises(ValueError, match="NaN at valid rows"):
        continuous_advantages([0.1, float("nan")], [0, 0], [True, True])


# ---- end to end ----------------------------------------------------------------------------
def test_continuous_term_moves_a_toy_gaussian_towards_the_reward_peak():
    torch.manual_seed(0)
    target, groups, group_size = 2.0, 4, 8
    mu_param = torch.zeros(1, requires_grad=True)
    log_std = torch.full((1,), math.log(0.5))
    opt = torch.optim.Adam([mu_param], lr=0.03)
    n = groups * group_size
    for _ in range(300):
        mu = mu_param.expand(n, 1)
        with torch.no_grad():
            pose = mu + log_std.exp() * torch.randn(n, 1)
            old_lp = (-0.5 * ((pose - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
            reward = torch.exp(-((pose[:, 0] - target) ** 2))
        ids = torch.arange(n) // group_size
        valid = torch.ones(n, dtype=torch.bool)
        b = HyGRPOBatch(
            logp=torch.zeros(n, 1),
            old_logp=torch.zeros(n, 1),
            mask=torch.zeros(n, 1, dtype=torch.bool),
            adv_discrete=torch.zeros(n),
            pose=pose,
            mu=mu,
            log_std=log_std.expand(n, 1),
            old_pose_logp=old_lp,
            valid=valid,
            adv_continuous=continuous_advantages(reward, ids, valid),
        )
        loss, _ = hygrpo_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(mu_param.item() - target) < 0.5


def test_pose_rewards_weigh_each_tasks_pose_components():
    """D's reward is the weighted sum of the task's pose components: the retriever's alone for
    text2pose by default, plus the joint term when rewards.weights gives text2pose one."""
    import numpy as np
    import pyarrow as pa

    from poserft.learner.learner import pose_rewards

    scored = pa.Table.from_pylist(
        [
            {"task": "text2pose", "reward_semantic": 0.4, "reward_joint": 0.5},
            {"task": "image2pose", "reward_semantic": None, "reward_joint": 0.8},
            {"task": "pose2text", "reward_semantic": None, "reward_joint": None},
            {"task": "text2pose", "reward_semantic": 0.1, "reward_joint": None},
        ]
    )
    default = pose_rewards(scored)
    assert default[:2].tolist() == pytest.approx([0.4, 0.8]) and np.isnan(default[2])
    assert default[3] == pytest.approx(0.1)
    mixed = pose_rewards(scored, {"text2pose": {"format": 1.0, "semantic": 1.0, "joint": 2.0}, "image2pose": {}})
    assert mixed[0] == pytest.approx(0.4 + 2.0 * 0.5)
    assert np.isnan(mixed[1]) and np.isnan(mixed[3])  # no weighted pose reward / a weighted one is null
