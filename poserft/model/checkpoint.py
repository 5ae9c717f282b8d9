"""Policy checkpoints: presets, `poserft model init`, save and load.

A checkpoint folder *is* the Hugging Face folder of the language model (config.json,
model.safetensors or its shards, the index listing them, tokenizer files), so
`vllm.LLM(model=DIR)` loads it unchanged. Beside them:
- `pose_head.safetensors`: the Gaussian pose head;
- `vision.safetensors`: vision encoder, projector and the pose input encoder;
- `poserft.json`: preset, special token ids, pose representation, vision type, policy version, sizes;
- `lora_adapter/` (LoRA runs only): the adapter in peft's layout. The LM files always hold the
  merged weights, so nothing else needs to know that LoRA was used.
Writes go to a temporary folder that is renamed into place, so a checkpoint is never half-written.
`poserft.model.llava` writes the same layout from a LLaVA-1.5 checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from poserft.common.schemas import IMAGE_TOKEN, POSE_INPUT_TOKEN, POSE_RESPONSE, POSE_TOKEN, TEXT_TOKEN
from poserft.model.lm_files import LM_INDEX, CheckpointError, read_lm_tensors, write_lm_index
from poserft.model.policy import PosePolicy

__all__ = ["CheckpointError", "LM_INDEX", "read_lm_tensors"]  # re-exported: the checkpoint API

FORMAT_VERSION = 1
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", POSE_TOKEN, IMAGE_TOKEN, POSE_INPUT_TOKEN]
REQUIRED_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "pose_head.safetensors",
    "vision.safetensors",
    "poserft.json",
)
POSE_REPRESENTATION = "24 joints x 6D (first two columns of each local rotation matrix), joint 0 = global orientation"

# head_dim must be one vLLM's CPU attention supports (32, 64, ...).
PRESETS = {
    "tiny": {
        "vocab_size": 1024,
        "lm": {
            "hidden_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 32,
            "intermediate_size": 384,
        },
        "vision": {"image_size": 64, "patch": 8, "width": 96, "layers": 2, "heads": 4, "out_tokens": 16},
    },
    "base": {  # about 10x the tiny preset's parameters, for benchmarks
        "vocab_size": 2048,
        "lm": {
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "num_key_value_heads": 6,
            "head_dim": 64,
            "intermediate_size": 1152,
        },
        "vision": {"image_size": 64, "patch": 8, "width": 192, "layers": 4, "heads": 4, "out_tokens": 16},
    },
}
MAX_POSITIONS = 512


def unknown_preset(name: str) -> ValueError:
    return ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")


def train_tokenizer(corpus, vocab_size: int, extra_special: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer trained on `corpus`, wrapped for transformers and vLLM.
    `extra_special`: special tokens after SPECIAL_TOKENS (the text tower's `<text>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + list(extra_special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[POSE_TOKEN, IMAGE_TOKEN, POSE_INPUT_TOKEN, *extra_special],
    )


def tokenizer_corpus(data_dir: str | Path) -> list[str]:
    from poserft.data.dataset import PROMPTS, load_split
    from poserft.model.policy import chat_prompt

    table = load_split(data_dir, "train")
    texts = table["prompt"].to_pylist() + table["caption"].to_pylist()[: table.num_rows // 3]
    texts += [chat_prompt(p, 1) for group in PROMPTS.values() for p in group] + [POSE_RESPONSE] * 100
    return texts


def init_policy(
    preset: str,
    data_dir: str | Path,
    seed: int = 0,
    text_tower: str = "none",
    text_tokens: int = 4,
    text_head_skip: bool = False,
) -> PosePolicy:
    """A randomly initialised policy of `preset` with a tokenizer trained on `data_dir`'s texts;
    `text_tower` (poserft.model.text_tower) adds `text_tokens` prompt slots of pretrained word
    knowledge, "none" adds nothing. `text_head_skip` (with a tower) also feeds the mean slot vector
    straight to the pose head (`PosePolicy.pose_params`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from poserft.model.text_tower import check_tower

    if preset not in PRESETS:
        raise unknown_preset(preset)
    if text_tower != "none":
        check_tower(text_tower)
    elif text_head_skip:
        raise ValueError(
            "the head skip needs a text tower: add --text-tower minilm-wordemb (configs: model.text_tower)"
        )
    p = PRESETS[preset]
    extra = (TEXT_TOKEN,) if text_tower != "none" else ()
    tokenizer = train_tokenizer(tokenizer_corpus(data_dir), p["vocab_size"], extra)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **p["lm"],
    )
    lm = LlamaForCausalLM(cfg)
    meta = {
        "format_version": FORMAT_VERSION,
        "preset": preset,
        "policy_version": 0,
        "token_ids": {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + list(extra)},
        "pose_representation": POSE_REPRESENTATION,
        "vision": dict(p["vision"]),
        "head": {"log_std_min": -5.0, "log_std_max": 0.0, "log_std_init": -1.5},
        "max_positions": MAX_POSITIONS,
    }
    if text_tower != "none":
        meta["text_tower"] = {"type": text_tower, "tokens": int(text_tokens)}
        if text_head_skip:
            meta["text_tower"]["head_skip"] = True
    return PosePolicy(lm, tokenizer, meta)


