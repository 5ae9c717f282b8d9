"""Reward workers as Ray actors, and a pool that batches, times out, restarts and retries.

`RewardPool.score(table)` splits a batch into chunks, sends them to the workers, and returns
the table with reward columns, every row exactly once and in input order. A worker that dies
(or exceeds the per-call timeout, after which it is killed) is restarted by Ray
(`max_restarts=-1`) and its chunk is sent again. A chunk that fails `max_attempts` times comes
back with null rewards and the reason in `reward_error`, so nothing is silently zero.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pyarrow as pa
import ray
from ray.exceptions import RayError

from poserft.common.schemas import REWARD_COMPONENTS
from poserft.reward_service.rewards import RewardScorer, RewardSettings


@ray.remote(max_restarts=-1, max_task_retries=0)
class RewardWorker:
    """Loads the reward models once; `score(batch)` returns the batch with reward columns."""

    def __init__(self, settings: RewardSettings, worker_id: str):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.worker_id = worker_id
        self.scorer = RewardScorer(settings)
        self.batches = 0

    def ready(self) -> dict:
        return {"worker_id": self.worker_id, "pid": os.getpid(), "batches": self.batches}

    def score(self, batch: pa.Table, delay_s: float = 0.0) -> pa.Table:
        if delay_s:
            time.sleep(delay_s)  # fault-injection hook used by tests and benchmarks
        self.batches += 1
        return self.scorer.score(batch)


@dataclass
class PoolStats:
    batches: int = 0
    retries: int = 0
    timeouts: int = 0
    worker_failures: int = 0
    failed_rows: int = 0


class RewardPool:
    def __init__(
        self,
        settings: RewardSettings,
        num_workers: int = 2,
        batch_size: int = 256,
        timeout_s: float = 120.0,
        max_attempts: int = 3,
        num_cpus: float = 1.0,
        resources: dict | None = None,
        name_prefix: str = "reward",
        num_gpus: float = 0.0,
    ):
        if num_workers < 1:
            raise ValueError(f"reward pool needs at least 1 worker, got num_workers={num_workers}")
        if batch_size < 1:
            raise ValueError(f"reward batch_size must be at least 1, got {batch_size}")
        self.batch_size, self.timeout_s, self.max_attempts = batch_size, timeout_s, max_attempts
        self.stats = PoolStats()
        opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "resources": resources or {}}
        self.workers = [RewardWorker.options(**opts).remote(settings, f"{name_prefix}-{i}") for i in range(num_workers)]
        self.worker_info = ray.get([w.ready.remote() for w in self.workers])

    def score(self, table: pa.Table, delay_s: float = 0.0) -> pa.Table:
        """Score every row once; rows of chunks that keep failing carry a reward_error."""
        if table.num_rows == 0:
            raise ValueError("reward pool got an empty batch")
        chunks = [table.slice(i, self.batch_size) for i in range(0, table.num_rows, self.batch_size)]
        results: dict[int, pa.Table] = {}
        attempts = {i: 0 for i in range(len(chunks))}
        pending: dict[ray.ObjectRef, tuple[int, int, float]] = {}  # ref -> (chunk, worker, start)
        todo = list(range(len(chunks)))
        free = list(range(len(self.workers)))
        while todo or pending:
            while todo and free:
                c, w = todo.pop(0), free.pop(0)
                attempts[c] += 1
                ref = self.workers[w].score.remote(chunks[c], delay_s)
                pending[ref] = (c, w, time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            now = time.monotonic()
            for ref in ready:
                c, w, _start = pending.pop(ref)
                free.append(w)
                try:
                    results[c] = ray.get(ref)
                    self.stats.batches += 1
                except RayError as err:  # died, restarting or raised: try the chunk again
                    self.stats.worker_failures += 1
                    self._await_restart(w)  # a retry sent to a restarting actor would fail at once
                    self._retry_or_fail(
                        c, attempts, todo, results, chunks, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                    )
            for ref, (c, w, start) in list(pending.items()):
                if now - start > self.timeout_s:
                    pending.pop(ref)
                    self.stats.timeouts += 1
                    ray.kill(self.workers[w], no_restart=False)  # Ray restarts it (max_restarts=-1)
                    free.append(w)
                    self._retry_or_fail(c, attempts, todo, results, chunks, f"timed out after {self.timeout_s:.0f} s")
        return pa.concat_tables([results[i] for i in range(len(chunks))], promote_options="permissive")

    def _await_restart(self, w: int) -> None:
        """Wait (up to timeout_s) until worker `w` answers again after a failure."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(self.workers[w].ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except RayError:
                time.sleep(0.2)

    def _retry_or_fail(self, c, attempts, todo, results, chunks, reason: str) -> None:
        if attempts[c] < self.max_attempts:
            self.stats.retries += 1
            todo.append(c)
            return
        self.stats.failed_rows += chunks[c].num_rows
        results[c] = _failed_chunk(chunks[c], f"reward worker failed {attempts[c]} times: {reason}")

    def wait_ready(self, timeout_s: float = 120.0) -> list[dict]:
        """Block until every worker answers (restarted ones included); returns their info."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.worker_info = ray.get(
                    [w.ready.remote() for w in self.workers], timeout=max(1.0, deadline - time.monotonic())
                )
                return self.worker_info
            except RayError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []


def _failed_chunk(chunk: pa.Table, reason: str) -> pa.Table:
    n = chunk.num_rows
    for c in REWARD_COMPONENTS:
        chunk = chunk.append_column(f"reward_{c}", pa.nulls(n, pa.float32()))
    chunk = chunk.append_column("reward_total", pa.nulls(n, pa.float32()))
    return chunk.append_column("reward_error", pa.array([reason] * n, pa.string()))
