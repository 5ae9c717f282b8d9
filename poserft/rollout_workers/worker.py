"""`RolloutWorker`: grouped hybrid sampling (text from the engine, pose from the Gaussian head).

For each task and each of G samples: the engine samples a response; a prefill of
prompt + response through the worker's copy of the policy (same weights version) gives the
hidden state at the response's first `<POSE>`, hence mu and log_std; a pose is sampled from
N(mu, std^2) with a seeded generator and its log-prob recorded. Output: RolloutRecords (Arrow).
A Ray actor runs one method at a time, so a weight update is atomic between generation calls.

Weight updates come as a full policy state or, when the learner trains LoRA adapters, as a
LoRA-only update (`poserft.model.lora`): the worker then merges W = W0 + scale * B @ A itself,
always from W0 of the checkpoint it started from (so updates never accumulate), and loads the
merged layers into vLLM and into its own copy of the policy.
"""

from __future__ import annotations

import math
import os
import time
import zlib

import numpy as np
import pyarrow as pa
import torch

from poserft.common.device import role_device
from poserft.common.schemas import ROLLOUT_RECORD_SCHEMA, VersionMismatch, check_rollout_request
from poserft.common.weight_channel import WeightChannel, receive_state
from poserft.model import lora
from poserft.model.checkpoint import load_policy
from poserft.model.generation import decode_response, pose_from_response, prompt_embeddings
from poserft.model.policy import gaussian_log_prob
from poserft.rollout_workers.engine import HFEngine, SamplingSettings, VLLMEngine


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


