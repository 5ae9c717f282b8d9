"""The rollout-pool autoscaler (poserft.cluster.autoscale): the meter against hand-computed
shares, the policy's rules one by one (window, cooldown, bounds, `poserft scale`), and the closed
loop on a fluid model of the pipelined controller: it must reach the pool the learner needs,
stay there without oscillating, and follow a change of the generation time."""

import math
from types import SimpleNamespace

import pytest

from poserft.cluster.autoscale import (
    ABOVE_MAX,
    BELOW_MIN,
    DECISION_KINDS,
    GROW,
    SHRINK,
    AutoscalePolicy,
    PoolMeter,
    StepSignals,
    window_signals,
)
from poserft.common.config import AutoscaleConfig, ConfigError, load_config


def _settings(**kw):
    base = dict(enabled=True, min_workers=1, max_workers=16, window_steps=3, cooldown_steps=0)
    return AutoscaleConfig(**{**base, **kw})


def _starved(workers=1, wait=0.5, busy=1.0):
    return StepSignals(10.0, wait, busy, busy, 0.0, workers=workers)


def _idle(workers=4, busy=0.3, idle=0.7, drops=0, wait=0.0):
    return StepSignals(10.0, wait, busy, 1.0, idle, stale_drops=drops, workers=workers)


# ---- the meter ----------------------------------------------------------------------------------


def test_meter_integrates_the_loop_state_between_marks():
    m = PoolMeter(now=0.0)
    # 0..6 s: learner waits, both workers generate; 6..8 s: learner trains, one worker generates;
    # 8..10 s: learner trains, both workers idle behind the staleness bound.
    m.mark(0.0, learner_busy=False, busy_workers=2, workers=2, bound_blocked=False, pending=0)
    m.mark(6.0, learner_busy=True, busy_workers=1, workers=2, bound_blocked=False, pending=0)
    m.mark(8.0, learner_busy=True, busy_workers=0, workers=2, bound_blocked=True, pending=0)
    sig = m.take(10.0, queue_depth=1, stale_drops=3)
    assert sig.seconds == pytest.approx(10.0)
    assert sig.learner_wait_frac == pytest.approx(0.6)
    assert sig.worker_busy_frac == pytest.approx((2 * 6 + 1 * 2) / 20)
    assert sig.wait_on_gen_frac == pytest.approx(1.0)
    assert sig.idle_behind_bound_frac == pytest.approx(2 * 2 / 20)
    assert (sig.queue_depth, sig.stale_drops, sig.workers, sig.settled) == (1, 3, 2, True)
    # the next interval starts at the take, in the state last marked
    sig2 = m.take(12.0)
    assert sig2.seconds == pytest.approx(2.0) and sig2.idle_behind_bound_frac == pytest.approx(1.0)
    assert sig2.wait_on_gen_frac == 1.0  # the learner never waited


def test_meter_marks_a_step_in_which_the_pool_changed_or_waited_for_a_node():
    m = PoolMeter(now=0.0)
    m.mark(0.0, False, 1, 1, False, 0)
    m.mark(1.0, False, 1, 2, False, 0)  # a worker joined
    assert not m.take(2.0).settled
    assert m.take(3.0).settled  # the next step ran on the new pool throughout
    m.mark(3.5, True, 0, 2, False, 1)  # a group asked for and not placed
    assert not m.take(4.0).settled
    assert not m.take(5.0).settled  # still pending at the start of this step


def test_meter_counts_the_wait_during_which_generation_was_under_way():
    m = PoolMeter(now=0.0)
    m.mark(0.0, False, 1, 4, False, 0)  # learner waits for the last shard: 1 of 4 workers generating
    m.mark(4.0, False, 0, 4, False, 0)  # the batch is back, the learner still waits (scoring)
    m.mark(5.0, True, 4, 4, False, 0)
    sig = m.take(10.0)
    assert sig.wait_on_gen_frac == pytest.approx(0.8) and sig.learner_wait_frac == pytest.approx(0.5)
    assert sig.worker_busy_frac == pytest.approx((4 + 20) / 40)


# ---- the policy, rule by rule ---------------------------------------------------------------------


def test_grows_only_after_a_full_window_of_starved_steps():
    p = AutoscalePolicy(_settings(), workers=2)
    assert p.observe(_starved(2)) is None and p.observe(_starved(2)) is None
    d = p.observe(_starved(2, wait=0.5))
    assert (d.direction, d.reason, d.workers_from, d.workers_to) == ("up", GROW, 2, 4)  # 2 / (1 - 0.5)
    assert "learner waited 50%" in d.describe() and p.workers == 4


