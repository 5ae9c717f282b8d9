"""The driver loop: prompts -> rollout pool -> reward pool -> learner -> weights back to rollout.

Back-pressure is a bound on the work in flight: a rollout batch is dispatched only while the
batches ahead of it (generating, scored and waiting, training) number at most `max_staleness`,
so a batch is never trained more than `max_staleness` versions after the weights that made it;
one that would be anyway (a slow worker) is dropped, counted and its prompts re-queued.
`max_staleness: 0` is the synchronous on-policy mode.

Run state lives in `run_dir`: `ledger.jsonl` (task ids trained per step), `metrics.jsonl`
(one line per step: stage times, rewards, losses), `rollouts/step_*.parquet` (every scored
rollout) and `checkpoints/latest` (policy + optimizer + this loop's position, atomically).

The classes behind the three roles come from a `Roles` (default: the real ones); a simulation
(`poserft.cluster.simulate`, `benchmarks/bench_scale.py`) swaps in actors that sleep for
modelled durations, while this loop stays the code that runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.exceptions import RayError

from poserft.cluster.metrics import StepMetrics  # [metrics]
from poserft.cluster.placement import bundle, check_feasible, placed_options, release
from poserft.common.config import Config
from poserft.common.dataset import load_split
from poserft.learner.learner import LearnerCore, add_advantages
from poserft.reward_service.pool import RewardPool
from poserft.reward_service.rewards import RewardSettings
from poserft.rollout_workers.worker import RolloutWorkerCore

CONTROLLER_NAME = "poserft-controller"
NAMESPACE = "poserft"
TASK_JOIN = ("task", "caption", "reference_text", "target_joints", "image", "target_pose")


def _step_of(line: str) -> int | None:
    """The step of one JSON line, or None for a line cut short by a crash."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class Ledger:
    """Append-only JSON lines of the task ids trained at each step."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """On resume: forget steps after the checkpoint; they will be trained again."""
        if self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines() if _step_of(ln) is not None and _step_of(ln) <= step]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(k + "\n" for k in keep))
            os.replace(tmp, self.path)

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[dict]:
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln] if self.path.is_file() else []


@dataclass(frozen=True)
class Roles:
    """What runs each role. The rollout and learner classes get the real constructor arguments
    plus their extra keyword arguments; `reward_pool` is called like `RewardPool`."""

    rollout_worker: type = RolloutWorkerCore
    learner: type = LearnerCore
    reward_pool: Callable[..., Any] = RewardPool
    rollout_kwargs: dict = field(default_factory=dict)
    learner_kwargs: dict = field(default_factory=dict)


class Controller:
    def __init__(self, cfg: Config, sft_ckpt: str, run_dir: str, roles: Roles | None = None):
        self.cfg, self.s = cfg, cfg.rl
        self.roles = roles or Roles()
        self.sft_ckpt = str(sft_ckpt)
        self.run_dir = Path(run_dir)
        (self.run_dir / "rollouts").mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.run_dir / "checkpoints" / "latest"
        self.ledger = Ledger(self.run_dir / "ledger.jsonl")
        self.stop_requested = threading.Event()
        self.target_workers = self.s.rollout.num_workers
        self.lock = threading.Lock()
        self.counters = {"dropped_stale_groups": 0, "requeued_prompts": 0, "worker_failures": 0, "samples": 0, "tokens": 0}
        self.status = {"state": "starting", "step": 0, "version": 0, "workers": 0}
        self.prom = StepMetrics(counters=self.counters).serve(self.s.metrics_port)  # [metrics] no server when rl.metrics_port is null
        self.status["metrics_port"] = self.prom.port  # [metrics] the bound port (rl.metrics_port 0 = any free one)

    # ---- control API (called from other threads through the named actor) ----
    def scale(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"rollout workers must be at least 1, got {n}")
        self.target_workers = n
        return n

    def request_stop(self) -> bool:
        self.stop_requested.set()
        return True

    def get_status(self) -> dict:
        with self.lock:
            return {**self.status, **self.counters, "target_workers": self.target_workers}

    # ---- setup ----
    def _load_tasks(self):
        table = load_split(self.cfg.data.dir, "train")
        table = table.filter(pa.compute.is_in(table["task"], pa.array(list(self.s.tasks))))
        self.tasks = {r["id"]: r for r in table.select(["id", "prompt", *TASK_JOIN]).to_pylist()}
        ids = sorted(self.tasks)
        self.order = [ids[i] for i in np.random.default_rng(self.s.seed).permutation(len(ids))]

    def _restore(self) -> str:
        """Resume from checkpoints/latest when present; returns the checkpoint to start from."""
        self.step, self.cursor, self.requeue = 0, 0, deque()
        meta_path = self.ckpt_dir / "poserft.json"
        if not meta_path.is_file():
            self.ledger.truncate_after(0)
            Ledger(self.run_dir / "metrics.jsonl").truncate_after(0)
            return self.sft_ckpt
        state = json.loads(meta_path.read_text())["controller"]
        self.step, self.cursor, self.requeue = state["step"], state["cursor"], deque(state["requeue"])
        self.counters.update(state["counters"])
        self.ledger.truncate_after(self.step)
        Ledger(self.run_dir / "metrics.jsonl").truncate_after(self.step)  # steps after the checkpoint run again
        print(f"resuming {self.run_dir} at step {self.step} (policy version {state['version']})", flush=True)
        return str(self.ckpt_dir)

    def _new_worker(self, idx: int, start_ckpt: str):
        r = self.s.rollout
        opts, pg = placed_options("rollout worker", r.num_cpus, r.num_gpus, r.resources)
        cls = ray.remote(max_restarts=0)(self.roles.rollout_worker)
        engine_kwargs = {"kv_cache_mb": r.kv_cache_mb, "tensor_parallel_size": r.tensor_parallel_size} if r.engine == "vllm" else {}
        w = cls.options(**opts).remote(start_ckpt, f"rollout-{idx}", r.engine, self.s.sampling.model_dump(), engine_kwargs, r.threads,
                                       **self.roles.rollout_kwargs)
        return {"actor": w, "pg": pg, "id": f"rollout-{idx}", "busy": None, "retire": False}

    def _sync_new_worker(self, w) -> None:
        """A new worker loads the newest weights before it takes work."""
        version = ray.get(w["actor"].get_version.remote())
        if version < self.version and self.weights_ref is not None:
            ray.get(w["actor"].update_weights.remote(self.version, self.weights_ref))

    def setup(self):
        self._load_tasks()
        start = self._restore()
        lr_ = self.s.learner
        opts, self.learner_pg = placed_options("learner", lr_.num_cpus, lr_.num_gpus, lr_.resources)
        self.learner = ray.remote(max_restarts=0)(self.roles.learner).options(**opts).remote(
            self.sft_ckpt, self.s, lr_.threads, str(self.ckpt_dir) if start != self.sft_ckpt else None,
            **({"model": self.cfg.model} if self.roles.learner is LearnerCore else {}), **self.roles.learner_kwargs
        )
        self.version, self.weights_ref = ray.get(self.learner.publish.remote())
        rw = self.s.reward
        check_feasible("reward worker", bundle(rw.num_cpus, rw.num_gpus, rw.resources))  # an infeasible pool would wait forever
        settings = RewardSettings(weights=self.cfg.rewards.weights, joint_tau_m=self.cfg.rewards.joint_tau_m,
                                  retriever_dir=self.cfg.rewards.retriever_dir, smpl_dir=self.cfg.body.smpl_dir)
        self.rewards = self.roles.reward_pool(settings, num_workers=self.cfg.rewards.num_workers, batch_size=self.cfg.rewards.batch_size,
                                              timeout_s=self.cfg.rewards.timeout_s, num_cpus=rw.num_cpus, resources=rw.resources,
                                              **({"num_gpus": rw.num_gpus} if rw.num_gpus else {}))
        self.start_ckpt = start
        self.next_worker_idx = 0
        self.workers = []
        self._apply_scaling()

    def _apply_scaling(self) -> None:
        live = [w for w in self.workers if not w["retire"]]
        while len(live) < self.target_workers:
            w = self._new_worker(self.next_worker_idx, self.start_ckpt)
            self.next_worker_idx += 1
            self._sync_new_worker(w)
            self.workers.append(w)
            live.append(w)
            print(f"added {w['id']} (now {len(live)} rollout workers)", flush=True)
        for w in live[self.target_workers :]:
            w["retire"] = True  # removed once idle, so its batch is not lost
        for w in [w for w in self.workers if w["retire"] and w["busy"] is None]:
            ray.kill(w["actor"])
            release(w["pg"])
            self.workers.remove(w)
            print(f"removed {w['id']} (now {len(self.workers)} rollout workers)", flush=True)
        with self.lock:
            self.status["workers"] = len(self.workers)
        self.prom.set_workers({w["id"]: self.version for w in self.workers}, self.target_workers)  # [metrics]

    # ---- the loop ----
    def _next_prompts(self) -> list[str]:
        out = []
        while len(out) < self.s.prompts_per_step and self.requeue:
            out.append(self.requeue.popleft())
        while len(out) < self.s.prompts_per_step:
            out.append(self.order[self.cursor % len(self.order)])
            self.cursor += 1
        return out

    def _task_table(self, ids: list[str]) -> pa.Table:
        return pa.Table.from_pylist([self.tasks[i] for i in ids])

    def _requeue(self, ids) -> None:
        self.requeue.extendleft(reversed(list(ids)))
        self.counters["requeued_prompts"] += len(ids)

    def run(self) -> dict:
        self.setup()
        s = self.s
        inflight: dict = {}  # rollout ref -> (worker, ids, t_start)
        ready: deque = deque()  # (scored table, ids, timings)
        training = None  # (ref, ids, timings, batch_version)
        t_run = time.time()
        with self.lock:
            self.status.update(state="running", step=self.step, version=self.version)
        while self.step < s.steps:
            stopping = self.stop_requested.is_set()
            if training is None and not inflight and not ready and stopping:
                break
            self._apply_scaling()
            # 1. dispatch: bounded by max_staleness
            for w in self.workers:
                ahead = len(inflight) + len(ready) + (training is not None)
                if stopping or w["busy"] is not None or w["retire"] or ahead > s.max_staleness:
                    continue
                if self.step + ahead >= s.steps:
                    break
                ids = self._next_prompts()
                ref = w["actor"].generate.remote(self._task_table(ids), s.group_size, None, s.seed + self.step)
                w["busy"] = ref
                inflight[ref] = (w, ids, time.time())
            waitable = list(inflight) + ([training[0]] if training else [])
            if not waitable and not ready:
                raise RuntimeError("controller has nothing in flight and nothing to train: no rollout worker is available")
            done, _ = ray.wait(waitable, num_returns=1, timeout=1.0) if waitable else ([], [])
            for ref in done:
                if ref in inflight:
                    w, ids, t0 = inflight.pop(ref)
                    w["busy"] = None
                    try:
                        rollout = ray.get(ref)
                    except RayError as err:
                        self._worker_failed(w, ids, err)
                        continue
                    gen_s = time.time() - t0
                    t1 = time.time()
                    scored = self.rewards.score(self._join(rollout))
                    if not self._scoreable(scored, ids):
                        continue
                    ready.append((scored, ids, {"gen_s": gen_s, "reward_s": time.time() - t1}))
                else:
                    training = self._finish_train(training)
            # 3. train the oldest ready batch if the learner is free
            if training is None and ready:
                scored, ids, timing = ready.popleft()
                batch_version = int(pa.compute.min(scored["policy_version"]).as_py())
                if self.version - batch_version > s.max_staleness:
                    self.counters["dropped_stale_groups"] += len(ids)
                    self._requeue(ids)
                    continue
                timing["staleness"] = self.version - batch_version
                timing["queue_depth"] = len(ready)
                training = (self.learner.train_step.remote(scored), ids, timing, scored, time.time())
        if training is not None:
            self._finish_train(training)
        self.checkpoint()
        with self.lock:
            self.status.update(state="finished" if self.step >= s.steps else "stopped")
        return {"steps": self.step, "version": self.version, "seconds": round(time.time() - t_run, 1), **self.counters}

    def _scoreable(self, scored: pa.Table, ids: list[str]) -> bool:
        """A batch with no scoreable row (every reward failed) goes back to the queue instead of
        to the learner; several in a row mean the reward service is broken, which is an error."""
        ok = pa.compute.and_(pa.compute.is_valid(scored["reward_total"]), pa.compute.is_null(scored["error"]))
        if pa.compute.any(ok).as_py():
            self.unscored_in_a_row = 0
            return True
        self.counters["unscored_batches"] = self.counters.get("unscored_batches", 0) + 1
        self.unscored_in_a_row = getattr(self, "unscored_in_a_row", 0) + 1
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

    def _worker_failed(self, w, ids, err) -> None:
        self.counters["worker_failures"] += 1
        self._requeue(ids)
        print(f"{w['id']} failed ({type(err).__name__}); its {len(ids)} prompts are re-queued and the worker replaced", flush=True)
        ray.kill(w["actor"])
        release(w["pg"])
        self.workers.remove(w)

    def _finish_train(self, training):
        ref, ids, timing, scored, t0 = training
        metrics = ray.get(ref)
        timing["train_s"] = time.time() - t0
        t1 = time.time()
        self.version, self.weights_ref = ray.get(self.learner.latest_weights.remote())
        refs = [w["actor"].update_weights.remote(self.version, self.weights_ref) for w in self.workers]
        failed = []
        for w, r in zip(list(self.workers), refs):
            try:
                ray.get(r)
            except RayError as err:
                failed.append((w, err))
        for w, err in failed:
            self._worker_failed(w, [], err)
        timing["sync_s"] = time.time() - t1
        self.step += 1
        n_tokens = int(sum(len(t) for t in scored["response_tokens"].to_pylist()))
        self.counters["samples"] += scored.num_rows
        self.counters["tokens"] += n_tokens
        pq.write_table(add_advantages(scored), self.run_dir / "rollouts" / f"step_{self.step:05d}.parquet", compression="zstd")
        self.ledger.append({"step": self.step, "version": self.version, "task_ids": ids})
        line = {"step": self.step, "version": self.version, "time": time.time(), "workers": len(self.workers), "samples": scored.num_rows,
                "tokens": n_tokens, **timing, **metrics, **{k: v for k, v in self.counters.items()}}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
        self.prom.observe(line, scored)  # [metrics]
        self.prom.set_workers({w["id"]: self.version for w in self.workers}, self.target_workers)  # [metrics] synced above
        print(
            f"step {self.step}/{self.s.steps} v{self.version} | gen {timing['gen_s']:.1f}s reward {timing['reward_s']:.1f}s "
            f"train {timing['train_s']:.1f}s sync {timing['sync_s']:.2f}s | reward {metrics.get('reward_total', float('nan')):.3f} "
            f"fmt {metrics.get('reward_format', float('nan')):.2f} joint {metrics.get('reward_joint', float('nan')):.3f} "
            f"sem {metrics.get('reward_semantic', float('nan')):.3f} | stale {timing['staleness']} workers {len(self.workers)}",
            flush=True,
        )
        with self.lock:
            self.status.update(step=self.step, version=self.version)
        if self.step % self.s.checkpoint_every == 0:
            self.checkpoint()
        return None

    def checkpoint(self) -> None:
        state = {"step": self.step, "version": self.version, "cursor": self.cursor, "requeue": list(self.requeue), "counters": self.counters}
        ray.get(self.learner.save.remote(str(self.ckpt_dir), {"controller": state}))

    def shutdown(self) -> None:
        self.prom.close()  # [metrics]
        for w in getattr(self, "workers", []):
            ray.kill(w["actor"])
            release(w["pg"])
        if hasattr(self, "rewards"):
            self.rewards.shutdown()
        if hasattr(self, "learner"):
            ray.kill(self.learner)
            release(self.learner_pg)


def controller_actor_class():
    return ray.remote(num_cpus=0, max_concurrency=4, max_restarts=0)(Controller)


def run_training(cfg: Config, sft_ckpt: str, run_dir: str, detached: bool = False, roles: Roles | None = None) -> dict:
    """Start (or attach to) Ray, run the named controller actor to the end; SIGTERM finishes the
    current step, checkpoints and returns. `roles`: see `Roles` (default: the real classes)."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, logging_level="ERROR")
    ctl = controller_actor_class().options(name=CONTROLLER_NAME, namespace=NAMESPACE).remote(cfg, sft_ckpt, run_dir, roles)
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
