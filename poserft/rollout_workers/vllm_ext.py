"""A vLLM worker extension (loaded inside vLLM's worker processes) for in-place weight updates.

vLLM calls it through `LLM.collective_rpc("poserft_load_weights", args=(path,))` on every
worker (every tensor-parallel rank). The weights travel as a safetensors file in shared memory
(/dev/shm when present): the RPC carries only the path, as vLLM recommends for control
messages, and each rank reads the tensors it needs without copying them through the engine.
"""

from __future__ import annotations


class WeightSyncExtension:
    """Mixed into vLLM's worker class via `worker_extension_cls`."""

    def poserft_load_weights(self, path: str) -> int:
        from safetensors.torch import load_file

        weights = load_file(path)
        # vLLM's in-place reload: restores checkpoint-format parameters, loads, then re-runs the
        # backend's post-load processing (e.g. the CPU backend's weight repacking).
        self.reload_weights(weights_iterator=iter(weights.items()), is_checkpoint_format=True)  # type: ignore[attr-defined]
        return len(weights)

    def poserft_weight_checksum(self, name: str) -> float:
        """Sum of one parameter (tests use it to see that an update landed)."""
        params = dict(self.model_runner.model.named_parameters())  # type: ignore[attr-defined]
        if name not in params:
            raise KeyError(f"vLLM model has no parameter {name!r}; some are {list(params)[:5]}")
        return float(params[name].detach().float().sum())