def test_growth_is_at_least_one_and_at_most_double_and_never_above_max():
    p = AutoscalePolicy(_settings(), workers=3)
    for _ in range(3):
        d = p.observe(_starved(3, wait=0.12))
    assert d.workers_to == 4  # 3 / 0.88 = 3.4 -> at least n + 1
    p = AutoscalePolicy(_settings(), workers=3)
    for _ in range(3):
        d = p.observe(_starved(3, wait=0.95))
    assert d.workers_to == 6  # 3 / 0.05 = 60 -> at most 2 n
    p = AutoscalePolicy(_settings(max_workers=5), workers=4)
    for _ in range(3):
        d = p.observe(_starved(4, wait=0.9))
    assert d.workers_to == 5
    for _ in range(6):  # at max: starved steps decide nothing
        assert p.observe(_starved(5, wait=0.9)) is None


def test_no_growth_when_the_learner_waits_on_something_other_than_the_workers():
    p = AutoscalePolicy(_settings(), workers=2)
    for _ in range(6):  # no batch generating for most of the wait (a slow reward pool, say)
        assert p.observe(StepSignals(10.0, 0.6, 0.3, 0.3, 0.0, workers=2)) is None
    for _ in range(6):  # a scored batch was queued: the learner is not starved
        assert p.observe(StepSignals(10.0, 0.6, 1.0, 1.0, 0.0, queue_depth=1, workers=2)) is None


def test_shrinks_to_the_pool_that_carries_the_load_and_at_most_halves():
    p = AutoscalePolicy(_settings(), workers=6)
    for _ in range(3):
        d = p.observe(_idle(6, busy=0.5))
    assert (d.direction, d.reason, d.workers_to) == ("down", SHRINK, 4)  # ceil(6 * 0.5 / 0.75)
    p = AutoscalePolicy(_settings(), workers=8)
    for _ in range(3):
        d = p.observe(_idle(8, busy=0.05))
    assert d.workers_to == 4  # ceil(8 * 0.05 / 0.75) = 1, but at most halve
    p = AutoscalePolicy(_settings(min_workers=3), workers=4)
    for _ in range(3):
        d = p.observe(_idle(4, busy=0.05))
    assert d.workers_to == 3


def test_no_shrink_when_the_smaller_pool_would_starve_the_learner():
    p = AutoscalePolicy(_settings(), workers=4)
    for _ in range(6):  # 4 x 0.7 / 0.75 = 3.7 -> 4: the load needs every worker
        assert p.observe(_idle(4, busy=0.7, idle=0.3)) is None


@pytest.mark.parametrize(
    "signals",
    [
        _idle(4, drops=2),  # batches went stale: fewer workers would make it worse
        _idle(4, wait=0.06),  # the learner waits (half of grow_wait_frac or more)
        _idle(4, idle=0.1),  # idle, but not behind the staleness bound
    ],
)
def test_no_shrink_without_all_of_its_conditions(signals):
    p = AutoscalePolicy(_settings(), workers=4)
    for _ in range(6):
        assert p.observe(signals) is None


def test_the_window_decides_as_one_interval():
    # pipelined steps alternate: a batch that finished during training makes the next step short
    noisy = [StepSignals(10.0, 0.66, 1.0, 1.0, 0.0, workers=2), StepSignals(4.0, 0.05, 0.6, 1.0, 0.4, workers=2)]
    w = window_signals([*noisy, noisy[0]])
    assert w.learner_wait_frac == pytest.approx((6.6 + 0.2 + 6.6) / 24)
    assert w.worker_busy_frac == pytest.approx((10 + 2.4 + 10) / 24)
    p = AutoscalePolicy(_settings(), workers=2)
    assert [p.observe(s) for s in [*noisy, noisy[0]]][-1].direction == "up"  # no single step decides alone
    # the starved share is weighted by the waiting: an idle step without waiting does not dilute it
    w = window_signals([StepSignals(10.0, 0.5, 1.0, 0.5, 0.0), StepSignals(10.0, 0.0, 0.2, 1.0, 0.8)])
    assert w.wait_on_gen_frac == pytest.approx(0.5)
    # a window that is neither starved nor idle enough holds
    p = AutoscalePolicy(_settings(), workers=4)
    for sig in [_starved(4, wait=0.2), _idle(4), _idle(4), _starved(4, wait=0.2)]:
        assert p.observe(sig) is None


def test_cooldown_and_window_restart_after_a_decision():
    p = AutoscalePolicy(_settings(cooldown_steps=2), workers=2)
    observed = [p.observe(_starved(2)) for _ in range(5)]
    assert observed[:4] == [None] * 4 and observed[4].workers_to == 4  # 2 cooldown steps at start, then 3
    assert p.observe(StepSignals(10.0, 0.5, 1.0, 1.0, 0.0, workers=3, settled=False)) is None  # still joining
    observed = [p.observe(_starved(4)) for _ in range(5)]
    assert observed[:4] == [None] * 4 and observed[4].workers_to == 8


