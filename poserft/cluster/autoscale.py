"""The rollout-pool autoscaler (`rl.rollout.autoscale`): how many rollout workers the learner needs,
decided from what the controller measures between steps. Pure Python, no Ray: the controller
feeds it and applies its decisions through the same path as `poserft scale`.

What is measured (`PoolMeter`, integrated over the controller loop's own state changes, one
`StepSignals` per learner step):
- `learner_wait_frac`: the share of the step's wall time the learner sat with nothing to train
  (no scored batch ready);
- `worker_busy_frac`: the share of worker-seconds spent generating;
- `wait_on_gen_frac`: the share of the learner's wait during which a batch was still being
  generated (at least one shard out). When it is high the learner waits for generation, and since
  a batch is split over all the idle workers, more workers shorten every shard, the last one too;
  when it is low the learner waits on something else (the reward pool, the controller);
- `idle_behind_bound_frac`: the share of worker-seconds idle while dispatch was held back by the
  staleness bound (`rl.max_staleness` batches already ahead of the learner);
- the ready-queue depth when the step started training and the groups dropped as stale.

The decision (`AutoscalePolicy.observe`), for a pool of n workers:
- grow (reason `learner_starved`) when, over the last `window_steps` steps taken as one interval
  (`window_signals`), the learner waited at least `grow_wait_frac` of the time, generation was
  under way for at least `grow_gen_frac` of that wait and, on average, no scored batch was queued. The
  new size is n / (1 - the wait share): the pool that would generate a batch in the time the
  learner now spends training one (at least n + 1, at most 2 n);
- shrink (reason `idle_behind_staleness_bound`) when, over that window, the workers sat idle
  behind the staleness bound at least `shrink_idle_frac` of their time, the learner waited less
  than half of `grow_wait_frac` and nothing was dropped as stale. The new size carries the
  measured load at `shrink_busy_frac` utilisation (at most halving; no change if that is n), so
  the smaller pool still keeps the learner fed and the next window does not grow it back;
- `below_min` / `above_max`: a pool outside [min_workers, max_workers] (after `poserft scale`) is
  brought back to the nearest bound once the cooldown after that change has passed.
After any change (a decision, `poserft scale`, a worker that joined, retired or is still waiting
for a node) the window starts over, and the first `cooldown_steps` steps after it are not counted:
they mix the old pool with the new. A `poserft scale` therefore holds until the cooldown and a
full window have been measured on the pool it asked for.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down"]
GROW, SHRINK = "learner_starved", "idle_behind_staleness_bound"
BELOW_MIN, ABOVE_MAX = "below_min", "above_max"
# Every (direction, reason) a decision can have; the Prometheus counter exports each from the start.
DECISION_KINDS: tuple[tuple[Direction, str], ...] = (
    ("up", GROW),
    ("up", BELOW_MIN),
    ("down", SHRINK),
    ("down", ABOVE_MAX),
)


@dataclass(frozen=True)
class StepSignals:
    """What the controller measured over one learner step (shares are 0..1)."""

    seconds: float  # wall time since the previous step finished
    learner_wait_frac: float
    worker_busy_frac: float
    wait_on_gen_frac: float  # 1.0 when the learner never waited
    idle_behind_bound_frac: float
    queue_depth: int = 0  # scored batches still waiting when this step's batch started training
    stale_drops: int = 0  # groups dropped as too stale during the step
    workers: int = 0  # live workers at the end of the step
    settled: bool = True  # the pool kept its size for the whole step, and no worker is pending

    def as_metrics(self) -> dict[str, float]:
        """The metrics.jsonl keys (rounded: they are measurements of a loop, not of a clock)."""
        return {
            "learner_wait_frac": round(self.learner_wait_frac, 4),
            "worker_busy_frac": round(self.worker_busy_frac, 4),
            "wait_on_gen_frac": round(self.wait_on_gen_frac, 4),
            "idle_behind_bound_frac": round(self.idle_behind_bound_frac, 4),
        }


@dataclass(frozen=True)
class Decision:
    direction: Direction
    reason: str
    workers_from: int
    workers_to: int
    detail: str  # the window's measurements, for the log line

    def describe(self) -> str:
        verb = "grow" if self.direction == "up" else "shrink"
        n_from, n_to = self.workers_from, self.workers_to
        return f"autoscale: {verb} {n_from} -> {n_to} rollout workers ({self.reason}: {self.detail})"


@dataclass
class PoolMeter:
    """Integrates the controller's state between learner steps: call `mark` whenever the loop has
    changed something (the state given holds from this call to the next), `take` at each step."""

    now: float
    _state: tuple | None = None  # (learner_busy, busy_workers, workers, bound_blocked, pending)
    _acc: dict = field(default_factory=dict)
    _sizes: set = field(default_factory=set)
    _pending_seen: bool = False

    def mark(self, now: float, learner_busy: bool, busy_workers: int, workers: int, bound_blocked: bool, pending: int):
        dt = max(0.0, now - self.now)
        if self._state is not None and dt > 0:
            l_busy, busy, n, blocked, _ = self._state
            a = self._acc
            a["seconds"] = a.get("seconds", 0.0) + dt
            a["worker_s"] = a.get("worker_s", 0.0) + n * dt
            a["busy_s"] = a.get("busy_s", 0.0) + busy * dt
            if not l_busy:
                a["wait_s"] = a.get("wait_s", 0.0) + dt
                if busy:
                    a["wait_on_gen_s"] = a.get("wait_on_gen_s", 0.0) + dt
            if blocked:
                a["idle_bound_s"] = a.get("idle_bound_s", 0.0) + (n - busy) * dt
        self.now = now
        self._state = (learner_busy, busy_workers, workers, bound_blocked, pending)
        self._sizes.add(workers)
        self._pending_seen |= pending > 0

    def take(self, now: float, queue_depth: int = 0, stale_drops: int = 0) -> StepSignals:
        """The step's signals; starts the next step's interval."""
        if self._state is not None:
            self.mark(now, *self._state)
        a = self._acc
        seconds, worker_s, wait_s = a.get("seconds", 0.0), a.get("worker_s", 0.0), a.get("wait_s", 0.0)
        workers = self._state[2] if self._state is not None else 0
        signals = StepSignals(
            seconds=seconds,
            learner_wait_frac=wait_s / seconds if seconds else 0.0,
            worker_busy_frac=a.get("busy_s", 0.0) / worker_s if worker_s else 0.0,
            wait_on_gen_frac=a.get("wait_on_gen_s", 0.0) / wait_s if wait_s else 1.0,
            idle_behind_bound_frac=a.get("idle_bound_s", 0.0) / worker_s if worker_s else 0.0,
            queue_depth=queue_depth,
            stale_drops=stale_drops,
            workers=workers,
            settled=len(self._sizes) <= 1 and not self._pending_seen,
        )
        self._acc = {}
        self._sizes = {workers} if self._state is not None else set()
        self._pending_seen = bool(self._state and self._state[4])
        return signals


def window_signals(steps: list[StepSignals]) -> StepSignals:
    """The window as one interval: shares weighted by each step's seconds (the generation share by
    its seconds of waiting), queue depth averaged, stale drops summed. Steps alternate (a batch
    that finished while the learner trained makes the next step short), so the window decides
    on the whole, not on each step."""
    total = sum(x.seconds for x in steps) or 1.0
    waited = sum(x.seconds * x.learner_wait_frac for x in steps)

    def share(name: str) -> float:
        return sum(x.seconds * getattr(x, name) for x in steps) / total

    on_gen = sum(x.seconds * x.learner_wait_frac * x.wait_on_gen_frac for x in steps) / waited if waited else 1.0
    return StepSignals(
        seconds=total,
        learner_wait_frac=waited / total,
        worker_busy_frac=share("worker_busy_frac"),
        wait_on_gen_frac=on_gen,
        idle_behind_bound_frac=share("idle_behind_bound_frac"),
        queue_depth=sum(x.queue_depth for x in steps) / len(steps),
        stale_drops=sum(x.stale_drops for x in steps),
        workers=steps[-1].workers,
        settled=all(x.settled for x in steps),
    )


class AutoscalePolicy:
    """The decision rule of the module docstring. `settings` is an `AutoscaleConfig` (or anything
    with its fields)."""

    def __init__(self, settings, workers: int):
        self.s = settings
        self.workers = workers  # the pool size the policy believes in (its own or `poserft scale`'s)
        self.window: deque[StepSignals] = deque(maxlen=settings.window_steps)
        self.cooldown = settings.cooldown_steps  # the first steps carry start-up and the pipeline filling

    def override(self, workers: int) -> None:
        """`poserft scale` (or a worker that could not be placed) set the pool: hold a full window."""
        self.workers = workers
        self._restart()

    def _restart(self) -> None:
        self.window.clear()
        self.cooldown = self.s.cooldown_steps

    def _wants(self, sig: StepSignals) -> str | None:
        s = self.s
        if sig.learner_wait_frac >= s.grow_wait_frac and sig.wait_on_gen_frac >= s.grow_gen_frac:
            return "up" if sig.queue_depth < 0.5 else None
        if (
            sig.idle_behind_bound_frac >= s.shrink_idle_frac
            and sig.learner_wait_frac < s.grow_wait_frac / 2
            and sig.stale_drops == 0
        ):
            return "down"
        return None

    def observe(self, sig: StepSignals) -> Decision | None:
        """One step's signals; a Decision when the pool should change (the caller applies it)."""
        s, n = self.s, self.workers
        if not sig.settled:
            self._restart()
            return None
        if self.cooldown > 0:
            self.cooldown -= 1
            return None
        if n < s.min_workers or n > s.max_workers:
            to = min(max(n, s.min_workers), s.max_workers)
            bounds = f"{n} is outside [{s.min_workers}, {s.max_workers}]"
            return self._decide("up" if to > n else "down", BELOW_MIN if to > n else ABOVE_MAX, to, bounds)
        self.window.append(sig)
        if len(self.window) < s.window_steps:
            return None
        w = window_signals(list(self.window))
        wants = self._wants(w)
        if wants is None:
            return None
        wait, busy = w.learner_wait_frac, w.worker_busy_frac
        detail = (
            f"over {len(self.window)} steps the learner waited {wait:.0%} (for generation {w.wait_on_gen_frac:.0%} "
            f"of that), the workers were busy {busy:.0%}, idle behind the bound {w.idle_behind_bound_frac:.0%}"
        )
        if wants == "up":
            to = min(s.max_workers, 2 * n, max(n + 1, math.ceil(n / max(1.0 - wait, 1e-6) - 1e-9)))
            return self._decide("up", GROW, to, detail) if to > n else None
        to = max(s.min_workers, (n + 1) // 2, math.ceil(n * busy / s.shrink_busy_frac - 1e-9))
        return self._decide("down", SHRINK, to, detail) if to < n else None

    def _decide(self, direction: Direction, reason: str, to: int, detail: str) -> Decision:
        decision = Decision(direction, reason, self.workers, to, detail)
        self.workers = to
        self._restart()
        return decision
