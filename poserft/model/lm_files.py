"""The language model's files inside a checkpoint folder: the index of its safetensors shards,
reading some of its tensors, and the checkpoint error type. Kept apart from `checkpoint` so that
`lora` can read base weights without importing the policy (no import cycle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

LM_INDEX = "model.safetensors.index.json"


class CheckpointError(FileNotFoundError):
    """A checkpoint folder is missing a file or was written by an incompatible version."""


def write_lm_index(folder: Path) -> None:
    """List the LM's tensors in model.safetensors.index.json: loaders that glob *.safetensors
    (vLLM) then take only the LM's file and not the pose head's or the vision encoder's."""
    from safetensors import safe_open

    if (folder / LM_INDEX).exists():  # sharded: transformers wrote it, listing only the LM's shards
        return
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        names = list(fh.keys())
    index = {
        "metadata": {"total_size": (folder / "model.safetensors").stat().st_size},
        "weight_map": {n: "model.safetensors" for n in names},
    }
    (folder / LM_INDEX).write_text(json.dumps(index, indent=1) + "\n")


def read_lm_tensors(folder: str | Path, names, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Some of a checkpoint's LM tensors by HF name, read from their shards (nothing else loaded)."""
    from safetensors import safe_open

    folder = Path(folder)
    weight_map = json.loads((folder / LM_INDEX).read_text())["weight_map"]
    missing = [n for n in names if n not in weight_map]
    if missing:
        raise CheckpointError(f"checkpoint {folder} has no LM tensor {missing[0]!r}")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted({weight_map[n] for n in names}):
        with safe_open(str(folder / shard), "pt") as fh:
            for n in names:
                if weight_map[n] == shard:
                    t = fh.get_tensor(n)
                    out[n] = t.to(dtype) if dtype is not None else t
    return out
