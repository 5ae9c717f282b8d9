"""LoRA on the policy's language model (peft), folded back into plain weights, and the LoRA-only
weight update the learner publishes when LoRA is on.

A merged weight is W = W0 + scale * B @ A (scale = alpha / r), computed in float64 and rounded
once to W0's dtype. The learner (checkpoints) and the rollout workers (weight sync) both merge with
`merge_weight`, so from the same W0, A and B they get bit-identical weights.

The LoRA-only update (`lora_update`) is a dict:

    format   LORA_FORMAT (how a worker tells it from a full state, whose keys are parameter names)
    scale    alpha / r;  r;  targets: the adapted layer names (q_proj, ...)
    base     {"unmerged": bool, "fingerprint": str}: the W0 the adapters sit on. unmerged False: the
             LM weights of the checkpoint the run started from, as stored; True: those weights
             minus that checkpoint's own saved adapter (a LoRA run resumed from its checkpoint,
             whose LM file holds the merged weights). The fingerprint (a hash of a sample of W0)
             lets a worker refuse an update that does not fit its W0.
    lora     {module name: (A (r, in), B (out, r))}, module names as in the plain HF LM
    lm       {HF parameter name: tensor}: LM modules trained in full (lora.modules_to_save)
    extra    {policy parameter name: tensor}: trainable non-LM parts (head.*, vision.*, ...)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

LORA_FORMAT = "poserft-lora/1"
ADAPTER_DIR = "lora_adapter"  # peft's save_pretrained layout, inside a checkpoint folder
_ADAPTER = "default"  # peft's name of the one adapter


# ---- wrapping ----------------------------------------------------------------------------------
def check_names(lm: nn.Module, cfg) -> None:
    """ValueError naming the valid choices when a target or saved module is not in the LM."""
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
    bad = [t for t in cfg.target_modules if t not in linear]
    if bad:
        raise ValueError(
            f"model.lora.target_modules names {', '.join(bad)}, not a linear layer of the LM "
            f"({type(lm).__name__}); valid: {', '.join(linear)}"
        )
    owners = sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in lm.named_modules()
            if n and next(m.parameters(recurse=False), None) is not None
        }
    )
    bad = [t for t in cfg.modules_to_save if t not in owners]
    if bad:
        raise ValueError(
            f"model.lora.modules_to_save names {', '.join(bad)}, not a module of the LM "
            f"({type(lm).__name__}); valid: {', '.join(owners)}"
        )


def wrap(lm: nn.Module, cfg, saved_adapter: Path | None = None):
    """The LM wrapped in LoRA adapters (peft); only the adapters and `modules_to_save` train.

    With `saved_adapter` (the adapter folder of a checkpoint written by a LoRA run) whose settings
    match `cfg`, the LM's merged weights are first unmerged and the saved A, B restored, so a run
    resumes exactly where it stopped. Returns (wrapped LM, whether that happened)."""
    from peft import LoraConfig, get_peft_model

    check_names(lm, cfg)
    restore = saved_adapter is not None and _adapter_matches(saved_adapter, cfg)
    ab: dict = {}
    if restore:
        ab, scale = read_adapter(saved_adapter)
        with torch.no_grad():
            for name, (a, b) in ab.items():
                w = lm.get_submodule(name).weight
                w.copy_(unmerge_weight(w, a, b, scale))
    peft_cfg = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        modules_to_save=list(cfg.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(lm, peft_cfg)
    if restore:
        with torch.no_grad():
            for name, (a, b) in ab.items():
                layer = wrapped.get_base_model().get_submodule(name)
                layer.lora_A[_ADAPTER].weight.copy_(a)
                layer.lora_B[_ADAPTER].weight.copy_(b)
    return wrapped, restore


def is_wrapped(lm: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(lm, PeftModel)


def _lora_layers(lm) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in lm.get_base_model().named_modules() if isinstance(m, LoraLayer)}


def adapters(lm) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (A (r, in), B (out, r))} of a wrapped LM, detached."""
    return {
        n: (m.lora_A[_ADAPTER].weight.detach(), m.lora_B[_ADAPTER].weight.detach()) for n, m in _lora_layers(lm).items()
    }


def base_weights(lm) -> dict[str, torch.Tensor]:
    """{module name: W0} of the adapted layers of a wrapped LM."""
    return {n: m.get_base_layer().weight.detach() for n, m in _lora_layers(lm).items()}


def scale_of(lm) -> float:
    scales = {float(m.scaling[_ADAPTER]) for m in _lora_layers(lm).values()}
    if len(scales) != 1:
        raise ValueError(f"LoRA layers have different scales {sorted(scales)}; poserft uses one alpha / r for all")
    return scales.pop()


