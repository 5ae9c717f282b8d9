"""The four Pose-RFT rewards (docs/architecture.md §6) as batched functions, and a scorer that applies them.

Pure functions take columns and return (N,) float arrays:
- `format_reward(texts, tasks)`: 1 if the response matches its task's template, else 0.
- `text_similarity(embedder, texts, refs)`: cosine of sentence embeddings, in [-1, 1].
- `semantic_reward(retriever, captions, pose_6d)`: retriever cosine of text and pose, in [-1, 1].
- `joint_reward(body, pose_6d, target_joints_m, tau_m, align, root_share)`: 1 / (1 + err / tau),
  err = mean joint error in metres after root alignment (MPJPE) or after the best similarity
  transform (`align="procrustes"`, PA-MPJPE, optionally mixed with `root_share` of the
  root-aligned error); 1 for a perfect pose, towards 0 as the error grows.

`RewardScorer.score(table)` adds `reward_<component>`, `reward_total` and `reward_error` to a
batch of rollouts. A component that does not apply to a row's task is null. A row whose pose is
missing (no valid `<POSE>`) gets the pose rewards' floor (semantic -1, joint 0): that is a
score, not an error. A row that cannot be scored (NaN pose, wrong shape, missing target) gets
null rewards and a reason in `reward_error`; it is never silently zero.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from poserft.common.body import POSE_6D_DIM, BodyModel
from poserft.common.metrics import similarity_align, yaw_mpjpe
from poserft.common.schemas import AA_DIM, DEFAULT_REWARD_WEIGHTS, POSE_RESPONSE, POSE_TOKEN, REWARD_COMPONENTS, TASKS

SEMANTIC_FLOOR = -1.0
JOINT_FLOOR = 0.0

# Schema-metadata key of the per-component scoring seconds: JSON {"rows": n, "seconds": {component: s}}.
REWARD_TIMING_KEY = b"poserft.reward_seconds"

_POSE_TEMPLATE = re.compile(r"^\s*The SMPL pose of this person is <POSE>\s*\.\s*$")


# Columns a batch must carry to be scored (rollout fields plus the task's reference fields).
REQUIRED_COLUMNS = ("task", "text", "has_pose", "pose", "caption", "reference_text", "target_joints")


def format_reward(texts: list[str], tasks: list[str]) -> np.ndarray:
    """Pose tasks: exactly the template with one <POSE>. pose2text: a sentence with no <POSE>."""
    out = np.zeros(len(texts), dtype=np.float32)
    for i, (text, task) in enumerate(zip(texts, tasks)):
        if task == "pose2text":
            out[i] = float(POSE_TOKEN not in text and len(text.split()) >= 3 and text.strip().endswith("."))
        else:
            out[i] = float(text.count(POSE_TOKEN) == 1 and bool(_POSE_TEMPLATE.match(text)))
    return out


class TextEmbedder:
    """The packaged all-MiniLM-L6-v2 (offline) with a small cache for repeated references."""

    def __init__(self):
        from poserft.reward_service.retriever import minilm

        self.model = minilm()
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            emb = self.model.encode(missing, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache.update(zip(missing, emb))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


def text_similarity(embedder: TextEmbedder, texts: list[str], refs: list[str]) -> np.ndarray:
    return (embedder.encode(texts) * embedder.encode(refs)).sum(-1).astype(np.float32)


def semantic_reward(retriever, captions: list[str], pose_6d: torch.Tensor) -> np.ndarray:
    from poserft.reward_service.retriever import pose_text_similarity

    return pose_text_similarity(retriever, captions, pose_6d).astype(np.float32)


SEMANTIC_TEXTS = ("prompt", "target")
TARGET_CAPTION_SEED = 0
TARGET_CAPTION_CACHE = 200_000


class TargetCaptions:
    """Full posecode descriptions of target poses, by the built-in captioner (`rewards.semantic_text:
    target`). A short or partial prompt ("a person lunging", "the feet are behind the knees") says
    too little for the reward retriever to rank a group's poses: in the demo's HyGRPO rollouts its
    ranking agreed with the yaw-aligned joint error to the target with Spearman 0.02 on prompts of
    12 words or fewer, and 0.21 against the target's own description (NOTES.md). A caption depends
    only on the target joints (its id is their CRC), so every sample of a group gets the same text,
    and captions are kept for reuse."""

    def __init__(self, seed: int = TARGET_CAPTION_SEED, cache: int = TARGET_CAPTION_CACHE):
        from poserft.data.captioner import Captioner

        self.captioner = Captioner(seed=seed)
        self.cache: dict[int, str] = {}
        self.limit = cache

    def __call__(self, joints_m: np.ndarray) -> list[str]:
        """(N, 24, 3) target joints in metres -> N captions."""
        joints_m = np.asarray(joints_m, dtype=np.float64)
        keys = [zlib.crc32(np.ascontiguousarray(j, dtype=np.float32).tobytes()) for j in joints_m]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.cache}.items())
        if todo:
            if len(self.cache) + len(todo) > self.limit:
                self.cache.clear()
            made = self.captioner.caption(joints_m[[i for _, i in todo]], ids=[k for k, _ in todo])
            self.cache.update(zip((k for k, _ in todo), made))
        return [self.cache[k] for k in keys]


JOINT_ALIGNMENTS = ("root", "procrustes", "yaw")
# text2pose's joint term (when `rewards.weights.text2pose.joint` is set) is always yaw-aligned: a
# description fixes up and down, lying or standing, but not the facing direction, as in
# `poserft eval --descriptions` (poserft.describe_eval).
TEXT_JOINT_ALIGN = "yaw"


def joint_reward(
    body: BodyModel,
    pose_6d: torch.Tensor,
    target_joints_m: torch.Tensor,
    tau_m: float = 0.1,
    align: str = "root",
    root_share: float = 0.0,
) -> np.ndarray:
    """1 / (1 + err / tau) with err the mean joint error (m) after root alignment, or with
    `align="procrustes"` after the best similarity transform (what PA-MPJPE measures: the global
    orientation, which an image often leaves ambiguous, then costs nothing), or with `align="yaw"`
    after root alignment and the best turn about the vertical axis (`yaw_mpjpe`). With Procrustes,
    `root_share` of err is the root-aligned error instead, so the global orientation still
    counts a little."""
    if align not in JOINT_ALIGNMENTS:
        raise ValueError(f"joint reward alignment must be one of {', '.join(JOINT_ALIGNMENTS)}, got {align!r}")
    if not 0.0 <= root_share <= 1.0:
        raise ValueError(f"joint reward root_share must be in [0, 1], got {root_share!r}")
    with torch.no_grad():
        pred = body.forward_kinematics(pose_6d.double())
    pred = pred - pred[:, :1]
    target = target_joints_m.double() - target_joints_m.double()[:, :1]
    if align == "yaw":
        return (1.0 / (1.0 + yaw_mpjpe(pred, target) / 1000.0 / tau_m)).float().numpy()
    err_m = (pred - target).norm(dim=-1).mean(-1)
    if align == "procrustes":
        aligned_err_m = (similarity_align(pred, target) - target).norm(dim=-1).mean(-1)
        err_m = (1.0 - root_share) * aligned_err_m + root_share * err_m
    return (1.0 / (1.0 + err_m / tau_m)).float().numpy()


@dataclass
class RewardSettings:
    weights: dict = field(default_factory=lambda: {t: dict(w) for t, w in DEFAULT_REWARD_WEIGHTS.items()})
    joint_tau_m: float = 0.1
    joint_align: str = "root"
    joint_root_share: float = 0.0
    retriever_dir: str | None = None
    smpl_dir: str | None = None
    semantic_text: str = "prompt"

    @classmethod
    def from_config(cls, cfg, retriever_dir: str | None = None) -> RewardSettings:
        """The settings of a validated `Config`: its `rewards` section and `body.smpl_dir`."""
        r = cfg.rewards
        return cls(
            weights=r.weights,
            joint_tau_m=r.joint_tau_m,
            joint_align=r.joint_align,
            joint_root_share=r.joint_root_share,
            retriever_dir=retriever_dir or r.retriever_dir,
            smpl_dir=cfg.body.smpl_dir,
            semantic_text=r.semantic_text,
        )


def _vector_column(table: pa.Table, name: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<float> column -> (N, dim) float64 array (NaN rows where null/wrong) and a valid mask."""
    values = np.full((table.num_rows, dim), np.nan)
    valid = np.zeros(table.num_rows, bool)
    for i, v in enumerate(table[name].to_pylist()):
        if v is not None and len(v) == dim:
            values[i] = np.asarray(v, dtype=np.float64)
            valid[i] = True
    return values, valid


