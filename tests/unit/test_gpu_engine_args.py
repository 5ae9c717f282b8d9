"""The vLLM arguments a rollout worker passes on GPU and on CPU (findings 1 and 5 of docs/gpu.md)."""

from pathlib import Path

import torch

from poserft.common.config import load_config
from poserft.rollout_workers.engine import engine_kwargs, vllm_args

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_tensor_parallel_uses_the_multiprocessing_executor():
    """In a placement group vLLM would pick its Ray executor, which refuses a bundle of 2 GPUs."""
    r = load_config(CONFIGS / "8xh100.yaml").rl.rollout
    args = vllm_args("/ckpt", CUDA, **engine_kwargs(r))
    assert r.tensor_parallel_size == 2 and args["tensor_parallel_size"] == 2
    assert args["distributed_executor_backend"] == "mp"
    assert "distributed_executor_backend" not in vllm_args(
        "/ckpt", CUDA, tensor_parallel_size=1
    )  # one GPU: vLLM's uni executor


def test_gpu_settings_come_from_the_config():
    r = load_config(CONFIGS / "8xh100.yaml").rl.rollout
    args = vllm_args("/ckpt", CUDA, **engine_kwargs(r))
    assert args["dtype"] == "bfloat16" and args["gpu_memory_utilization"] == 0.85 and not args["enforce_eager"]
    assert "kv_cache_memory_bytes" not in args  # vLLM sizes the KV cache from its memory share on GPU
    half = load_config(CONFIGS / "1xgpu.yaml").rl.rollout  # half a GPU beside the learner
    assert engine_kwargs(half)["gpu_memory_utilization"] == 0.425
    seven = load_config(CONFIGS / "llava7b-8xh100.yaml").rl.rollout
    assert vllm_args("/ckpt", CUDA, **engine_kwargs(seven))["gpu_memory_utilization"] == 0.6
    colocated = half.model_copy(update={"colocate": True})
    assert engine_kwargs(colocated)["gpu_memory_utilization"] == 0.5


def test_cpu_keeps_todays_settings():
    r = load_config(CONFIGS / "tiny-cpu.yaml").rl.rollout
    args = vllm_args("/ckpt", CPU, **engine_kwargs(r))
    assert args["dtype"] == "float32" and args["enforce_eager"]
    assert args["kv_cache_memory_bytes"] == r.kv_cache_mb * 2**20 and "gpu_memory_utilization" not in args
    assert vllm_args("/ckpt", CPU, dtype="bfloat16")["dtype"] == "bfloat16"  # an explicit dtype wins
