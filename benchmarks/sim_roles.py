"""Simulated roles for scale experiments: the real controller loop with rollout workers, a learner
and a reward pool that sleep for modelled durations instead of computing.

`SimRolloutWorker`, `SimLearner` and `SimRewardPool` have the interfaces the controller uses of
`RolloutWorkerCore`, `LearnerCore` and `RewardPool`, and return tables of the real contracts
(RolloutRecord rows, reward columns), so dispatch and back-pressure, the ledger, the per-step
Parquet files, the metrics and checkpoint/resume of `poserft.cluster.controller` run unchanged
(`Roles` swaps the classes in). The actors import only the standard library, numpy and pyarrow
(`info()["heavy_modules"]` lists any of torch / vllm / transformers that got loaded) and ask Ray
for no GPU and almost no CPU, so 64 of them fit on a 2-core machine (each costs one Python
process, ~100 MB).

Time model (every duration is in simulated seconds; actors sleep `seconds * time_scale`)
------------------------------------------------------------------------------------------
Facts (public documents):
- NVIDIA H100 SXM5 datasheet: 80 GB HBM3 at 3.35 TB/s; BF16 Tensor Core 1,979 TFLOPS *with
  sparsity*, so 989 TFLOPS dense; NVLink 900 GB/s; PCIe Gen5 128 GB/s (both directions).
- Kaplan et al. 2020, "Scaling Laws for Neural Language Models", sec. 2.1: a forward pass costs
  about 2N FLOPs per token (N = non-embedding parameters) and forward + backward about 6N, so
  training on D tokens costs ~6ND.
- Touvron et al. 2023, "Llama 2", table 1 / sec. 2.2: the 7B model has 32 layers, model width
  4096, 32 heads and no grouped-query attention (GQA only for 34B/70B), so its KV cache holds
  2 (K,V) x 32 layers x 4096 x 2 bytes = 512 KiB per token in bf16.
- Liu et al. 2023, "Improved Baselines with Visual Instruction Tuning" (LLaVA-1.5): CLIP
  ViT-L/14 at 336 px gives 24 x 24 = 576 visual tokens per image.
- vLLM engine arguments: `gpu_memory_utilization` defaults to 0.9.

Assumptions (ours, not measured; each is a `SimModel` field and can be changed with `--model`):
- the deployed policy is a 7B LLaVA-style model with Llama-2-7B shapes, weights in bf16 (14 GB);
- prompts: text2pose 110 tokens (caption + template), image2pose 576 visual + 30 text tokens,
  pose2text 120; responses uniformly 16..80 tokens (the answer template plus a short text),
  capped by `rl.sampling.max_tokens`;
- decode reaches 80 % of HBM bandwidth; prefill 50 % and the FSDP learner 40 % of peak FLOPs
  (MFU); tensor parallelism adds two all-reduces of ~10 us per layer and decode step;
- vLLM runs at most 256 sequences at once (`max_num_seqs`) and the KV cache gets what is left of
  0.9 x 80 GB per GPU after the vLLM weights and the worker's own copy of the policy;
- weight sync: the learner gathers and publishes the bf16 state at 25 GB/s; each rollout worker
  receives and loads it at 25 GB/s plus 50 ms; transfers to different workers run in parallel
  without sharing a link, like a pipelined broadcast (optimistic for many workers pulling from
  one object store);
- reward pool: 50 ms per call plus 0.5 ms per sample on each reward worker.

Stages:
- generation of one rollout batch (B prompts x G samples) on one worker with tensor parallelism
  T: prefill of the B distinct prompts (G samples share it: 2 N tokens / (T peak MFU_prefill));
  decode simulated step by step with continuous batching (at most `max_num_seqs` sequences; a
  finished one frees its slot for the next): one step costs
  max((weights + KV bytes of the active sequences' context) / (T x HBM BW x 0.8),
      2 N active / (T peak)) + 2 x layers x 10 us (T > 1),
  i.e. ~5 ms per step at small batch for 7B on one H100, growing as KV reads dominate at large
  batch; then the pose-head prefill the worker runs through its own, unsharded copy of the
  policy over prompt + response of every sample (2 N tokens / (peak MFU_prefill)), as
  `RolloutWorkerCore.generate` does;
- learner step: (6 U + 2 [reference forward when beta or beta_c > 0] + 2 [old log-probs when the
  batch is on-policy]) N D / (GPUs peak MFU) with U = `rl.updates_per_batch`, D = prompt +
  response tokens of the batch, as `LearnerCore.train_step` computes; then publishing the weights
  (bytes / 25 GB/s);
- weight sync per rollout worker: 50 ms + bytes / 25 GB/s; reward: see above.
Not modelled: engine start-up, checkpoint writing time, stragglers and failures. The controller's
own work (joins, advantages, Parquet, ledger, Ray calls) is real and takes real time, which the
un-scaling multiplies by 1 / time_scale, so keep time_scale large enough that it stays small.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# This module lives beside the benchmarks, outside the installed package, so Ray's worker processes
# cannot import it by name: its classes travel to the actors by value.
import ray.cloudpickle  # noqa: E402

from poserft.common.schemas import (
    AA_DIM,
    POSE_DIM,
    POSE_RESPONSE,
    REWARD_COMPONENTS,
    ROLLOUT_RECORD_SCHEMA,
    TASK_RECORD_SCHEMA,
    VersionMismatch,
    check_rollout_request,
)

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEAVY_MODULES = ("torch", "vllm", "transformers")


def _hash(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _heavy_modules() -> list[str]:
    return [m for m in HEAVY_MODULES if m in sys.modules]


def _checkpoint_version(ckpt_dir) -> int:
    meta = Path(str(ckpt_dir)) / "poserft.json"
    return int(json.loads(meta.read_text()).get("policy_version", 0)) if meta.is_file() else 0


def _sleep_until(t0: float, seconds: float) -> None:
    """Sleep so that `seconds` have passed since perf_counter() was `t0` (the bookkeeping the
    actor did itself counts against the modelled time)."""
    left = seconds - (time.perf_counter() - t0)
    if left > 0:
        time.sleep(left)


@dataclass(frozen=True)
class SimModel:
    """Constants of the time model (see the module docstring for which are facts)."""

    time_scale: float = 0.1  # real seconds slept per simulated second
    # policy: 7B LLaVA-style, Llama-2-7B shapes, bf16 (assumption about the deployed size)
    params: float = 7e9
    bytes_per_param: float = 2.0
    layers: int = 32
    kv_heads: int = 32
    head_dim: int = 128
    # H100 SXM5 (datasheet)
    peak_flops: float = 989e12
    hbm_bytes_per_s: float = 3.35e12
    hbm_bytes: float = 80e9
    # efficiencies and engine settings (assumptions; vLLM's default memory share)
    hbm_efficiency: float = 0.8
    prefill_mfu: float = 0.5
    learner_mfu: float = 0.4
    tp_allreduce_s: float = 10e-6  # per all-reduce; two per layer and decode step
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    pose_prefill: bool = True  # the worker's own forward for the pose head
    # roles (filled from the config by `sim_config`)
    rollout_tp: int = 1
    learner_gpus: int = 8
    # workload (assumptions)
    prompt_text2pose: int = 110
    prompt_image2pose: int = 606
    prompt_pose2text: int = 120
    response_min: int = 16
    response_max: int = 80
    # weight sync and rewards (assumptions)
    publish_bytes_per_s: float = 25e9
    sync_bytes_per_s: float = 25e9
    sync_latency_s: float = 0.05
    reward_latency_s: float = 0.05
    reward_per_sample_s: float = 0.5e-3
    # a mid-run change (bench_scale.py --autoscale): generation takes gen_scale times as long for
    # batches made with policy version >= gen_scale_from_version, as longer responses would
    gen_scale: float = 1.0
    gen_scale_from_version: int = 0

    def gen_factor(self, version: int) -> float:
        return self.gen_scale if version >= self.gen_scale_from_version else 1.0

    # ---- workload ----
    def prompt_len(self, task: str) -> int:
        return int(getattr(self, f"prompt_{task}"))

    def response_len(self, task_id: str, sample: int, version: int, seed: int, max_tokens: int) -> int:
        span = self.response_max - self.response_min + 1
        return min(max_tokens, self.response_min + _hash(seed, task_id, sample, version, "len") % span)

    # ---- stage durations (simulated seconds) ----
    @property
    def weight_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_param

    def decode_slots(self, tokens_per_seq: float) -> int:
        """Sequences vLLM runs at once: max_num_seqs, or fewer when the KV cache is full."""
        kv_bytes = self.rollout_tp * self.hbm_bytes * self.gpu_memory_utilization - 2 * self.weight_bytes
        by_memory = int(kv_bytes // (self.kv_bytes_per_token * max(1.0, tokens_per_seq)))
        return max(1, min(self.max_num_seqs, by_memory))

    def decode_seconds(self, prompt_lens: np.ndarray, response_lens: np.ndarray) -> tuple[float, int]:
        """Continuous batching, step by step: returns (seconds, decode steps)."""
        n = len(response_lens)
        slots = self.decode_slots(float(np.mean(prompt_lens + response_lens)))
        bw = self.rollout_tp * self.hbm_bytes_per_s * self.hbm_efficiency
        flops = self.rollout_tp * self.peak_flops
        comm = 2 * self.layers * self.tp_allreduce_s if self.rollout_tp > 1 else 0.0
        done = np.zeros(n, np.int64)
        active = np.arange(min(slots, n))
        nxt, seconds, steps = len(active), 0.0, 0
        while len(active):
            ctx = float(np.sum(prompt_lens[active] + done[active]))
            seconds += (
                max((self.weight_bytes + self.kv_bytes_per_token * ctx) / bw, 2 * self.params * len(active) / flops)
                + comm
            )
            steps += 1
            done[active] += 1
            active = active[done[active] < response_lens[active]]
            if len(active) < slots and nxt < n:
                add = np.arange(nxt, min(n, nxt + slots - len(active)))
                active, nxt = np.concatenate([active, add]), nxt + len(add)
        return seconds, steps

    def generation_seconds(self, prompt_lens: np.ndarray, response_lens: np.ndarray, group_size: int) -> dict:
        """One rollout batch; prompt_lens / response_lens per sample (groups are consecutive)."""
        distinct = float(np.sum(prompt_lens[::group_size]))
        prefill = 2 * self.params * distinct / (self.rollout_tp * self.peak_flops * self.prefill_mfu)
        decode, steps = self.decode_seconds(prompt_lens, response_lens)
        pose = (
            2 * self.params * float(np.sum(prompt_lens + response_lens)) / (self.peak_flops * self.prefill_mfu)
            if self.pose_prefill
            else 0.0
        )
        return {
            "prefill": prefill,
            "decode": decode,
            "pose_prefill": pose,
            "decode_steps": steps,
            "total": prefill + decode + pose,
        }

    def learner_seconds(self, tokens: int, updates: int, reference: bool, on_policy: bool) -> float:
        passes = 6 * updates + 2 * int(reference) + 2 * int(on_policy)
        return passes * self.params * tokens / (self.learner_gpus * self.peak_flops * self.learner_mfu)

    def publish_seconds(self) -> float:
        return self.weight_bytes / self.publish_bytes_per_s

    def sync_seconds(self) -> float:
        return self.sync_latency_s + self.weight_bytes / self.sync_bytes_per_s

    def reward_seconds(self, rows: int) -> float:
        return self.reward_latency_s + self.reward_per_sample_s * rows


def _list_array(lengths: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, type_))


def _vectors(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), POSE_DIM)


class SimRolloutWorker:
    """`RolloutWorkerCore`'s interface; `generate` sleeps for the modelled batch time."""

    def __init__(
        self,
        ckpt_dir: str,
        worker_id: str = "rollout-0",
        engine: str = "vllm",
        sampling: dict | None = None,
        engine_kwargs: dict | None = None,
        threads: int | None = None,
        sim: SimModel | None = None,
    ):
        self.sim = sim or SimModel()
        self.worker_id = worker_id
        self.ckpt_dir = str(ckpt_dir)
        self.engine_name = f"sim-{engine}"
        self.max_tokens = int((sampling or {}).get("max_tokens", 48))
        self.version = _checkpoint_version(ckpt_dir)
        self.batches, self.syncs, self.generate_s = 0, 0, 0.0

    # ---- info ----
    def info(self) -> dict:
        return {
            "worker_id": self.worker_id,
            "version": self.version,
            "engine": self.engine_name,
            "pid": os.getpid(),
            "heavy_modules": _heavy_modules(),
            "batches": self.batches,
            "syncs": self.syncs,
            "generate_s": self.generate_s,
        }

    def get_version(self) -> int:
        return self.version

    # ---- generation ----
    def generate(
        self, tasks: pa.Table, group_size: int, expected_version: int | None = None, seed: int = 0
    ) -> pa.Table:
        t0 = time.perf_counter()
        names = check_rollout_request(self.worker_id, self.version, tasks, group_size, expected_version)
        ids = tasks["id"].to_pylist()
        n = len(ids) * group_size
        task_ids = np.repeat(np.array(ids, dtype=object), group_size)
        samples = np.tile(np.arange(group_size, dtype=np.int32), len(ids))
        prompt_lens = np.repeat([self.sim.prompt_len(t) for t in names], group_size).astype(np.int64)
        response_lens = np.array(
            [self.sim.response_len(t, g, self.version, seed, self.max_tokens) for t, g in zip(task_ids, samples)],
            np.int64,
        )
        timing = self.sim.generation_seconds(prompt_lens, response_lens, group_size)
        seconds = timing["total"] * self.sim.gen_factor(self.version)
        rng = np.random.default_rng(_hash(seed, ids[0], self.version, self.worker_id))
        prompt_values = np.concatenate(
            [np.tile(rng.integers(4, 32000, p, dtype=np.int32), group_size) for p in prompt_lens[::group_size]]
        )
        response_values = rng.integers(4, 32000, int(response_lens.sum()), dtype=np.int32)
        logprobs = -rng.exponential(1.0, int(response_lens.sum())).astype(np.float32)
        mu = rng.normal(0.0, 0.3, (n, POSE_DIM)).astype(np.float32)
        log_std = np.full((n, POSE_DIM), -1.0, np.float32)
        pose = mu + np.exp(log_std) * rng.standard_normal((n, POSE_DIM)).astype(np.float32)
        pose_logprob = np.sum(-0.5 * ((pose - mu) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), axis=1)
        columns = {
            "task_id": pa.array(task_ids.tolist(), pa.string()),
            "group_id": pa.array([f"{t}@v{self.version}" for t in task_ids], pa.string()),
            "sample_index": pa.array(samples, pa.int32()),
            "policy_version": pa.array(np.full(n, self.version, np.int64)),
            "worker_id": pa.array([self.worker_id] * n, pa.string()),
            "prompt_tokens": _list_array(prompt_lens, prompt_values, pa.int32()),
            "response_tokens": _list_array(response_lens, response_values, pa.int32()),
            "token_logprobs": _list_array(response_lens, logprobs, pa.float32()),
            "text": pa.array([POSE_RESPONSE] * n, pa.string()),
            "has_pose": pa.array(np.ones(n, bool)),
            "mu": _vectors(mu),
            "log_std": _vectors(log_std),
            "pose": _vectors(pose),
            "pose_logprob": pa.array(pose_logprob.astype(np.float32)),
            "generation_seconds": pa.array(np.full(n, seconds / n, np.float32)),
            "error": pa.nulls(n, pa.string()),
            "pose_sample_index": pa.array(np.zeros(n, np.int32)),
        }
        table = pa.Table.from_arrays([columns[f.name] for f in ROLLOUT_RECORD_SCHEMA], schema=ROLLOUT_RECORD_SCHEMA)
        _sleep_until(t0, seconds * self.sim.time_scale)
        self.batches += 1
        self.generate_s += seconds
        return table

    # ---- weights ----
    def update_weights(self, version: int, state: dict) -> int:
        t0 = time.perf_counter()
        if not isinstance(state, dict) or not state:
            raise ValueError(f"update_weights needs a non-empty state dict, got {type(state).__name__}")
        if version <= self.version:
            raise VersionMismatch(
                f"{self.worker_id}: update to version {version} but already at {self.version}; versions must increase"
            )
        _sleep_until(t0, self.sim.sync_seconds() * self.sim.time_scale)
        self.version = version
        self.syncs += 1
        return version


