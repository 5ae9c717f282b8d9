"""vLLM's own EngineArgs accepts the arguments rollout workers build (docs/gpu.md, findings 1, 5, 7)."""

from pathlib import Path

import pytest
import torch

from poserft.common.config import load_config
from poserft.rollout_workers.engine import engine_kwargs, vllm_args

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_vllm_engine_args_accept_every_argument_we_pass(tmp_path):
    """vLLM's own EngineArgs parses each argument set (a renamed or removed vLLM argument fails
    here, not on the cluster); the NCCL weight-transfer config is vLLM's WeightTransferConfig."""
    from vllm import EngineArgs

    sets = [vllm_args(tmp_path, CPU, **engine_kwargs(load_config(CONFIGS / "tiny-cpu.yaml").rl.rollout))]
    for name in ("8xh100.yaml", "1xgpu.yaml", "llava7b-8xh100.yaml"):
        sets.append(vllm_args(tmp_path, CUDA, **engine_kwargs(load_config(CONFIGS / name).rl.rollout)))
    sets.append(vllm_args(tmp_path, CUDA, tensor_parallel_size=2, weight_sync="nccl"))
    for args in sets:
        EngineArgs(**args)
    nccl = EngineArgs(**sets[-1]).weight_transfer_config
    assert type(nccl).__name__ == "WeightTransferConfig" and nccl.backend == "nccl"
    with pytest.raises(ValueError, match="needs the engine on GPUs"):
        vllm_args(tmp_path, CPU, weight_sync="nccl")