# ---- merging -----------------------------------------------------------------------------------
def merge_weight(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """W0 + scale * B @ A in float64, rounded once to W0's dtype."""
    delta = b.detach().to(device=w0.device, dtype=torch.float64) @ a.detach().to(device=w0.device, dtype=torch.float64)
    return (w0.detach().double() + scale * delta).to(w0.dtype)


def unmerge_weight(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """W - scale * B @ A: the W0 under a merged weight (exact up to the rounding of the merge)."""
    delta = b.detach().to(device=w.device, dtype=torch.float64) @ a.detach().to(device=w.device, dtype=torch.float64)
    return (w.detach().double() - scale * delta).to(w.dtype)


def _trained_in_full(lm) -> dict[str, torch.Tensor]:
    """HF-named tensors of the LM modules trained in full (modules_to_save)."""
    tag = f".modules_to_save.{_ADAPTER}."
    return {k.replace(tag, "."): v for k, v in lm.get_base_model().state_dict().items() if tag in k}


def plain_state(lm) -> dict[str, torch.Tensor]:
    """The weights a plain (unwrapped) LM would hold, under its HF names, adapters merged in.
    Tensors LoRA does not touch are the training model's own (not copies)."""
    out = {}
    for k, v in lm.get_base_model().state_dict().items():
        if ".lora_" in k or ".original_module." in k:
            continue
        out[k.replace(".base_layer.", ".").replace(f".modules_to_save.{_ADAPTER}.", ".")] = v
    scale = scale_of(lm)
    for name, (a, b) in adapters(lm).items():
        out[f"{name}.weight"] = merge_weight(out[f"{name}.weight"], a, b, scale)
    return out


def merged_copy(lm) -> nn.Module:
    """A plain HF model (the wrapped model's class and config) with the adapters merged in; the
    training model stays wrapped and unchanged."""
    base = lm.get_base_model()
    with torch.device("meta"):
        plain = type(base)(base.config)
    plain.load_state_dict(plain_state(lm), strict=True, assign=True)
    plain.generation_config = base.generation_config
    return plain


# ---- the saved adapter -------------------------------------------------------------------------
def save_adapter(lm, folder: Path) -> dict:
    """peft's adapter files in `folder`; returns the metadata poserft.json keeps about it."""
    lm.save_pretrained(str(folder))
    cfg = lm.peft_config[_ADAPTER]
    return {
        "r": cfg.r,
        "alpha": cfg.lora_alpha,
        "scale": scale_of(lm),
        "dropout": cfg.lora_dropout,
        "target_modules": sorted(cfg.target_modules),
        "modules_to_save": sorted(cfg.modules_to_save or []),
        "adapter": folder.name,
        "merged": True,
    }


def read_adapter(folder: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """({module name: (A, B)}, scale) from peft's adapter files."""
    folder = Path(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    prefix = "base_model.model."
    ab: dict[str, list] = {}
    for k, v in tensors.items():
        for i, part in enumerate((".lora_A.weight", ".lora_B.weight")):
            if k.endswith(part):
                ab.setdefault(k[len(prefix) : -len(part)], [None, None])[i] = v
    return {n: (a, b) for n, (a, b) in ab.items()}, cfg["lora_alpha"] / cfg["r"]


def base_from_checkpoint(folder: str | Path, names, unmerged: bool, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{module name: W0} read from a checkpoint's LM files: the weights as stored, or (unmerged)
    minus the checkpoint's saved adapter, exactly as `wrap` computes them in the learner."""
    from poserft.model.lm_files import read_lm_tensors

    stored = read_lm_tensors(folder, [f"{n}.weight" for n in names], dtype)
    w0 = {n: stored[f"{n}.weight"] for n in names}
    if unmerged:
        if not (Path(folder) / ADAPTER_DIR / "adapter_config.json").is_file():
            raise ValueError(
                "the LoRA update sits on the weights of a resumed LoRA checkpoint minus its saved adapter, but "
                f"{folder} "
                f"has no saved adapter ({ADAPTER_DIR}/); start the rollout workers from the checkpoint the learner "
                "resumed from"
            )
        ab, scale = read_adapter(Path(folder) / ADAPTER_DIR)
        w0 = {n: unmerge_weight(w, *ab[n], scale) for n, w in w0.items()}
    return w0


def _adapter_matches(folder: Path, cfg) -> bool:
    saved = json.loads((Path(folder) / "adapter_config.json").read_text())
    return (
        saved["r"] == cfg.r
        and float(saved["lora_alpha"]) == float(cfg.alpha)
        and sorted(saved["target_modules"]) == sorted(cfg.target_modules)
        and sorted(saved.get("modules_to_save") or []) == sorted(cfg.modules_to_save)
    )


# ---- the LoRA-only update ----------------------------------------------------------------------
def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """A hash of about 1,024 evenly spaced values of each weight (cheap; exact equality)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(weights):
        flat = weights[name].detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().contiguous()
        h.update(name.encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def lora_update(policy, base_unmerged: bool = False) -> dict:
    """The LoRA-only state of a policy whose LM is wrapped (see the module docstring)."""
    lm = policy.lm
    cfg = lm.peft_config[_ADAPTER]
    return {
        "format": LORA_FORMAT,
        "scale": scale_of(lm),
        "r": cfg.r,
        "targets": sorted(cfg.target_modules),
        "base": {"unmerged": bool(base_unmerged), "fingerprint": fingerprint(base_weights(lm))},
        "lora": {n: (a.clone(), b.clone()) for n, (a, b) in adapters(lm).items()},
        "lm": {k: v.detach().clone() for k, v in _trained_in_full(lm).items()},
        "extra": {
            k: p.detach().clone() for k, p in policy.named_parameters() if p.requires_grad and not k.startswith("lm.")
        },
    }


def is_lora_update(state) -> bool:
    return isinstance(state, dict) and state.get("format") == LORA_FORMAT


def state_bytes(state) -> int:
    """Bytes of the tensors in a (possibly nested) weight state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def with_fused_siblings(lm: nn.Module, names) -> list[str]:
    """`names` (HF parameter names of a plain LM) plus every parameter of the linear layers beside
    them (same parent module). vLLM fuses sibling projections (q/k/v into qkv_proj, gate/up into
    gate_up_proj) and its in-place reload rebuilds a fused layer only from complete data."""
    out = set(names)
    for name in names:
        module = name.rsplit(".", 1)[0]
        parent = lm.get_submodule(module.rsplit(".", 1)[0] if "." in module else "")
        prefix = module.rsplit(".", 1)[0] + "." if "." in module else ""
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                out.update(f"{prefix}{child_name}.{p}" for p, _ in child.named_parameters())
    return sorted(out)