class RolloutWorkerCore:
    """The worker's logic, usable in-process (tests, benchmarks) or as the Ray actor below."""

    def __init__(
        self,
        ckpt_dir: str,
        worker_id: str = "rollout-0",
        engine: str = "vllm",
        sampling: dict | None = None,
        engine_kwargs: dict | None = None,
        threads: int | None = None,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if threads:
            torch.set_num_threads(threads)
        self.worker_id = worker_id
        self.sampling = SamplingSettings(**(sampling or {}))
        self.ckpt_dir = str(ckpt_dir)
        self.device = role_device("rollout worker")  # the pose prefill copy (float32) runs where the engine does
        self.policy = load_policy(ckpt_dir).eval().to(self.device)
        self._lora_base: dict[str, torch.Tensor] = {}  # W0 per adapted layer, read on the first LoRA update
        self._lora_base_key: tuple | None = None  # (unmerged, fingerprint) of that W0
        self.version = int(self.policy.meta.get("policy_version", 0))
        self.max_len = int(self.policy.meta.get("max_positions", 512))
        if engine == "vllm":
            self.engine = VLLMEngine(ckpt_dir, device=self.device, max_model_len=self.max_len, **(engine_kwargs or {}))
        elif engine == "hf":
            self.engine = HFEngine(self.policy)
        else:
            raise ValueError(f"unknown rollout engine {engine!r}; known: vllm, hf")
        self.engine_name = engine
        self.tensor_parallel_size = int((engine_kwargs or {}).get("tensor_parallel_size", 1))
        self.channel: WeightChannel | None = None  # rl.rollout.weight_sync broadcast

    # ---- info ----
    def info(self) -> dict:
        return {"worker_id": self.worker_id, "version": self.version, "engine": self.engine_name, "pid": os.getpid()}

    def get_version(self) -> int:
        return self.version

    # ---- generation ----
    def generate(
        self, tasks: pa.Table, group_size: int, expected_version: int | None = None, seed: int = 0
    ) -> pa.Table:
        names = check_rollout_request(self.worker_id, self.version, tasks, group_size, expected_version)
        if getattr(self, "asleep", False):
            raise RuntimeError(
                f"{self.worker_id} is asleep (colocated with the learner); call wake_up() before generate()"
            )
        t0 = time.perf_counter()
        ids = tasks["id"].to_pylist()
        prompts = [self.policy.encode_prompt(p) for p in tasks["prompt"].to_pylist()]
        images = [im if t == "image2pose" else None for im, t in zip(tasks["image"].to_pylist(), names)]
        pose_in = [
            np.asarray(p, np.float32) if t == "pose2text" else None
            for p, t in zip(tasks["target_pose"].to_pylist(), names)
        ]
        fits = [len(p) + self.sampling.max_tokens <= self.max_len for p in prompts]
        ok = [i for i, f in enumerate(fits) if f]
        rows: list[dict] = []
        for i, f in enumerate(fits):
            if not f:
                rows += [
                    self._error_row(
                        ids[i],
                        g,
                        prompts[i],
                        f"prompt of {len(prompts[i])} tokens + max_tokens {self.sampling.max_tokens} exceeds the "
                        f"context of {self.max_len}",
                    )
                    for g in range(group_size)
                ]
        if ok:
            with torch.no_grad():
                embeds = prompt_embeddings(
                    self.policy, [prompts[i] for i in ok], [images[i] for i in ok], [pose_in[i] for i in ok]
                )
            seeds = [_seed(seed, ids[i], self.version) for i in ok]
            groups = self.engine.generate(embeds, group_size, self.sampling, seeds=seeds)
            gen_s = time.perf_counter() - t0
            flat = [(i, g, c) for i, group in zip(ok, groups) for g, c in enumerate(group)]
            rows += self._with_poses(flat, ids, prompts, images, pose_in, seed, gen_s / max(1, len(flat)))
        order = {tid: k for k, tid in enumerate(ids)}
        rows.sort(key=lambda r: (order[r["task_id"]], r["sample_index"], r["pose_sample_index"]))
        return pa.Table.from_pylist(rows, schema=ROLLOUT_RECORD_SCHEMA)

    def _with_poses(self, flat, ids, prompts, images, pose_in, seed, gen_s_each) -> list[dict]:
        """One row per (response, pose sample): a response with a valid `<POSE>` gets
        `sampling.pose_samples` poses from its Gaussian (rows sharing its text and tokens, told
        apart by `pose_sample_index`); any other response gets one row without a pose."""
        pose_id = self.policy.pose_token_id
        resp = [c.token_ids for _, _, c in flat]
        with torch.no_grad():
            mu, log_std, has_first = pose_from_response(
                self.policy,
                [prompts[i] for i, _, _ in flat],
                resp,
                [images[i] for i, _, _ in flat],
                [pose_in[i] for i, _, _ in flat],
            )
        rows = []
        for k, (i, g, c) in enumerate(flat):
            valid = c.token_ids.count(pose_id) == 1  # V: exactly one <POSE>
            row = {
                "task_id": ids[i],
                "group_id": f"{ids[i]}@v{self.version}",
                "sample_index": g,
                "pose_sample_index": 0,
                "policy_version": self.version,
                "worker_id": self.worker_id,
                "prompt_tokens": prompts[i],
                "response_tokens": c.token_ids,
                "token_logprobs": c.logprobs,
                "text": decode_response(self.policy, c.token_ids),
                "has_pose": valid,
                "mu": None,
                "log_std": None,
                "pose": None,
                "pose_logprob": None,
                "generation_seconds": gen_s_each,
                "error": None,
            }
            if not (valid and bool(has_first[k])):
                rows.append(row)
                continue
            m, ls = (
                mu[k].float(),
                log_std[k].float() + math.log(self.sampling.pose_temperature),
            )  # the behaviour Gaussian
            row.update(mu=m.tolist(), log_std=ls.tolist())  # shared by the response's pose samples
            for j in range(self.sampling.pose_samples):
                parts = (seed, ids[i], self.version, g, "pose") + ((j,) if j else ())  # sample 0 keeps the K = 1 seed
                noise = torch.Generator(device=m.device).manual_seed(_seed(*parts))  # on the prefill's device
                p = m + ls.exp() * torch.randn(m.shape, generator=noise, device=m.device)
                rows.append(
                    {
                        **row,
                        "pose_sample_index": j,
                        "pose": p.tolist(),
                        "pose_logprob": float(gaussian_log_prob(p, m, ls)),
                    }
                )
        return rows

    def _error_row(self, task_id, g, prompt, reason) -> dict:
        return {
            "task_id": task_id,
            "group_id": f"{task_id}@v{self.version}",
            "sample_index": g,
            "pose_sample_index": 0,
            "policy_version": self.version,
            "worker_id": self.worker_id,
            "prompt_tokens": prompt,
            "response_tokens": [],
            "token_logprobs": [],
            "text": "",
            "has_pose": False,
            "mu": None,
            "log_std": None,
            "pose": None,
            "pose_logprob": None,
            "generation_seconds": 0.0,
            "error": reason,
        }

    # ---- weights ----
    def update_weights(self, version: int, state: dict[str, torch.Tensor]) -> int:
        """Load a full policy state (LM `lm.*` plus head/encoders), or a LoRA-only update
        (`poserft.model.lora.lora_update`, merged here), as `version`; returns the version.

        Callers pass the learner's object ref as `state`: Ray resolves a top-level ref argument
        from the object store (zero-copy on the same node) before the call runs."""
        if not isinstance(state, dict) or not state:
            raise ValueError(f"update_weights needs a non-empty state dict, got {type(state).__name__}")
        if version <= self.version:
            raise VersionMismatch(
                f"{self.worker_id}: update to version {version} but already at {self.version}; versions must increase"
            )
        if lora.is_lora_update(state):
            return self._update_lora(version, state)
        lm_state = {k[len("lm.") :]: v for k, v in state.items() if k.startswith("lm.")}
        if lm_state and self.engine_name == "vllm":  # the HF engine shares self.policy's LM
            self.engine.load_lm_weights(lm_state)
        missing, unexpected = self.policy.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"update_weights got unknown parameters {unexpected[:3]}")
        self.version = version
        return version

    # ---- rl.rollout.weight_sync: broadcast (poserft.common.weight_channel) ----
    def engine_world_size(self) -> int:
        """Members of the engine's weight channel: the learner and each TP rank; 0 for engine hf
        (it shares this worker's copy of the policy, which gets the weights anyway)."""
        return 1 + self.tensor_parallel_size if self.engine_name == "vllm" else 0

    def join_weight_channel(self, copy_ep: dict, engine_ep: dict | None = None) -> int:
        """Join the learner's channels (`LearnerCore.open_weight_channel`, running meanwhile):
        this actor's policy copy as rank 1 of 2, then the vLLM workers from rank 1 on."""
        if self.channel is not None:
            self.channel.close()
        self.channel = WeightChannel.open(copy_ep["master_address"], copy_ep["master_port"], 1, 2, self.device)
        if engine_ep is not None:
            if self.engine_name != "vllm":
                raise ValueError(f"{self.worker_id}: engine {self.engine_name} has no weight channel of its own")
            self.engine.join_weight_transfer(
                {**engine_ep, "rank_offset": 1, "world_size": self.engine_world_size(), "packed": False}
            )
        return self.version

    def receive_weights(self, version: int, meta: list) -> int:
        """The receiving half of `LearnerCore.send_weights`: the version, the full policy state
        (`meta`: its tensor list, as `publish` returned it) over the channel, then the LM's
        tensors into the engine. The version sent must be `version`; the one the worker already
        holds is accepted (a repeated send is harmless)."""
        if self.channel is None:
            raise RuntimeError(f"{self.worker_id}: receive_weights before join_weight_channel")
        sent = int(self.channel.broadcast(torch.zeros(1, dtype=torch.int64, device=self.device)).item())
        state = receive_state(self.channel, meta)
        if self.engine_name == "vllm":  # taken before any check, or the learner's send would hang
            lm = [(k[len("lm.") :], d, s) for k, d, s in meta if k.startswith("lm.")]
            self.engine.receive_weights(
                {"names": [k for k, _, _ in lm], "dtype_names": [d for _, d, _ in lm], "shapes": [s for _, _, s in lm]}
            )
        if sent != version or version < self.version:  # the worker fails and is replaced
            raise VersionMismatch(
                f"{self.worker_id}: got weights of version {sent}, expected {version} (holding {self.version})"
            )
        own = self.policy.state_dict()
        unknown = [k for k in state if k not in own]
        if unknown:
            raise ValueError(f"receive_weights got unknown parameters {unknown[:3]}")
        with torch.no_grad():
            self.policy.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
        self.version = version
        return version

    def _update_lora(self, version: int, state: dict) -> int:
        """Merge a LoRA-only update into W0 of the start checkpoint and load the result."""
        lm = self.policy.lm
        names = sorted(state["lora"])
        key = (bool(state["base"]["unmerged"]), state["base"]["fingerprint"])
        if self._lora_base_key != key or set(names) - set(self._lora_base):
            dtype = next(lm.parameters()).dtype
            base = lora.base_from_checkpoint(self.ckpt_dir, names, key[0], dtype)
            if lora.fingerprint(base) != key[1]:
                raise ValueError(
                    f"{self.worker_id}: the LoRA update was trained on other base weights than those of "
                    f"{self.ckpt_dir} "
                    "(start the rollout workers from the checkpoint the learner started from)"
                )
            self._lora_base, self._lora_base_key = base, key
        merged = {
            f"{n}.weight": lora.merge_weight(self._lora_base[n], a, b, state["scale"])
            for n, (a, b) in state["lora"].items()
        }
        merged |= state["lm"]
        own = self.policy.state_dict()
        unknown = [k for k in state["extra"] if k.startswith("lm.") or k not in own] + [
            k for k in merged if f"lm.{k}" not in own
        ]
        if unknown:
            raise ValueError(f"update_weights got unknown parameters {unknown[:3]}")
        with torch.no_grad():
            lm.load_state_dict(merged, strict=False)  # the HF engine shares this LM
            self.policy.load_state_dict(state["extra"], strict=False)
        if self.engine_name == "vllm":
            lm_state = lm.state_dict()
            self.engine.load_lm_weights({k: lm_state[k] for k in lora.with_fused_siblings(lm, merged)})
        self.version = version
        return version

    # ---- colocation (learner and rollout on the same GPUs) ----
    def sleep(self) -> dict:
        """Release the vLLM engine's GPU memory (weights offloaded, KV cache dropped) while the
        learner trains on the same devices. vLLM's sleep mode needs CUDA; on CPU nothing is
        released (the engine keeps its RAM), which this reports."""
        released = self.engine_name == "vllm" and not self.engine.on_cpu
        if released:
            self.engine.sleep()
        self.asleep = True
        return {"worker_id": self.worker_id, "released": released}

    def wake_up(self) -> dict:
        if getattr(self, "asleep", False) and self.engine_name == "vllm" and not self.engine.on_cpu:
            self.engine.wake_up()
        self.asleep = False
        return {"worker_id": self.worker_id, "version": self.version}

    def next_token_logprobs(self, prompt: str, k: int = 20) -> dict[int, float]:
        with torch.no_grad():
            emb = prompt_embeddings(self.policy, [self.policy.encode_prompt(prompt)])[0]
        return self.engine.next_token_logprobs(emb, k)

    def weight_checksum(self, name: str) -> float:
        return (
            self.engine.weight_checksum(name)
            if self.engine_name == "vllm"
            else float(dict(self.policy.lm.named_parameters())[name].detach().sum())
        )


def rollout_actor_class():
    """The Ray actor class (created lazily so importing this module does not need Ray)."""
    import ray

    return ray.remote(max_restarts=0)(RolloutWorkerCore)