def count_parameters(policy: PosePolicy) -> dict:
    def n(m):
        return sum(p.numel() for p in m.parameters())

    return {
        "lm": n(policy.lm),
        "vision": n(policy.vision) + n(policy.projector),
        "pose_in": n(policy.pose_in),
        "head": n(policy.head),
        **({"text_in": n(policy.text_in)} if policy.text_tokens else {}),
        "total": n(policy),
    }


def save_policy(policy: PosePolicy, out: str | Path, extra_files: dict | None = None, **meta_updates) -> Path:
    """Write the checkpoint atomically (temp folder, then rename over `out`).

    A LoRA-wrapped LM is written as a plain HF LM with the adapters merged into a copy (the
    training model stays wrapped), plus the adapter in `lora_adapter/`.
    `extra_files` maps a file name to a function that writes it, given its path, inside the
    temporary folder, so they land together with the weights or not at all."""
    from poserft.model import lora

    def fill(tmp: Path) -> None:
        meta = {k: v for k, v in {**policy.meta, **meta_updates}.items() if k not in ("lora", "freeze")}
        if lora.is_wrapped(policy.lm):
            lora.merged_copy(policy.lm).save_pretrained(tmp, safe_serialization=True)
            meta["lora"] = lora.save_adapter(policy.lm, tmp / lora.ADAPTER_DIR)
        else:
            policy.lm.save_pretrained(tmp, safe_serialization=True)
        if getattr(policy, "switches", None) and policy.switches["freeze"]:
            meta["freeze"] = policy.switches["freeze"]  # a record only; loading ignores it
        write_lm_index(tmp)
        policy.tokenizer.save_pretrained(tmp)
        extra = policy.extra_state_dict()
        save_file(
            {k[len("head.") :]: v.contiguous() for k, v in extra.items() if k.startswith("head.")},
            tmp / "pose_head.safetensors",
        )
        save_file(
            {k: v.contiguous() for k, v in extra.items() if not k.startswith("head.")}, tmp / "vision.safetensors"
        )
        meta["parameters"] = count_parameters(policy)
        (tmp / "poserft.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name, write in (extra_files or {}).items():
            write(tmp / name)
        policy.meta = meta

    return write_atomically(out, fill)


def write_atomically(out: str | Path, fill) -> Path:
    """Call `fill(tmp)` on a fresh temporary folder beside `out`, then rename it over `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        fill(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_checkpoint(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
    for shard in sorted(set(json.loads((folder / LM_INDEX).read_text())["weight_map"].values())):
        if not (folder / shard).is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {shard} (listed in {LM_INDEX})")
    meta = json.loads((folder / "poserft.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder} has format_version {meta.get('format_version')}, this poserft reads {FORMAT_VERSION}"
        )
    return meta


def load_policy(folder: str | Path, dtype: torch.dtype = torch.float32) -> PosePolicy:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    meta = check_checkpoint(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    policy = PosePolicy(lm, tokenizer, meta)
    head = load_file(str(folder / "pose_head.safetensors"))
    rest = load_file(str(folder / "vision.safetensors"))
    state = {f"head.{k}": v for k, v in head.items()} | rest
    missing, unexpected = policy.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("lm.")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return policy.to(dtype)
