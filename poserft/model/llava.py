"""`poserft model import --llava`: a LLaVA-1.5 checkpoint (the Hugging Face
`LlavaForConditionalGeneration` layout of llava-hf/llava-1.5-7b-hf) -> a poserft checkpoint.

- The language model becomes a plain HF causal-LM folder (vLLM loads it as is).
- The tokenizer gains the poserft tokens it lacks (<POSE>, <pose>; <image> and a pad token if
  absent). The embedding and output matrices grow to hold them when needed; the rows of the new
  tokens are set to the mean of the rows of the tokenizer's existing tokens.
- The CLIP vision tower and LLaVA's projector are kept: poserft.json records vision type "clip",
  the layer LLaVA reads (`vision_feature_layer`, -2 for LLaVA-1.5) and its select strategy
  ("default" drops CLS), so the policy's image tokens equal LLaVA's image features.
- The Gaussian pose head and the pose-input MLP are new, randomly initialised from `seed`.

Both key layouts are read: the hub's (`language_model.model.*`, `vision_tower.vision_model.*`,
`multi_modal_projector.*`) and the one newer transformers writes (`model.language_model.*`, ...).
The LM is built on the meta device and given the checkpoint's tensors, so the import holds about
one copy of the weights in memory (~15 GB for the 7B model in float16).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from poserft.common.schemas import IMAGE_TOKEN, POSE_INPUT_TOKEN, POSE_TOKEN
from poserft.model.checkpoint import FORMAT_VERSION, POSE_REPRESENTATION, CheckpointError, save_policy
from poserft.model.policy import CLIP_MEAN, CLIP_STD, PosePolicy

# (prefix in the LLaVA file, part, prefix in poserft); the first match wins.
KEY_LAYOUT = (
    ("language_model.model.", "lm", "model."),
    ("language_model.lm_head.", "lm", "lm_head."),
    ("model.language_model.", "lm", "model."),
    ("lm_head.", "lm", "lm_head."),
    ("model.vision_tower.", "vision", ""),
    ("vision_tower.", "vision", ""),
    ("model.multi_modal_projector.", "projector", ""),
    ("multi_modal_projector.", "projector", ""),
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF folder (`model.safetensors` or the shards its index lists)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(
            f"{folder} has no model.safetensors or model.safetensors.index.json; convert .bin weights to safetensors "
            "first"
        )
    out: dict[str, torch.Tensor] = {}
    for name in files:
        out |= load_file(str(folder / name))
    return out


def split_llava_state(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"lm": HF causal-LM names, "vision": CLIP names, "projector": linear_1/linear_2 names}."""
    parts: dict[str, dict[str, torch.Tensor]] = {"lm": {}, "vision": {}, "projector": {}}
    unknown = []
    for key, t in tensors.items():
        for src, part, dst in KEY_LAYOUT:
            if key.startswith(src):
                parts[part][dst + key[len(src) :]] = t
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"LLaVA checkpoint has tensors outside the language model, vision tower and projector, e.g. {unknown[:3]}"
        )
    return parts


def match_clip_keys(state: dict[str, torch.Tensor], own_keys) -> dict[str, torch.Tensor]:
    """Names of a CLIP vision state as this transformers' CLIPVisionModel spells them (with or
    without the `vision_model.` level, which changed between transformers versions)."""
    own = set(own_keys)
    out = {}
    for k, v in state.items():
        for cand in (k, k.removeprefix("vision_model."), f"vision_model.{k}"):
            if cand in own:
                out[cand] = v
                break
        else:
            out[k] = v  # reported by the strict load
    return out


def grow_rows(weight: torch.Tensor, rows: int, new_ids: list[int], n_real: int) -> torch.Tensor:
    """`weight` with `rows` rows; rows past the old end and the rows of `new_ids` are the mean of
    the first `n_real` rows (the tokenizer's existing tokens, not the padding rows after them)."""
    mean = weight[:n_real].float().mean(0).to(weight.dtype)
    out = mean.expand(rows, weight.shape[1]).clone()
    out[: weight.shape[0]] = weight
    if new_ids:
        out[torch.tensor(new_ids)] = mean
    return out


