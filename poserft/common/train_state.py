"""Resumable training state shared by the SFT and retriever loops: model, optimizer, schedule,
torch RNG and the loop's own counters, saved atomically (temp file, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_train_state(path: Path, model, opt, sched, settings: dict, **progress) -> None:
    state = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "settings": settings,
        **progress,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_train_state(path: Path, model, opt, sched, settings: dict, added: dict | None = None) -> dict | None:
    """Restore from `path` if it exists (None otherwise); refuse a state written with other
    settings, naming the keys that differ. `added`: settings that did not exist when older states
    were written, with the value those states behaved as. Returns the saved progress counters."""
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=False)
    saved = {**(added or {}), **state["settings"]}
    if saved != settings:
        changed = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
        raise ValueError(
            f"{path} was written with other settings ({', '.join(changed)}); use a new output folder or delete it"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["torch_rng"])
    return {k: v for k, v in state.items() if k not in ("model", "opt", "sched", "torch_rng", "settings")}