def test_poserft_scale_holds_until_the_next_window_and_bounds_come_back():
    p = AutoscalePolicy(_settings(cooldown_steps=1, max_workers=6), workers=2)
    p.observe(_starved(2))
    p.observe(_starved(2))
    p.override(3)  # `poserft scale --rollout-workers 3`: the two starved steps no longer count
    assert [p.observe(_starved(3)) for _ in range(3)] == [None] * 3  # cooldown, then the window fills
    assert p.observe(_starved(3)).workers_to == 6
    p.override(9)  # above max_workers: brought back once the cooldown has passed, whatever the signals
    assert p.observe(_starved(9)) is None
    d = p.observe(_starved(9))
    assert (d.direction, d.reason, d.workers_to) == ("down", ABOVE_MAX, 6)
    p = AutoscalePolicy(_settings(cooldown_steps=0, min_workers=2), workers=2)
    p.override(1)
    d = p.observe(_idle(1))
    assert (d.direction, d.reason, d.workers_to) == ("up", BELOW_MIN, 2)


def test_every_decision_kind_is_declared_for_the_counter():
    assert {(d, r) for d, r in DECISION_KINDS} == {
        ("up", GROW),
        ("up", BELOW_MIN),
        ("down", SHRINK),
        ("down", ABOVE_MAX),
    }


# ---- the closed loop on a fluid model ------------------------------------------------------------


def _pipelined_step(n: int, gen_s: float, learner_s: float) -> StepSignals:
    """max_staleness >= 1: a batch takes gen_s / n on n workers (sharded), the learner learner_s;
    the step lasts as long as the slower of the two."""
    batch_s = gen_s / n
    step = max(batch_s, learner_s)
    busy = batch_s / step
    return StepSignals(step, (step - learner_s) / step, busy, 1.0, 1.0 - busy, workers=n)


def _run(policy, steps, gen_s, learner_s):
    sizes, decisions = [], []
    for _ in range(steps):
        d = policy.observe(_pipelined_step(policy.workers, gen_s, learner_s))
        if d is not None:
            decisions.append(d)
        sizes.append(policy.workers)
    return sizes, decisions


def test_closed_loop_reaches_the_needed_pool_settles_and_follows_the_generation_time():
    policy = AutoscalePolicy(_settings(max_workers=32, cooldown_steps=2), workers=1)
    learner_s = 10.0
    sizes, decisions = _run(policy, 60, gen_s=55.0, learner_s=learner_s)  # needs ceil(5.5) = 6 workers
    assert sizes[-1] == 6 and all(d.direction == "up" for d in decisions)
    assert sizes.index(6) <= 20  # 1 -> 2 -> 4 -> 6 (5 steps a decision)
    _, later = _run(policy, 100, gen_s=55.0, learner_s=learner_s)
    assert later == [], "the pool oscillates once settled"
    sizes, decisions = _run(policy, 60, gen_s=110.0, learner_s=learner_s)  # longer responses: needs 11
    assert sizes[-1] == 11 and all(d.direction == "up" for d in decisions)
    sizes, decisions = _run(policy, 80, gen_s=30.0, learner_s=learner_s)  # shorter again: 3 suffice
    assert decisions and all(d.reason == SHRINK for d in decisions)
    assert 3 <= sizes[-1] <= math.ceil(3 / 0.75) and _run(policy, 100, 30.0, learner_s)[1] == []


# ---- config ------------------------------------------------------------------------------------


def test_the_section_defaults_off_and_validates_in_one_line():
    cfg = load_config(None, [])
    assert cfg.rl.rollout.autoscale.enabled is False
    with pytest.raises(ConfigError, match=r"rl\.rollout\.autoscale\.min_workers.*above max_workers 2") as err:
        load_config(None, ["rl.rollout.autoscale.min_workers=4", "rl.rollout.autoscale.max_workers=2"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"rl\.rollout\.num_workers.*outside autoscale's \[1, 2\]"):
        load_config(
            None,
            ["rl.rollout.autoscale.enabled=true", "rl.rollout.autoscale.max_workers=2"] + ["rl.rollout.num_workers=3"],
        )
    with pytest.raises(ConfigError, match=r"rl\.rollout\.autoscale\.grow_wait_frac"):
        load_config(None, ["rl.rollout.autoscale.grow_wait_frac=0"])


def test_the_policy_takes_any_object_with_the_fields():
    fields = _settings().model_dump()
    p = AutoscalePolicy(SimpleNamespace(**fields), workers=1)
    for _ in range(3):
        d = p.observe(_starved(1, wait=0.9))
    assert d.workers_to == 2


# ---- Prometheus ---------------------------------------------------------------------------------


def test_the_decision_counter_exports_every_kind_from_the_start():
    from poserft.cluster.metrics import StepMetrics

    prom = StepMetrics()
    value = prom.registry.get_sample_value
    for direction, reason in DECISION_KINDS:
        assert value("poserft_autoscale_decisions_total", {"direction": direction, "reason": reason}) == 0.0
    prom.autoscale_decision("up", GROW)
    assert value("poserft_autoscale_decisions_total", {"direction": "up", "reason": GROW}) == 1.0