class RewardScorer:
    """Holds the reward models (loaded once) and scores Arrow batches."""

    def __init__(self, settings: RewardSettings | None = None, text_embedder: TextEmbedder | None = None):
        self.settings = settings or RewardSettings()
        unknown = set(self.settings.weights) - set(TASKS)
        if unknown:
            raise ValueError(f"reward weights name unknown tasks {sorted(unknown)}; known: {', '.join(TASKS)}")
        for task, w in self.settings.weights.items():
            bad = set(w) - set(REWARD_COMPONENTS)
            if bad:
                raise ValueError(
                    f"reward weights for {task} name unknown components {sorted(bad)}; known: "
                    f"{', '.join(REWARD_COMPONENTS)}"
                )
        if self.settings.semantic_text not in SEMANTIC_TEXTS:
            raise ValueError(
                f"semantic_text must be one of {', '.join(SEMANTIC_TEXTS)}, got {self.settings.semantic_text!r}"
            )
        self.body = BodyModel(smpl_dir=self.settings.smpl_dir)
        self.target_captions = TargetCaptions() if self.settings.semantic_text == "target" else None
        self.embedder = text_embedder or TextEmbedder()
        self.retriever = None
        if self.settings.retriever_dir:
            from poserft.reward_service.retriever import Retriever

            self.retriever = Retriever.load(self.settings.retriever_dir)

    def needs(self, task: str, component: str) -> bool:
        return self.settings.weights.get(task, {}).get(component, 0.0) != 0.0

    def score(self, table: pa.Table) -> pa.Table:
        missing = [c for c in REQUIRED_COLUMNS if c not in table.schema.names]
        if missing:
            raise ValueError(f"reward batch is missing columns {missing}")
        n = table.num_rows
        tasks = table["task"].to_pylist()
        texts = [t if t is not None else "" for t in table["text"].to_pylist()]
        has_pose = np.array([bool(h) for h in table["has_pose"].to_pylist()])
        pose, pose_ok = _vector_column(table, "pose", POSE_6D_DIM)
        target, target_ok = _vector_column(table, "target_joints", AA_DIM)
        target_ok &= np.isfinite(target).all(1)  # present, of the right length and finite
        errors: list[str | None] = [None] * n
        for i, task in enumerate(tasks):
            if task not in TASKS:
                errors[i] = f"unknown task {task!r}"
            elif has_pose[i] and not pose_ok[i]:
                errors[i] = f"pose must have {POSE_6D_DIM} values"
            elif has_pose[i] and not np.isfinite(pose[i]).all():
                errors[i] = "pose contains NaN or infinite values"
            elif self.needs(task, "joint") and not target_ok[i]:
                errors[i] = "target_joints missing, wrong length or not finite"
        ok = np.array([e is None for e in errors])
        cols = {c: np.full(n, np.nan, dtype=np.float32) for c in REWARD_COMPONENTS}
        task_arr = np.array(tasks, dtype=object)

        def rows(component, pose_needed=False):
            sel = ok & np.array([self.needs(t, component) for t in tasks], bool)
            return sel & has_pose if pose_needed else sel

        seconds: dict[str, float] = {}  # per component, for the Prometheus histogram (schema metadata)
        t0 = time.perf_counter()
        sel = rows("format")
        cols["format"][sel] = format_reward([texts[i] for i in np.flatnonzero(sel)], list(task_arr[sel]))
        if sel.any():
            seconds["format"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sel = rows("text_similarity")
        refs = table["reference_text"].to_pylist()
        idx = np.flatnonzero(sel)
        if len(idx):
            cols["text_similarity"][idx] = text_similarity(
                self.embedder, [texts[i] for i in idx], [refs[i] or "" for i in idx]
            )
            seconds["text_similarity"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sem = rows("semantic")
        if sem.any():
            if self.retriever is None:
                for i in np.flatnonzero(sem):
                    errors[i] = "semantic reward needs a retriever (rewards.retriever_dir is not set)"
            else:
                cols["semantic"][sem] = SEMANTIC_FLOOR
                idx = np.flatnonzero(sem & has_pose)
                if len(idx):
                    caps = table["caption"].to_pylist()
                    if self.target_captions is not None:
                        own = idx[target_ok[idx]]
                        for i, c in zip(own, self.target_captions(target[own].reshape(-1, 24, 3))):
                            caps[i] = c
                    cols["semantic"][idx] = semantic_reward(
                        self.retriever, [caps[i] or "" for i in idx], torch.from_numpy(pose[idx]).float()
                    )
                seconds["semantic"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        jr = rows("joint")
        cols["joint"][jr] = JOINT_FLOOR
        is_text = task_arr == "text2pose"
        for part, align in ((~is_text, self.settings.joint_align), (is_text, TEXT_JOINT_ALIGN)):
            idx = np.flatnonzero(jr & has_pose & part)
            if len(idx):
                cols["joint"][idx] = joint_reward(
                    self.body,
                    torch.from_numpy(pose[idx]),
                    torch.from_numpy(target[idx].reshape(-1, 24, 3)),
                    self.settings.joint_tau_m,
                    align,
                    self.settings.joint_root_share,
                )
        if jr.any():
            seconds["joint"] = time.perf_counter() - t0

        total = np.full(n, np.nan, dtype=np.float32)
        for i, task in enumerate(tasks):
            if errors[i] is None:
                total[i] = sum(w * cols[c][i] for c, w in self.settings.weights[task].items() if w)
        out = table
        for c in REWARD_COMPONENTS:
            out = _set_column(out, f"reward_{c}", pa.array(cols[c], pa.float32(), mask=np.isnan(cols[c])))
        out = _set_column(out, "reward_total", pa.array(total, pa.float32(), mask=np.isnan(total)))
        out = _set_column(out, "reward_error", pa.array(errors, pa.string()))
        timing = json.dumps({"rows": n, "seconds": seconds}).encode()
        return out.replace_schema_metadata({**(out.schema.metadata or {}), REWARD_TIMING_KEY: timing})


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.schema.names:
        return table.set_column(table.schema.get_field_index(name), name, values)
    return table.append_column(name, values)


__all__ = [
    "POSE_RESPONSE",
    "RewardScorer",
    "RewardSettings",
    "TextEmbedder",
    "format_reward",
    "joint_reward",
    "semantic_reward",
    "text_similarity",
    "REQUIRED_COLUMNS",
]