def _add_tokens(tokenizer) -> list[int]:
    """Add the poserft tokens (and a pad token) the tokenizer lacks; returns their ids."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    added = []
    if tokenizer.pad_token is None:
        if "<pad>" not in vocab:
            tokenizer.add_tokens([AddedToken("<pad>", special=True, normalized=False)], special_tokens=True)
            added.append("<pad>")
        tokenizer.pad_token = "<pad>"
    missing = [t for t in (POSE_TOKEN, IMAGE_TOKEN, POSE_INPUT_TOKEN) if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return [tokenizer.convert_tokens_to_ids(t) for t in added + missing]


def _image_norm(folder: Path) -> tuple[list[float], list[float]]:
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        return list(cfg.get("image_mean", CLIP_MEAN)), list(cfg.get("image_std", CLIP_STD))
    return list(CLIP_MEAN), list(CLIP_STD)


def import_llava(src: str | Path, out: str | Path, seed: int = 0, dtype: str | None = None) -> PosePolicy:
    """Convert the LLaVA folder `src` into a poserft checkpoint at `out` (see the module docstring).
    `dtype`: float32 / bfloat16 / float16 for the LM, or None to keep the stored dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = Path(src)
    if not (src / "config.json").is_file():
        raise CheckpointError(
            f"{src} has no config.json; give the folder of a Hugging Face LLaVA checkpoint (e.g. "
            "llava-hf/llava-1.5-7b-hf)"
        )
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    cfg = AutoConfig.from_pretrained(src)
    if cfg.model_type != "llava":
        raise ValueError(
            f"{src} holds a {cfg.model_type!r} model; --llava reads LlavaForConditionalGeneration checkpoints "
            "(model_type llava)"
        )
    vcfg, tcfg = cfg.vision_config, cfg.text_config
    if vcfg.model_type != "clip_vision_model":
        raise ValueError(
            f"{src}: vision tower {vcfg.model_type!r} is not supported; poserft reads CLIP towers (LLaVA-1.5)"
        )
    layer, select = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
    if not isinstance(layer, int) or select not in ("default", "full"):
        raise ValueError(
            f"{src}: vision_feature_layer {layer!r} / select strategy {select!r} not supported (LLaVA-1.5 uses -2 / "
            "default)"
        )
    if cfg.projector_hidden_act != "gelu":
        raise ValueError(
            f"{src}: projector activation {cfg.projector_hidden_act!r} not supported (LLaVA-1.5 uses gelu)"
        )

    parts = split_llava_state(read_safetensors(src))
    lm_state = parts["lm"]
    if "lm_head.weight" not in lm_state:
        if not getattr(tcfg, "tie_word_embeddings", False):
            raise CheckpointError(
                f"{src} has no language-model head (lm_head.weight) and does not tie it to the embeddings"
            )
        lm_state["lm_head.weight"] = lm_state["model.embed_tokens.weight"]
    if dtype is not None:
        lm_state = {k: v.to(DTYPES[dtype]) for k, v in lm_state.items()}

    tokenizer = AutoTokenizer.from_pretrained(src)
    n_real = len(tokenizer)
    new_ids = _add_tokens(tokenizer)
    old_rows = lm_state["model.embed_tokens.weight"].shape[0]
    rows = max(old_rows, len(tokenizer))
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        lm_state[key] = grow_rows(lm_state[key], rows, new_ids, min(n_real, old_rows))

    tcfg.vocab_size = rows
    tcfg.bos_token_id, tcfg.eos_token_id, tcfg.pad_token_id = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(tcfg)
    lm.load_state_dict(lm_state, strict=True, assign=True)
    lm.config.architectures = [type(lm).__name__]

    mean, std = _image_norm(src)
    grid = vcfg.image_size // vcfg.patch_size
    meta = {
        "format_version": FORMAT_VERSION,
        "preset": "llava",
        "source": {"llava": str(src.resolve()), "vocab_rows": old_rows, "added_tokens": new_ids},
        "policy_version": 0,
        "token_ids": {
            "<pad>": tokenizer.pad_token_id,
            "<s>": tokenizer.bos_token_id,
            "</s>": tokenizer.eos_token_id,
            "<unk>": tokenizer.unk_token_id,
            **{t: tokenizer.convert_tokens_to_ids(t) for t in (POSE_TOKEN, IMAGE_TOKEN, POSE_INPUT_TOKEN)},
        },
        "pose_representation": POSE_REPRESENTATION,
        "vision": {
            "type": "clip",
            "image_size": vcfg.image_size,
            "patch": vcfg.patch_size,
            "width": vcfg.hidden_size,
            "out_tokens": grid * grid + (select == "full"),
            "feature_layer": layer,
            "select_strategy": select,
            "mean": mean,
            "std": std,
            "projector_bias": bool(getattr(cfg, "multimodal_projector_bias", True)),
            "clip_config": vcfg.to_dict(),
        },
        "head": {"log_std_min": -5.0, "log_std_max": 0.0, "log_std_init": -1.5},
        "max_positions": int(tcfg.max_position_embeddings),
    }
    torch.manual_seed(seed)
    policy = PosePolicy(lm, tokenizer, meta)  # the pose head and the pose-input MLP stay random
    tower = policy.vision.tower
    tower.load_state_dict(match_clip_keys(parts["vision"], tower.state_dict()), strict=True)
    projector = {k.replace("linear_1.", "0.").replace("linear_2.", "2."): v for k, v in parts["projector"].items()}
    policy.projector.load_state_dict(projector, strict=True)
    save_policy(policy, out)
    return policy
