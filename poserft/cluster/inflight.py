"""What the controller tracks while steps are under way, as small records instead of dicts and
tuples: a rollout worker (`WorkerHandle`), a batch while its shards generate (`GeneratingBatch`),
a scored batch waiting for the learner (`ReadyBatch`), a learner step (`InFlightStep`); and the
stage timer whose names are the keys of metrics.jsonl (`gen_s`, `reward_s`, `train_s`, ...).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa


def split_even(ids: list[str], n: int) -> list[list[str]]:
    """`ids` in order as min(n, len(ids)) contiguous parts whose sizes differ by at most one."""
    n = min(n, len(ids))
    size, extra = divmod(len(ids), n)
    parts, start = [], 0
    for k in range(n):
        end = start + size + (k < extra)
        parts.append(ids[start:end])
        start = end
    return parts


def record_stage(name: str, timings: dict, start: float, end: float | None = None) -> float:
    """Write a stage's seconds under its metrics key (`<name>_s`); for stages that span several
    turns of the loop (`gen`, `train`), measured from `start` (time.time()) to `end` or now."""
    timings[f"{name}_s"] = seconds = (time.time() if end is None else end) - start
    return seconds


@contextmanager
def stage_timer(name: str, timings: dict):
    """Time the block as stage `name` (see `record_stage`)."""
    start = time.time()
    try:
        yield
    finally:
        record_stage(name, timings, start)


@dataclass
class WorkerHandle:
    """A rollout worker as the controller tracks it."""

    actor: object  # the Ray actor handle
    pg: object  # its placement group
    id: str  # rollout-<i>
    busy: object = None  # the ref of the shard it is generating, or None when idle
    retire: bool = False  # scaled away: removed once idle, so its shard is not lost
    syncs: list = field(default_factory=list)  # update_weights refs sent while busy, not yet collected
    version: int | None = None  # the policy version it is known to hold

    @property
    def idle(self) -> bool:
        return self.busy is None


@dataclass
class GeneratingBatch:
    """One learner step's prompts while they generate, split into shards (one per worker)."""

    ids: list[str]  # every prompt of the batch, in queue order
    t0: float  # dispatch time
    pending: dict = field(default_factory=dict)  # shard ref -> (shard index, worker, shard ids)
    tables: dict = field(default_factory=dict)  # shard index -> rollout table of a returned shard
    lost: set = field(default_factory=set)  # prompts of failed shards (already re-queued)
    shards: int = 0
    t_last: float = 0.0  # when the last shard returned

    def partly_returned(self) -> bool:
        return 0 < len(self.pending) < self.shards

    def kept_ids(self) -> list[str]:
        return [i for i in self.ids if i not in self.lost]


@dataclass
class ReadyBatch:
    """A scored batch waiting for the learner."""

    scored: pa.Table
    ids: list[str]  # the prompts it trains (failed shards' prompts excluded)
    timing: dict  # stage seconds so far (gen, reward) and shard counts


@dataclass
class InFlightStep:
    """A learner step under way."""

    ref: object  # of learner.train_step
    batch: ReadyBatch
    t0: float  # when it was handed to the learner