class SimLearner:
    """`LearnerCore`'s interface; `train_step` sleeps for the modelled step, `save` writes the
    checkpoint metadata the controller resumes from (`poserft.json` with its `controller` state)."""

    def __init__(
        self,
        sft_ckpt: str,
        settings,
        threads: int | None = None,
        resume_dir: str | None = None,
        model=None,
        rank: int = 0,
        world_size: int = 1,
        sim: SimModel | None = None,
        reward_weights: dict | None = None,
        anchor_data=None,
    ):
        self.sim = sim or SimModel()
        self.s = settings
        self.rank, self.world_size, self.peers = rank, world_size, []
        self.version = _checkpoint_version(resume_dir or sft_ckpt)
        if resume_dir and (Path(resume_dir) / "learner_state.json").is_file():
            self.version = int(json.loads((Path(resume_dir) / "learner_state.json").read_text())["version"])
        self.weights_ref = None
        self.published_bytes = 0
        self.steps, self.busy_s = 0, 0.0

    def info(self) -> dict:
        return {
            "version": self.version,
            "pid": os.getpid(),
            "heavy_modules": _heavy_modules(),
            "steps": self.steps,
            "busy_s": self.busy_s,
        }

    def get_version(self) -> int:
        return self.version

    def attach_peers(self, peers: list) -> int:
        """Rank 0 of a data-parallel learner: the peers only stand by (the time model already
        spreads the step over every rank's GPUs, `SimModel.learner_gpus`)."""
        if self.rank != 0 or len(peers) != self.world_size - 1:
            raise ValueError(
                f"attach_peers: rank {self.rank} of {self.world_size} got {len(peers)} peers; rank 0 takes the N-1 "
                "others"
            )
        self.peers = list(peers)
        return self.world_size

    def weight_state(self) -> dict:
        return {"simulated_bytes": self.sim.weight_bytes, "version": self.version}

    def publish(self):
        """Put the (stand-in) weights in the object store once; returns (version, ref)."""
        import ray

        t0 = time.perf_counter()
        state = self.weight_state()
        self.published_bytes = int(self.sim.weight_bytes)
        self.weights_ref = ray.put(state)
        _sleep_until(t0, self.sim.publish_seconds() * self.sim.time_scale)
        return self.version, self.weights_ref

    def latest_weights(self):
        return (self.version, self.weights_ref) if self.weights_ref is not None else self.publish()

    def weight_bytes(self) -> int:
        return int(self.sim.weight_bytes)

    def train_step(self, scored: pa.Table) -> dict:
        t0 = time.perf_counter()
        keep = pc.and_(pc.is_valid(scored["reward_total"]), pc.is_null(scored["error"]))
        dropped = scored.num_rows - int(pc.sum(keep).as_py() or 0)
        scored = scored.filter(keep)
        if scored.num_rows == 0:
            raise ValueError("train_step got no scoreable rows (every reward is null or errored)")
        on_policy = bool(pc.all(pc.equal(scored["policy_version"], self.version)).as_py())
        tokens = sum(
            int(pc.sum(pc.list_value_length(scored[c])).as_py() or 0) for c in ("prompt_tokens", "response_tokens")
        )
        reference = self.s.beta > 0 or self.s.beta_c > 0
        compute_s = self.sim.learner_seconds(tokens, self.s.updates_per_batch, reference, on_policy)
        rewards = {
            c: float(pc.mean(scored[c]).as_py())
            for c in scored.schema.names
            if c.startswith("reward_") and c != "reward_error" and scored[c].null_count < scored.num_rows
        }
        _sleep_until(t0, compute_s * self.sim.time_scale)
        self.version += 1
        self.publish()
        seconds = compute_s + self.sim.publish_seconds()
        self.steps += 1
        self.busy_s += seconds
        return {
            **rewards,
            "version": self.version,
            "rows": scored.num_rows,
            "dropped_unscored_rows": dropped,
            "on_policy": on_policy,
            "learner_seconds": seconds,
            "world_size": self.world_size,
            "peers": len(self.peers),
            "sim_compute_s": compute_s,
            "sim_publish_s": self.sim.publish_seconds(),
            "sim_tokens": tokens,
        }

    def save(self, out: str, extra_meta: dict | None = None) -> str:
        """Checkpoint metadata written atomically (temporary folder, then rename over `out`)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
        meta = {"policy_version": self.version, "stage": "rl", "simulated": True, **(extra_meta or {})}
        (tmp / "poserft.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "learner_state.json").write_text(json.dumps({"version": self.version}) + "\n")
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return str(out)


class SimRewardWorker:
    """Scores a chunk with made-up but deterministic rewards after the modelled delay."""

    def __init__(self, weights: dict, worker_id: str, sim: SimModel | None = None):
        self.weights, self.worker_id, self.sim = weights, worker_id, sim or SimModel()
        self.batches = 0

    def ready(self) -> dict:
        return {
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "batches": self.batches,
            "heavy_modules": _heavy_modules(),
        }

    def score(self, batch: pa.Table, delay_s: float = 0.0) -> pa.Table:
        t0 = time.perf_counter()
        n = batch.num_rows
        tasks = np.array(batch["task"].to_pylist(), dtype=object)
        rng = np.random.default_rng(_hash(batch["group_id"][0].as_py(), n))
        values = {
            "format": np.where(batch["has_pose"].to_numpy(zero_copy_only=False), 1.0, 0.0),
            "text_similarity": rng.uniform(0.2, 0.8, n),
            "semantic": rng.uniform(-1.0, 1.0, n),
            "joint": rng.uniform(0.0, 1.0, n),
        }
        total = np.zeros(n)
        out = batch
        for c in REWARD_COMPONENTS:
            applies = np.array([c in self.weights.get(t, {}) for t in tasks], bool)
            w = np.array([self.weights.get(t, {}).get(c, 0.0) for t in tasks])
            total += np.where(applies, w * values[c], 0.0)
            out = out.append_column(f"reward_{c}", pa.array(values[c].astype(np.float32), pa.float32(), mask=~applies))
        out = out.append_column("reward_total", pa.array(total.astype(np.float32), pa.float32()))
        out = out.append_column("reward_error", pa.nulls(n, pa.string()))
        _sleep_until(t0, self.sim.reward_seconds(n) * self.sim.time_scale + delay_s)
        self.batches += 1
        return out


class SimRewardPool:
    """`RewardPool`'s interface (`score`, `shutdown`) over `SimRewardWorker` actors."""

    def __init__(
        self,
        settings,
        num_workers: int = 2,
        batch_size: int = 256,
        timeout_s: float = 120.0,
        max_attempts: int = 3,
        num_cpus: float = 1.0,
        resources: dict | None = None,
        name_prefix: str = "reward",
        num_gpus: float = 0.0,
        sim: SimModel | None = None,
    ):
        import ray

        if num_workers < 1:
            raise ValueError(f"reward pool needs at least 1 worker, got num_workers={num_workers}")
        if batch_size < 1:
            raise ValueError(f"reward batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        weights = {t: dict(w) for t, w in settings.weights.items()}
        cls = ray.remote(max_restarts=-1, max_task_retries=0)(SimRewardWorker).options(
            num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or {}
        )
        self.workers = [cls.remote(weights, f"{name_prefix}-{i}", sim) for i in range(num_workers)]
        self.worker_info = ray.get([w.ready.remote() for w in self.workers])

    def score(self, table: pa.Table, delay_s: float = 0.0) -> pa.Table:
        import ray

        if table.num_rows == 0:
            raise ValueError("reward pool got an empty batch")
        chunks = [table.slice(i, self.batch_size) for i in range(0, table.num_rows, self.batch_size)]
        refs = [self.workers[i % len(self.workers)].score.remote(c, delay_s) for i, c in enumerate(chunks)]
        return pa.concat_tables(ray.get(refs), promote_options="permissive")

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []


# ---- running a simulation (driver side; imports the controller lazily) ----


def _tiny_png() -> bytes:
    """A valid 1x1 grey PNG (the dataset check wants the signature and the IEND chunk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b"")
    )


def write_sim_dataset(out: str | Path, rows: int, tasks=("text2pose", "image2pose")) -> Path:
    """A small train split of TaskRecords (the controller reads prompts and targets from it)."""
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = _tiny_png()
    task = [tasks[i % len(tasks)] for i in range(rows)]
    zeros = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(rows * AA_DIM, np.float32)), AA_DIM)
    cols = {
        "id": pa.array([f"train-{i // len(tasks):06d}-{t}" for i, t in enumerate(task)]),
        "task": pa.array(task),
        "split": pa.array(["train"] * rows),
        "pose_id": pa.array(np.arange(rows) // len(tasks), pa.int64()),
        "prompt": pa.array([f"simulated prompt {i}" for i in range(rows)]),
        "image": pa.array([png if t == "image2pose" else None for t in task], pa.binary()),
        "target_pose": zeros,
        "target_joints": zeros,
        "reference_text": pa.array(["a simulated pose"] * rows),
        "caption": pa.array(["a simulated pose"] * rows),
    }
    pq.write_table(
        pa.Table.from_arrays([cols[f.name] for f in TASK_RECORD_SCHEMA], schema=TASK_RECORD_SCHEMA),
        out / "train.parquet",
    )
    return out


def sim_config(base: str | Path | None, overrides: list[str], sim: SimModel, data_dir: str | Path, run_dir: str | Path):
    """The run's Config (placement requests zeroed so the simulated roles fit on a small machine)
    and the SimModel with the role sizes (tensor parallelism, learner GPUs) of `base`."""
    from dataclasses import replace

    from poserft.common.config import load_config

    cfg = load_config(base, overrides)
    learner_gpus = max(1, int(cfg.rl.learner.num_gpus * cfg.rl.learner.world_size))  # every data-parallel rank's GPUs
    sim = replace(sim, rollout_tp=cfg.rl.rollout.tensor_parallel_size, learner_gpus=learner_gpus)
    zero = [
        f"rl.{role}.{k}={v}"
        for role in ("rollout", "learner", "reward")
        for k, v in (("num_cpus", 0), ("num_gpus", 0), ("resources", "{}"))
    ]
    cfg = load_config(base, [*overrides, *zero, f"data.dir={data_dir}", f"run_dir={run_dir}", "rl.metrics_port=null"])
    return cfg, sim


def run_simulation(cfg, sim: SimModel, run_dir: str | Path) -> dict:
    """Run the named controller actor (as `run_training` does) with the simulated roles."""
    from functools import partial

    import ray

    from poserft.cluster.controller import CONTROLLER_NAME, NAMESPACE, Roles, run_training

    run_dir = Path(run_dir)
    init = run_dir.parent / f"{run_dir.name}_init"
    init.mkdir(parents=True, exist_ok=True)
    (init / "poserft.json").write_text(json.dumps({"policy_version": 0, "stage": "sim"}) + "\n")
    roles = Roles(
        rollout_worker=SimRolloutWorker,
        learner=SimLearner,
        reward_pool=partial(SimRewardPool, sim=sim),
        rollout_kwargs={"sim": sim},
        learner_kwargs={"sim": sim},
    )
    result = run_training(cfg, str(init), str(run_dir), roles=roles)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the next run reuses the controller's name
        try:
            ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
        except ValueError:
            break
        time.sleep(0.1)
    return result


def summarise(run_dir: str | Path, time_scale: float, group_size: int, workers: int) -> dict:
    """Throughput, learner and rollout utilisation and staleness of a finished run, in simulated
    units, over the steps after the first (the first carries start-up and the pipeline filling)."""
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    if len(lines) < 3:
        raise RuntimeError(f"{run_dir}: only {len(lines)} steps recorded; need at least 3")
    steady = lines[1:]
    wall = (steady[-1]["time"] - lines[0]["time"]) / time_scale
    samples = steady[-1]["samples"] - lines[0]["samples"]  # running totals
    # modelled generation seconds of each trained batch (the rows carry batch seconds / rows)
    gen_model = [
        float(
            pc.sum(
                pq.read_table(run_dir / "rollouts" / f"step_{ln['step']:05d}.parquet", columns=["generation_seconds"])[
                    "generation_seconds"
                ]
            ).as_py()
        )
        for ln in steady
    ]
    stale = [ln["staleness"] for ln in lines]
    per_step = len(steady) * time_scale
    return {
        "steps": len(lines),
        "sim_seconds": wall,
        "s_per_step": wall / len(steady),
        "samples_per_s": samples / wall,
        "groups_per_s": samples / group_size / wall,
        "learner_util": sum(ln["learner_seconds"] for ln in steady) / wall,
        "rollout_util": sum(gen_model) / (wall * workers),
        "gen_batches_per_step_time": sum(gen_model) / wall,
        "mean_staleness": sum(stale) / len(stale),
        "max_staleness_seen": max(stale),
        "gen_model_s": sum(gen_model) / len(gen_model),
        "learner_s": sum(ln["learner_seconds"] for ln in steady) / len(steady),
        "gen_s": sum(ln["gen_s"] for ln in steady) / per_step,
        "reward_s": sum(ln["reward_s"] for ln in steady) / per_step,
        "train_s": sum(ln["train_s"] for ln in steady) / per_step,
        "sync_s": sum(ln["sync_s"] for ln in steady) / per_step,
        "real_s_per_step": wall * time_scale / len(steady),
    }
