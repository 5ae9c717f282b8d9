"""Training and evaluation of the pose-text retriever (`poserft retriever train|eval`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from poserft.common.config import RetrieverTrainConfig
from poserft.common.metrics import r_precision, retrieval_recalls
from poserft.common.train_state import load_train_state, save_train_state
from poserft.data.captioner import Captioner
from poserft.data.mixture import load_mixture, load_pose_only
from poserft.reward_service.retriever import Retriever, RetrieverConfig, pose_features

TrainSettings = RetrieverTrainConfig


def _poses(table, column: str) -> np.ndarray:
    return np.asarray(table[column].combine_chunks().flatten()).reshape(-1, 24, 3)


def _train_pairs(data, settings: TrainSettings):
    """Pairs of the (mixed) train split; `data` is a folder or the data.sources list (poserft.data.mixture)."""
    table = load_mixture(data, "train", task="text2pose", seed=settings.seed)
    pose_id, aa, joints = (
        np.asarray(table["pose_id"]),
        _poses(table, "target_pose"),
        _poses(table, "target_joints").astype(np.float64),
    )
    captions = table["caption"].to_pylist()
    extra = load_pose_only(
        data, "train"
    )  # uncaptioned poses of sources marked pose_only, captioned by the built-in captioner
    if extra is not None:
        extra_ids, extra_joints = np.asarray(extra["pose_id"]), _poses(extra, "target_joints").astype(np.float64)
        captions += Captioner(seed=10_000 + 97 * settings.seed).caption(extra_joints, ids=extra_ids.tolist())
        pose_id, aa, joints = (
            np.concatenate([pose_id, extra_ids]),
            np.concatenate([aa, _poses(extra, "target_pose")]),
            np.concatenate([joints, extra_joints]),
        )
    keep = np.ones(len(pose_id), bool) if settings.half is None else (pose_id % 2 == settings.half)
    aa, joints, ids = aa[keep], joints[keep], pose_id[keep]
    captions = [c for c, k in zip(captions, keep) if k]
    variants = [captions]
    if settings.caption_variants > 1:
        for k in range(1, settings.caption_variants):
            variants.append(Captioner(seed=10_000 + 97 * settings.seed + k).caption(joints, ids=ids.tolist()))
    return torch.from_numpy(aa.astype(np.float32)), variants


def _val_metrics(model: Retriever, data_dir, split: str = "val") -> dict:
    table = load_mixture(data_dir, split, task="text2pose")
    aa = torch.from_numpy(
        np.asarray(table["target_pose"].combine_chunks().flatten()).reshape(-1, 24, 3).astype(np.float32)
    )
    text = model.embed_text(table["caption"].to_pylist())
    pose = model.embed_pose(aa)
    out = retrieval_recalls(text, pose, ks=(1, 5, 10))
    if len(aa) >= 32:
        out.update(r_precision(text, pose, pool=32))
    out["pairs"] = len(aa)
    return out


def train_retriever(data_dir, out: str | Path, settings: TrainSettings, progress: bool = True) -> dict:
    """`data_dir`: a dataset folder, or the data.sources list of a mixture (poserft.data.mixture)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    aa, variants = _train_pairs(data_dir, settings)
    feats = pose_features(aa)
    cfg = RetrieverConfig(text_encoder=settings.text_encoder)
    model = Retriever(cfg)
    text_inputs = [model.text_inputs(v) for v in variants]  # precomputed: ids or MiniLM embeddings
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = len(feats)
    steps_per_epoch = max(1, n // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * 0.5 * (1 + np.cos(np.pi * min(s, total) / total))
    )
    state_path = out / "train_state.pt"
    restored = load_train_state(state_path, model, opt, sched, settings.model_dump())
    start_epoch, history = (restored["epoch"], restored["history"]) if restored else (0, [])
    if restored:
        print(f"resuming {out} at epoch {start_epoch}/{settings.epochs}")

    g = torch.Generator().manual_seed(settings.seed)
    for _ in range(start_epoch):  # replay the permutations so a resumed run sees the same order
        torch.randperm(n, generator=g)
    t0 = time.time()
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        inputs = text_inputs[epoch % len(text_inputs)]
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"retriever epoch {epoch + 1}/{settings.epochs}",
            disable=not progress,
            leave=False,
        )
        losses = []
        for b in bar:
            idx = perm[b * settings.batch_size : (b + 1) * settings.batch_size]
            batch_text = inputs[idx]
            if batch_text.dtype == torch.long:  # trim clause padding shared by the whole batch
                batch_text = batch_text[:, : int((batch_text != 0).any(-1).sum(1).max())]
            loss = model.contrastive_loss(model.embed_text_inputs(batch_text), model.embed_pose_features(feats[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        val = _val_metrics(model, data_dir)
        history.append(
            {"epoch": epoch + 1, "loss": float(np.mean(losses)), **{k: val[k] for k in ("recall_at_10_t2p", "mrecall")}}
        )
        if progress:
            print(
                f"epoch {epoch + 1}: loss {history[-1]['loss']:.3f}  val R@10 t2p {val['recall_at_10_t2p']:.1f}  "
                f"mRecall {val['mrecall']:.1f}"
            )
        save_train_state(state_path, model, opt, sched, settings.model_dump(), epoch=epoch + 1, history=history)
    model.save(
        out,
        extra={
            "train": settings.model_dump(),
            "history": history,
            "train_pairs": n,
            "train_seconds": round(time.time() - t0, 1),
        },
    )
    return {"history": history, "out": str(out)}


def evaluate_retriever(
    data_dir: str | Path, ckpt: str | Path, out_json: str | Path | None = None, split: str = "test"
) -> dict:
    model = Retriever.load(ckpt)
    metrics = _val_metrics(model, Path(data_dir), split=split)
    metrics.update({"split": split, "ckpt": str(ckpt), "text_encoder": model.cfg.text_encoder})
    chance = {f"chance_recall_at_{k}": 100.0 * k / metrics["pairs"] for k in (1, 5, 10)}
    metrics.update(chance)
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def format_metrics_table(m: dict) -> str:
    lines = ["| direction | R@1 | R@5 | R@10 |", "|---|---|---|---|"]
    for d, name in (("t2p", "text-to-pose"), ("p2t", "pose-to-text")):
        lines.append(
            f"| {name} | {m[f'recall_at_1_{d}']:.1f} | {m[f'recall_at_5_{d}']:.1f} | {m[f'recall_at_10_{d}']:.1f} |"
        )
    lines.append(
        f"\nmRecall {m['mrecall']:.1f}; R-precision@32 t2p {m.get('r_precision_t2p', float('nan')):.1f}, "
        f"p2t {m.get('r_precision_p2t', float('nan')):.1f}; {m['pairs']} test pairs, chance R@10 "
        f"{m['chance_recall_at_10']:.1f}"
    )
    return "\n".join(lines)
