"""The driver loop: prompts -> rollout pool -> reward pool -> learner -> weights back to rollout.

Back-pressure is a bound on the work in flight: a rollout batch (one learner step's prompts) is
dispatched only while the batches ahead of it (generating, scored and waiting, training) number
at most `max_staleness`, so a batch is never trained more than `max_staleness` versions after
the weights that made it; one that would be anyway (a slow worker) is dropped, counted and its
prompts re-queued. `max_staleness: 0` is the synchronous on-policy mode.

Sharding: a batch is split by prompt (a prompt's G samples stay together) over the rollout
workers that are idle when it is dispatched, as evenly as possible (never an empty shard); all
shards are sent the current policy version as `expected_version`, so a worker holding another
version fails the call instead of generating with the wrong weights. The batch is ready when
every shard has returned; its table is the shards' concatenation in prompt order, scored by
the reward pool once per batch, and its `gen_s` runs from dispatch to the last shard's return.
A failed shard's prompts are re-queued and the batch goes on with the other shards (trained on
fewer prompts; the ledger names exactly those); a batch with no surviving shard is dropped.
While a batch is partly returned no new batch is dispatched, so the workers that finished first
start the next batch together with the rest instead of taking it alone.

Weight sync: after each learner step every worker is sent `update_weights`; the controller
waits only for the idle ones (`sync_s` in metrics.jsonl is this blocking part). A busy worker
runs the update after its current `generate` (Ray runs an actor's calls in submission order, so
before any later `generate`); its result is collected when it arrives (`sync_deferred` counts
these per step) and a failed one is a worker failure: the worker is removed, its shard, if any,
re-queued. When a scored batch is already waiting, the learner starts on it before the weight
sync and this step's bookkeeping (except on checkpoint steps, which are saved first).

Run state lives in `run_dir`: `ledger.jsonl` (task ids trained per step), `metrics.jsonl`
(one line per step: stage times, rewards, losses), `rollouts/step_*.parquet` (every scored
rollout; `RunLog` writes these three) and `checkpoints/latest` (policy + optimizer + this
loop's position, atomically).

Stages: every step's times are measured under the names of its metrics keys (`gen`, `reward`,
`train`, `sync`, and `checkpoint` on checkpoint steps; `sleep`/`wake` with colocation), each
written as `<name>_s` by `stage_timer` or `record_stage`.

The classes behind the three roles come from a `Roles` (default: the real ones; the interfaces
are the `Protocol`s of `poserft.cluster.roles`); a simulation (`benchmarks/sim_roles.py`,
`benchmarks/bench_scale.py`) swaps in actors that sleep for modelled durations, while this loop
stays the code that runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
from ray.exceptions import RayError

from poserft.cluster.autoscale import AutoscalePolicy, PoolMeter
from poserft.cluster.inflight import (
    GeneratingBatch,
    InFlightStep,
    ReadyBatch,
    WorkerHandle,
    record_stage,
    split_even,
    stage_timer,
)
from poserft.cluster.metrics import StepMetrics
from poserft.cluster.placement import (
    PendingGroup,
    ask_group,
    bundle,
    check_feasible,
    placed_group_options,
    release,
    request_capacity,
    wait_placed,
)
from poserft.cluster.roles import Roles
from poserft.cluster.runlog import Ledger, RunLog
from poserft.common.config import Config, ConfigError
from poserft.common.schemas import response_rows
from poserft.data.mixture import load_mixture, short_text2pose_dropped
from poserft.learner.anchor import no_short_rows
from poserft.learner.learner import add_advantages
from poserft.reward_service.rewards import RewardSettings
from poserft.rollout_workers.engine import engine_kwargs
from poserft.tracking import Trackers

__all__ = [
    "CONTROLLER_NAME",
    "NAMESPACE",
    "Controller",
    "Ledger",
    "Roles",
    "controller_actor_class",
    "prompt_order",
    "run_training",
]

CONTROLLER_NAME = "poserft-controller"
NAMESPACE = "poserft"
TASK_JOIN = ("task", "caption", "reference_text", "target_joints", "image", "target_pose")


def prompt_order(ids: list[str], seed: int) -> list[str]:
    """The order the controller walks the prompts: sorted ids, permuted by `rl.seed`."""
    ids = sorted(ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


class Controller:
    def __init__(self, cfg: Config, sft_ckpt: str, run_dir: str, roles: Roles | None = None):
        self.cfg, self.s = cfg, cfg.rl
        self.roles = roles or Roles()
        self.sft_ckpt = str(sft_ckpt)
        self.run_dir = Path(run_dir)
        self.log = RunLog(self.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints" / "latest"
        self.stop_requested = threading.Event()
        self.target_workers = self.s.rollout.num_workers
        self.pending: list[PendingGroup] = []  # rollout workers asked for, waiting for room on a node
        # rl.rollout.autoscale: the policy, the meter that feeds it, `poserft scale` calls not yet seen by it
        auto = self.s.rollout.autoscale
        self.autoscaler = AutoscalePolicy(auto, self.target_workers) if auto.enabled else None
        self.meter, self.manual_scale, self.stale_seen = PoolMeter(time.time()), None, 0
        self.requested_capacity: int | None = None  # bundles asked of Ray's autoscaler (request_resources)
        self.lock = threading.Lock()
        self.counters = {
            "dropped_stale_groups": 0,
            "requeued_prompts": 0,
            "worker_failures": 0,
            "unscored_batches": 0,
            "samples": 0,
            "tokens": 0,
        }
        self.unscored_in_a_row = 0
        self.status = {"state": "starting", "step": 0, "version": 0, "workers": 0}
        # the loop's position (restored from a checkpoint by _restore)
        self.step, self.cursor, self.requeue = 0, 0, deque()
        self.tasks: dict[str, dict] = {}  # task id -> the task row's columns the loop needs
        self.order: list[str] = []  # task ids in the order they are walked
        # what is in flight
        self.batches: list[GeneratingBatch] = []  # generating, in dispatch order
        self.shard_of: dict = {}  # generate ref -> its GeneratingBatch
        self.sync_of: dict = {}  # deferred update_weights ref -> its WorkerHandle
        self.ready_q: deque[ReadyBatch] = deque()  # scored, waiting for the learner
        self.training: InFlightStep | None = None
        # the roles (set up by setup())
        self.workers: list[WorkerHandle] = []
        self.next_worker_idx = 0
        self.learner, self.learner_peers, self.learner_pg = None, [], None
        self.learner_published = False
        self.rewards = None
        self.version, self.weights_ref = 0, None
        self.start_ckpt = self.sft_ckpt
        self.trackers = Trackers({})  # TensorBoard / wandb / MLflow (logging.trackers), opened by setup()
        # Prometheus exporter; no server when rl.metrics_port is null
        self.prom = StepMetrics(counters=self.counters).serve(self.s.metrics_port)
        self.status["metrics_port"] = self.prom.port  # the bound port (rl.metrics_port 0 = any free one)

    # ---- control API (called from other threads through the named actor) ----
    def scale(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"rollout workers must be at least 1, got {n}")
        self.target_workers = n
        self.manual_scale = n  # the autoscaler holds off until a full window on this pool
        return n

    def request_stop(self) -> bool:
        self.stop_requested.set()
        return True

    def get_status(self) -> dict:
        with self.lock:
            return {**self.status, **self.counters, "target_workers": self.target_workers}

    # ---- setup ----
    def _load_tasks(self):
        table = load_mixture(self.cfg.data, "train", seed=self.s.seed)  # data.dir, or the data.sources mixture
        a = self.s.anchor
        why = no_short_rows(table, a.tasks, a.max_words) if a.weight > 0 else None
        if why:  # the learner goes on without the anchor; its own warning is in the workers' log
            print(f"warning: {why}", flush=True)
        table = table.filter(pa.compute.is_in(table["task"], pa.array(list(self.s.tasks))))
        table = short_text2pose_dropped(table, self.s.text2pose_min_words)
        self.tasks = {r["id"]: r for r in table.select(["id", "prompt", *TASK_JOIN]).to_pylist()}
        self.order = prompt_order(list(self.tasks), self.s.seed)

    def _restore(self) -> str:
        """Resume from checkpoints/latest when present; returns the checkpoint to start from."""
        meta_path = self.ckpt_dir / "poserft.json"
        if not meta_path.is_file():
            self.log.truncate_after(0)
            return self.sft_ckpt
        state = json.loads(meta_path.read_text())["controller"]
        self.step, self.cursor, self.requeue = state["step"], state["cursor"], deque(state["requeue"])
        self.counters.update(state["counters"])
        self.log.truncate_after(self.step)  # steps after the checkpoint run again
        print(f"resuming {self.run_dir} at step {self.step} (policy version {state['version']})", flush=True)
        return str(self.ckpt_dir)

    def _start_learner(self, start: str) -> None:
        lr_ = self.s.learner
        opts, self.learner_pg = placed_group_options(
            "learner", lr_.world_size, lr_.num_cpus, lr_.num_gpus, lr_.resources, self.s.placement_timeout_s
        )
        resume = str(self.ckpt_dir) if start != self.sft_ckpt else None
        cls = ray.remote(max_restarts=0)(self.roles.learner)
        if self._broadcast:  # rank 0 sends weights on a second thread while it trains the next step
            opts = [{**opt, "max_concurrency": 2} for opt in opts]
        ranks = [
            cls.options(**opt).remote(
                self.sft_ckpt,
                self.s,
                lr_.threads,
                resume,
                model=self.cfg.model,
                rank=rank,
                world_size=lr_.world_size,
                reward_weights=self.cfg.rewards.weights,
                anchor_data=self.cfg.data if self.s.anchor.weight > 0 else None,
                **self.roles.learner_kwargs,
            )
            for rank, opt in enumerate(opts)
        ]
        self.learner, self.learner_peers = ranks[0], ranks[1:]
        self.learner_published = False  # the ranks start while the reward pool and rollout workers do

    def _await_learner(self) -> None:
        """Wait for the learner's ranks to load, then take its first weights (once)."""
        if self.learner_published:
            return
        if self.learner_peers:  # rank 0 runs every step on its peers too (LearnerCore's docstring)
            ray.get(self.learner.attach_peers.remote(self.learner_peers))
        self.version, self.weights_ref = ray.get(self.learner.publish.remote())
        self.learner_published = True

    def _start_rewards(self) -> None:
        rw = self.s.reward
        check_feasible(
            "reward worker", bundle(rw.num_cpus, rw.num_gpus, rw.resources)
        )  # an infeasible pool would wait forever
        self.rewards = self.roles.reward_pool(
            RewardSettings.from_config(self.cfg),
            num_workers=self.cfg.rewards.num_workers,
            batch_size=self.cfg.rewards.batch_size,
            timeout_s=self.cfg.rewards.timeout_s,
            num_cpus=rw.num_cpus,
            resources=rw.resources,
            **({"num_gpus": rw.num_gpus} if rw.num_gpus else {}),
        )

    def setup(self):
        self.trackers = Trackers.open(self.cfg, self.run_dir)  # one-line TrackerError before any role starts
        self.trackers.log_config(self.cfg.model_dump(mode="json"))
        self._load_tasks()
        self.start_ckpt = self._restore()
        # The learner, the reward pool and the rollout workers start at once (a vLLM engine takes
        # 25 s here and minutes on a GPU node); the first wait is for the learner's weights.
        self._start_learner(self.start_ckpt)
        self._start_rewards()
        self._apply_scaling(wait=True)
        self._await_learner()

    # ---- rollout workers ----
    def _engine_kwargs(self) -> dict:
        r = self.s.rollout
        if r.engine != "vllm":
            return {}
        return engine_kwargs(r)  # dtype, GPU memory share, TP (poserft.rollout_workers.engine)

    def _ask_worker(self) -> PendingGroup:
        """A new worker's placement group, not waited for: until a node has room it is demand for
        Ray's autoscaler. Without rl.rollout.autoscale a request no node could hold is an error."""
        r = self.s.rollout
        b = bundle(r.num_cpus, r.num_gpus, r.resources)
        try:
            check_feasible("rollout worker", b)
        except ConfigError as err:
            if self.autoscaler is None:
                raise
            print(f"{err}; left pending for the autoscaler (up to rl.placement_timeout_s)", flush=True)
        return ask_group(b)

    def _new_worker(self, idx: int, group: PendingGroup) -> WorkerHandle:
        r = self.s.rollout
        cls = ray.remote(max_restarts=0)(self.roles.rollout_worker)
        actor = cls.options(**group.options()).remote(
            self.start_ckpt,
            f"rollout-{idx}",
            r.engine,
            self.s.sampling.model_dump(),
            self._engine_kwargs(),
            r.threads,
            **self.roles.rollout_kwargs,
        )
        return WorkerHandle(actor=actor, pg=group.pg, id=f"rollout-{idx}")

    @property
    def _broadcast(self) -> bool:
        return self.s.rollout.weight_sync == "broadcast"

    def _open_channel(self, w: WorkerHandle) -> None:
        """rl.rollout.weight_sync broadcast: the learner's channels to a new worker (its policy
        copy, and its vLLM engine's workers), opened by both sides at once."""
        engine_world = ray.get(w.actor.engine_world_size.remote())
        copy_ep, engine_ep = ray.get([self.learner.new_weight_endpoint.remote() for _ in range(2)])
        engine_ep = engine_ep if engine_world else None
        ray.get(
            [
                self.learner.open_weight_channel.remote(w.id, copy_ep, engine_ep, engine_world),
                w.actor.join_weight_channel.remote(copy_ep, engine_ep),
            ]
        )

    def _broadcast_to(self, workers: list[WorkerHandle]) -> None:
        """rl.rollout.weight_sync broadcast: send the newest weights to idle `workers` and wait."""
        pairs = [
            (w, self.learner.send_weights.remote(w.id), w.actor.receive_weights.remote(self.version, self.weights_ref))
            for w in workers
        ]
        for w, sent, received in pairs:
            try:
                w.version = ray.get(received)
                ray.get(sent)
            except RayError as err:
                self.learner.close_weight_channel.remote(w.id)
                self._worker_failed(w, [], err)

    def _sync_new_worker(self, w: WorkerHandle) -> None:
        """A new worker loads the newest weights before it takes work."""
        if self._broadcast:
            self._open_channel(w)
            self._broadcast_to([w])
            if w.version != self.version:
                raise RuntimeError(
                    f"new rollout worker {w.id} got policy version {w.version}, the learner {self.version}"
                )
            return
        version = ray.get(w.actor.get_version.remote())
        if version < self.version and self.weights_ref is not None:
            version = ray.get(w.actor.update_weights.remote(self.version, self.weights_ref))
        if version != self.version:  # every generate would fail its expected_version check
            raise RuntimeError(f"new rollout worker {w.id} holds policy version {version}, the learner {self.version}")
        w.version = version

    def _remove_worker(self, w: WorkerHandle) -> None:
        self._forget_syncs(w)
        if self._broadcast:
            self.learner.close_weight_channel.remote(w.id)
        ray.kill(w.actor)
        release(w.pg)
        self.workers.remove(w)

    def _apply_scaling(self, wait: bool = False) -> None:
        """Bring the pool to `target_workers`: ask for the groups of missing workers, start those
        whose group is placed (`wait`: at start, wait for them), retire the extra ones."""
        live = [w for w in self.workers if not w.retire]
        while len(live) + len(self.pending) < self.target_workers:
            self.pending.append(self._ask_worker())
        while self.pending and len(live) + len(self.pending) > self.target_workers:
            release(self.pending.pop().pg)  # asked for but not placed yet: nothing to lose
        self._request_capacity()
        started = []  # every placed worker starts its engine before the first one is waited for
        for group in list(self.pending):
            timeout = self.s.placement_timeout_s
            if wait and not wait_placed(group.pg, "rollout worker", group.bundle, timeout):
                raise TimeoutError(
                    f"rollout worker: the cluster has no free room for {group.bundle} on one node after "
                    f"{timeout:.0f} s (rl.placement_timeout_s); add nodes or lower the request"
                )
            if not group.placed():
                if time.monotonic() - group.since > timeout:
                    self._give_up(group, [*live, *started])
                continue
            self.pending.remove(group)
            started.append(self._new_worker(self.next_worker_idx, group))
            self.next_worker_idx += 1
        if started:
            self._await_learner()  # a no-op after the start
        for w in started:
            self._sync_new_worker(w)  # waits for w's constructor, then loads the newest weights
            self.workers.append(w)
            live.append(w)
            print(f"added {w.id} (now {len(live)} rollout workers)", flush=True)
        for w in live[self.target_workers :]:
            w.retire = True  # removed once idle, so its shard is not lost
        for w in [w for w in self.workers if w.retire and w.idle]:
            self._remove_worker(w)  # a retired worker's pending updates no longer matter
            print(f"removed {w.id} (now {len(self.workers)} rollout workers)", flush=True)
        with self.lock:
            self.status.update(workers=len(self.workers), pending_workers=len(self.pending))
        self.prom.set_workers({w.id: w.version for w in self.workers}, self.target_workers)

    def _give_up(self, group: PendingGroup, live: list[WorkerHandle]) -> None:
        """A worker's group found no room within rl.placement_timeout_s: train on with the rest."""
        self.pending.remove(group)
        release(group.pg)
        self.target_workers = len(live) + len(self.pending)
        if not self.target_workers:
            raise TimeoutError(f"no rollout worker could be placed within {self.s.placement_timeout_s:.0f} s")
        print(
            f"rollout worker: no room for {group.bundle} after {self.s.placement_timeout_s:.0f} s "
            f"(rl.placement_timeout_s); going on with {self.target_workers}",
            flush=True,
        )
        if self.autoscaler is not None:
            self.autoscaler.override(self.target_workers)

    def _request_capacity(self) -> None:
        """rl.rollout.autoscale: keep the request to Ray's autoscaler equal to the target pool, so
        growth is asked for at once and a shrink frees nodes (placement.request_capacity)."""
        if self.autoscaler is None or self.requested_capacity == self.target_workers:
            return
        r = self.s.rollout
        request_capacity([bundle(r.num_cpus, r.num_gpus, r.resources)] * self.target_workers)
        self.requested_capacity = self.target_workers

    def _measure(self) -> None:
        """The pool's state from now on, integrated by the autoscaler's meter (each turn of the loop)."""
        if self.autoscaler is None:
            return
        ahead = len(self.batches) + len(self.ready_q) + (self.training is not None)
        self.meter.mark(
            time.time(),
            learner_busy=self.training is not None,
            busy_workers=sum(not w.idle for w in self.workers),
            workers=len(self.workers),
            bound_blocked=ahead > self.s.max_staleness,
            pending=len(self.pending),
        )

    def _autoscale_step(self, timing: dict) -> dict:
        """Between steps: this step's measurements go to the policy; a decision sets the target,
        which _apply_scaling reaches as it does for `poserft scale`. Returns metrics.jsonl keys."""
        if self.autoscaler is None:
            return {}
        dropped = self.counters["dropped_stale_groups"]
        signals = self.meter.take(time.time(), timing.get("queue_depth", 0), stale_drops=dropped - self.stale_seen)
        self.stale_seen = dropped
        with self.lock:
            manual, self.manual_scale = self.manual_scale, None
        if manual is not None:
            self.autoscaler.override(manual)
        decision = self.autoscaler.observe(signals)
        out = signals.as_metrics()
        if decision is not None:
            self.target_workers = decision.workers_to
            self.prom.autoscale_decision(decision.direction, decision.reason)
            print(decision.describe(), flush=True)
            out.update(autoscale_direction=decision.direction, autoscale_reason=decision.reason)
        return {**out, "target_workers": self.target_workers}

    def _worker_failed(self, w: WorkerHandle, ids, err) -> None:
        """Replace a worker whose call failed; `ids` and the shard it still generates are re-queued."""
        if w.busy is not None:  # its generate would follow the failed update: take the shard back now
            batch = self.shard_of.pop(w.busy)
            _, _, part = batch.pending.pop(w.busy)
            batch.lost.update(part)
            ids = [*ids, *part]
            w.busy = None
        self.counters["worker_failures"] += 1
        self._requeue(ids)
        print(
            f"{w.id} failed ({type(err).__name__}); its {len(ids)} prompts are re-queued and the worker replaced",
            flush=True,
        )
        self._remove_worker(w)

    def _forget_syncs(self, w: WorkerHandle) -> None:
        for r in w.syncs:
            self.sync_of.pop(r, None)
        w.syncs = []

    # ---- the loop ----
    def run(self) -> dict:
        self.setup()
        t_run = time.time()
        with self.lock:
            self.status.update(state="running", step=self.step, version=self.version)
        while self.step < self.s.steps:
            stopping = self.stop_requested.is_set()
            if self.training is None and not self.batches and not self.ready_q and stopping:
                break
            self._apply_scaling()
            self._dispatch(stopping)  # 1. generate: bounded by max_staleness, sharded over the idle workers
            self._measure()  # (rl.rollout.autoscale) what the pool does while the loop waits
            self._collect()  # 2. whatever finished: shards, deferred weight updates, the learner step
            self._score_complete_batches()  # 3. reward: batches whose shards are all back
            if self.training is None:  # 4. train the oldest ready batch if the learner is free
                self.training = self._start_training()
            self._measure()
        if self.training is not None:
            self._finish_step(self.training, start_next=False)
        self.checkpoint()
        self._close_trackers()
        with self.lock:
            self.status.update(state="finished" if self.step >= self.s.steps else "stopped")
        return {"steps": self.step, "version": self.version, "seconds": round(time.time() - t_run, 1), **self.counters}

    def _next_prompts(self) -> list[str]:
        out = []
        while len(out) < self.s.prompts_per_step and self.requeue:
            out.append(self.requeue.popleft())
        while len(out) < self.s.prompts_per_step:
            out.append(self.order[self.cursor % len(self.order)])
            self.cursor += 1
        return out

    def _requeue(self, ids) -> None:
        self.requeue.extendleft(reversed(list(ids)))
        self.counters["requeued_prompts"] += len(ids)

    def _dispatch(self, stopping: bool) -> None:
        """Start batches while the staleness bound allows: each split over the idle workers."""
        s = self.s
        while not stopping:
            ahead = len(self.batches) + len(self.ready_q) + (self.training is not None)
            if ahead > s.max_staleness or self.step + ahead >= s.steps:
                return
            if any(b.partly_returned() for b in self.batches):
                return  # wait for the rest of that batch, then its workers start the next one together
            idle = [w for w in self.workers if w.idle and not w.retire]
            behind = [w for w in idle if w.version < self.version] if self._broadcast else []
            if behind:  # busy at the last sync: their weights come before their next shard
                self._broadcast_to(behind)
                idle = [w for w in idle if w in self.workers]
            if not idle:
                return
            batch = GeneratingBatch(self._next_prompts(), time.time())
            for k, (w, part) in enumerate(zip(idle, split_even(batch.ids, len(idle)))):
                # a pending update of w runs before this call; expected_version makes a failed one an error
                tasks = pa.Table.from_pylist([self.tasks[i] for i in part])
                ref = w.actor.generate.remote(tasks, s.group_size, self.version, s.seed + self.step)
                w.busy = ref
                batch.pending[ref] = (k, w, part)
                self.shard_of[ref] = batch
            batch.shards = len(batch.pending)
            self.batches.append(batch)

    def _collect(self) -> None:
        waitable = [*self.shard_of, *self.sync_of, *([self.training.ref] if self.training else [])]
        waitable += [g.ready for g in self.pending]  # a placed group wakes the loop to start its worker
        if not waitable and not self.ready_q:
            raise RuntimeError("controller has nothing in flight and nothing to train: no rollout worker is available")
        if not waitable:
            return
        done, rest = ray.wait(waitable, num_returns=1, timeout=1.0)
        if done and rest:  # everything else that is done by now too
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            done += more
        for ref in done:
            if ref in self.shard_of:
                self._shard_returned(ref)
            elif ref in self.sync_of:
                self._sync_returned(ref)
            elif self.training is not None and ref == self.training.ref:
                self.training = self._finish_step(self.training, start_next=True)
            # else: a ref of a worker removed while handling an earlier one in this list

    def _shard_returned(self, ref) -> None:
        batch = self.shard_of.pop(ref)
        k, w, part = batch.pending.pop(ref)
        w.busy = None
        try:
            batch.tables[k] = ray.get(ref)
        except RayError as err:
            batch.lost.update(part)
            self._worker_failed(w, part, err)
            return
        batch.t_last = time.time()

    def _sync_returned(self, ref) -> None:
        """A deferred weight update finished (after the worker's generate)."""
        w = self.sync_of.pop(ref)
        w.syncs.remove(ref)
        try:
            w.version = max(w.version, ray.get(ref))
        except RayError as err:
            self._worker_failed(w, [], err)

    def _score_complete_batches(self) -> None:
        """Batches with no shard left generating: concatenate, score once, queue for the learner."""
        for batch in [b for b in self.batches if not b.pending]:
            self.batches.remove(batch)
            if not batch.tables:
                print(f"every shard of a rollout batch failed; its {len(batch.ids)} prompts were re-queued", flush=True)
                continue
            timing = {"shards": len(batch.tables), "shards_failed": batch.shards - len(batch.tables)}
            record_stage("gen", timing, batch.t0, batch.t_last)
            rollout = pa.concat_tables([batch.tables[k] for k in sorted(batch.tables)])
            with stage_timer("reward", timing):
                scored = self.rewards.score(self._join(rollout))
            if self._scoreable(scored, batch.kept_ids()):
                self.ready_q.append(ReadyBatch(scored, batch.kept_ids(), timing))

    def _scoreable(self, scored: pa.Table, ids: list[str]) -> bool:
        """A batch with no scoreable row (every reward failed) goes back to the queue instead of
        to the learner; several in a row mean the reward service is broken, which is an error."""
        ok = pa.compute.and_(pa.compute.is_valid(scored["reward_total"]), pa.compute.is_null(scored["error"]))
        if pa.compute.any(ok).as_py():
            self.unscored_in_a_row = 0
            return True
        self.counters["unscored_batches"] += 1
        self.unscored_in_a_row += 1
        errors = [e for e in scored["reward_error"].to_pylist() if e] if "reward_error" in scored.schema.names else []
        reason = errors[0] if errors else "no reward could be computed"
        if self.unscored_in_a_row >= 3:
            raise RuntimeError(f"3 rollout batches in a row could not be scored; last reason: {reason}")
        print(f"no row of a rollout batch could be scored ({reason}); its {len(ids)} prompts are re-queued", flush=True)
        self._requeue(ids)
        return False

    def _join(self, rollout: pa.Table) -> pa.Table:
        ids = rollout["task_id"].to_pylist()
        out = rollout
        for col in TASK_JOIN:
            out = out.append_column(col, pa.array([self.tasks[i][col] for i in ids]))
        return out

    def _start_training(self) -> InFlightStep | None:
        """Give the oldest ready batch that is not too stale to the learner; drop (and re-queue)
        the stale ones before it."""
        while self.ready_q and self.step < self.s.steps:
            batch = self.ready_q.popleft()
            batch_version = int(pa.compute.min(batch.scored["policy_version"]).as_py())
            if self.version - batch_version > self.s.max_staleness:
                self.counters["dropped_stale_groups"] += len(batch.ids)
                self._requeue(batch.ids)
                continue
            batch.timing["staleness"] = self.version - batch_version
            batch.timing["queue_depth"] = len(self.ready_q)
            if self.s.rollout.colocate:  # the learner gets the devices: rollout engines release them
                with stage_timer("sleep", batch.timing):
                    ray.get([w.actor.sleep.remote() for w in self.workers])
            return InFlightStep(self.learner.train_step.remote(batch.scored), batch, time.time())
        return None

    def _finish_step(self, step: InFlightStep, start_next: bool) -> InFlightStep | None:
        """A learner step finished: sync the weights, record the step, checkpoint when due.
        Unless this step checkpoints, the next ready batch goes to the learner first, so it trains
        while the workers sync and this step is written (a checkpoint must be taken before the
        learner moves on). Returns the next step under way, or None."""
        metrics = ray.get(step.ref)
        timing = step.batch.timing
        record_stage("train", timing, step.t0)
        if self.s.rollout.colocate:  # engines take the devices back before the new weights land
            with stage_timer("wake", timing):
                ray.get([w.actor.wake_up.remote() for w in self.workers])
        self.step += 1
        checkpoint_now = self.step % self.s.checkpoint_every == 0
        following = None
        with stage_timer("sync", timing):
            self.version, self.weights_ref = ray.get(self.learner.latest_weights.remote())
            if start_next and not checkpoint_now:
                following = self._start_training()
            timing["sync_deferred"] = self._sync_weights()
        timing.update(self._autoscale_step(timing))
        self._record_step(step.batch, metrics)
        if checkpoint_now:
            with stage_timer("checkpoint", timing):
                self.checkpoint()
            print(f"checkpoint at step {self.step}: {timing['checkpoint_s']:.1f}s", flush=True)
        return following

    def _sync_weights(self) -> int:
        """Send the new weights to every worker; wait only for the idle ones. Returns how many
        updates were deferred (busy workers: collected when they arrive, see `_sync_returned`)."""
        if self._broadcast:  # busy workers get theirs in _dispatch, once idle
            idle = [w for w in self.workers if w.idle]
            self._broadcast_to(idle)
            return len(self.workers) - len(idle)
        blocking, deferred = [], 0
        for w in self.workers:
            r = w.actor.update_weights.remote(self.version, self.weights_ref)
            if w.idle:
                blocking.append((w, [*w.syncs, r]))  # earlier deferred updates run first; wait for all
                self._forget_syncs(w)
            else:
                w.syncs.append(r)
                self.sync_of[r] = w
                deferred += 1
        failed = []
        for w, refs in blocking:
            try:
                w.version = max(w.version, *ray.get(refs))
            except RayError as err:
                failed.append((w, err))
        for w, err in failed:
            self._worker_failed(w, [], err)
        return deferred

    def _record_step(self, batch: ReadyBatch, metrics: dict) -> None:
        """Write the step to the run folder (rollouts, ledger, metrics line), export it, print it."""
        timing, scored = batch.timing, batch.scored
        responses = response_rows(scored)
        n_tokens = int(sum(len(t) for t in responses["response_tokens"].to_pylist()))
        self.counters["samples"] += responses.num_rows
        self.counters["tokens"] += n_tokens
        line = {
            "step": self.step,
            "version": self.version,
            "time": time.time(),
            "workers": len(self.workers),
            "samples": responses.num_rows,
            "tokens": n_tokens,
            **timing,
            **metrics,
            **self.counters,
        }
        advantages = add_advantages(scored, self.cfg.rewards.weights, self.s.pose_advantage_scale)
        self.log.record(self.step, self.version, batch.ids, advantages, line)
        self.trackers.log_step(self.step, line)
        self.prom.observe(line, scored)
        self.prom.set_workers({w.id: w.version for w in self.workers}, self.target_workers)  # busy ones update later
        print(
            f"step {self.step}/{self.s.steps} v{self.version} | gen {timing['gen_s']:.1f}s ({timing['shards']} shards) "
            f"reward {timing['reward_s']:.1f}s train {timing['train_s']:.1f}s sync {timing['sync_s']:.2f}s "
            f"(+{timing['sync_deferred']} deferred) | reward {metrics.get('reward_total', float('nan')):.3f} "
            f"fmt {metrics.get('reward_format', float('nan')):.2f} joint "
            f"{metrics.get('reward_joint', float('nan')):.3f} "
            f"sem {metrics.get('reward_semantic', float('nan')):.3f} | stale {timing['staleness']} workers "
            f"{len(self.workers)}",
            flush=True,
        )
        with self.lock:
            self.status.update(step=self.step, version=self.version)

    def checkpoint(self) -> None:
        # Prompts generating or scored-but-untrained go back to the front of the queue on resume,
        # so a checkpoint taken with batches in flight (max_staleness >= 1) loses none of them.
        in_flight = [i for b in self.ready_q for i in b.ids]
        in_flight += [i for b in self.batches for i in b.ids if i not in b.lost]
        state = {
            "step": self.step,
            "version": self.version,
            "cursor": self.cursor,
            "requeue": in_flight + list(self.requeue),
            "counters": self.counters,
        }
        ray.get(self.learner.save.remote(str(self.ckpt_dir), {"controller": state}))

    def _close_trackers(self) -> None:
        """The run's report PNGs go to the trackers, which then finish their runs."""
        if self.trackers.names:
            from poserft.report import write_report

            try:
                write_report(self.run_dir)
            except Exception as err:  # noqa: BLE001 - a failed report costs the trackers' images, not the run
                print(f"report for the trackers failed ({type(err).__name__}: {err}); no images logged", flush=True)
            self.trackers.log_images(sorted((self.run_dir / "report").glob("*.png")))
        self.trackers.close()

    def shutdown(self) -> None:
        self.trackers.close(success=False)  # after a finished run a no-op; after a crash marks the runs failed
        self.prom.close()
        for w in list(self.workers):
            ray.kill(w.actor)
            release(w.pg)
        for group in self.pending:
            release(group.pg)
        if self.requested_capacity:
            request_capacity([])  # the autoscaler may remove the rollout nodes once idle
        if self.rewards is not None:
            self.rewards.shutdown()
        if self.learner is not None:
            for actor in [self.learner, *self.learner_peers]:
                ray.kill(actor)
            release(self.learner_pg)


def controller_actor_class():
    return ray.remote(num_cpus=0, max_concurrency=4, max_restarts=0)(Controller)


def run_training(cfg: Config, sft_ckpt: str, run_dir: str, detached: bool = False, roles: Roles | None = None) -> dict:
    """Start (or attach to) Ray, run the named controller actor to the end; SIGTERM finishes the
    current step, checkpoints and returns. `roles`: see `Roles` (default: the real classes)."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, logging_level="ERROR")
    ctl = (
        controller_actor_class()
        .options(name=CONTROLLER_NAME, namespace=NAMESPACE)
        .remote(cfg, sft_ckpt, run_dir, roles)
    )
    previous = {}

    def on_signal(signum, _frame):
        print(f"signal {signum}: finishing the current step, then checkpointing", flush=True)
        ctl.request_stop.remote()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        result = ray.get(ctl.run.remote())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            ray.get(ctl.shutdown.remote())
        except RayError:
            pass
        ray.kill(ctl)
    return result
