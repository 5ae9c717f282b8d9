"""Refit the pose head on frozen inputs after SFT (`sft.head_refit_epochs`; issue 14).

SFT sees each text2pose row about once in the demo's budget: every visit pays for the LM's
forward and backward pass. A small regressor from the same text features to the pose, trained
for tens of epochs, does much better on descriptions people write (NOTES.md, "Text-to-pose, fifth
step"), and so does the policy when its head gets those epochs. Here the rest of the policy is
frozen, so what the head reads for each training row (`PosePolicy.head_input`: the `<POSE>`
hidden state under the row's teacher-forced answer, plus the text skip) is computed once; the
head alone then trains on those vectors for `head_refit_epochs` epochs with the SFT pose loss, at
the cost of a small MLP. At inference the head reads exactly these vectors again, because a
text2pose or image2pose answer is the task's fixed template and nothing before `<POSE>` changes.

The rows are every text2pose row of the training split and a seeded sample of
`head_refit_image_rows` image2pose rows (the head is shared; without them image2pose drifts).
`head_refit_width` first widens the head's hidden layer; the new units start with zero output
weights, so the head's output is unchanged until it trains. The checkpoint's meta records the
width (`meta["head"]["width"]`), so every engine builds the same head.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from poserft.learner.sft import Examples, batch_inputs, pose_loss
from poserft.model.policy import PosePolicy


def widen_head(policy: PosePolicy, width: int) -> None:
    """Give the head's mean MLP `width` hidden units, keeping its output (new units silent)."""
    first, last = policy.head.mean[0], policy.head.mean[2]
    old = first.out_features
    if width < old:
        raise ValueError(f"sft.head_refit_width {width} is narrower than the head's {old} units; it can only widen")
    if width == old:
        return
    wide_in, wide_out = nn.Linear(first.in_features, width), nn.Linear(width, last.out_features)
    with torch.no_grad():
        wide_in.weight[:old], wide_in.bias[:old] = first.weight, first.bias
        wide_out.weight.zero_()
        wide_out.weight[:, :old] = last.weight
        wide_out.bias.copy_(last.bias)
    policy.head.mean[0], policy.head.mean[2] = wide_in.to(first.weight.device), wide_out.to(first.weight.device)
    policy.head.cfg.width = width
    policy.meta.setdefault("head", {})["width"] = width


def refit_rows(ex: Examples, image_rows: int, seed: int) -> np.ndarray:
    """Every text2pose row and a seeded sample of `image_rows` image2pose rows."""
    tasks = np.asarray(ex.tasks)
    text = np.flatnonzero(tasks == "text2pose")
    image = np.flatnonzero(tasks == "image2pose")
    if len(image) > image_rows:
        image = np.sort(np.random.default_rng(seed).choice(image, image_rows, replace=False))
    return np.concatenate([text, image])


@torch.no_grad()
def head_inputs(policy: PosePolicy, ex: Examples, rows: np.ndarray, batch: int = 64, progress: bool = True):
    """(len(rows), h) head inputs of the rows under their teacher-forced answers, in `rows` order.
    Batches are cut from the rows sorted by length, so they carry little padding."""
    policy.eval()
    rows = np.asarray(rows)
    order = np.argsort(ex.lengths()[rows], kind="stable")
    out = []
    for s in tqdm(range(0, len(rows), batch), desc="head refit: inputs", disable=not progress, leave=False):
        inp = batch_inputs(policy, ex, rows[order[s : s + batch]])
        res = policy(inp)
        if not bool(res["has_pose"].all()):
            raise ValueError("head refit: a training answer has no <POSE> token; the refit needs pose rows only")
        out.append(policy.head_input(res["hidden_pose"], inp))
    x = torch.empty(len(rows), out[0].shape[1]) if out else torch.empty(0)
    x[torch.from_numpy(order)] = torch.cat(out)
    return x


def refit_head(policy: PosePolicy, ex: Examples, settings, progress: bool = True) -> dict:
    """Widen (if asked) and train `policy.head` alone on frozen head inputs; returns a summary."""
    t0 = time.time()
    if settings.head_refit_width:
        widen_head(policy, settings.head_refit_width)
    rows = refit_rows(ex, settings.head_refit_image_rows, settings.seed)
    if not len(rows):
        raise ValueError("head refit: the training split has no text2pose or image2pose rows")
    n_text = sum(ex.tasks[int(i)] == "text2pose" for i in rows)
    x = head_inputs(policy, ex, rows, progress=progress).detach()
    target_6d, target_joints = ex.target_6d[rows], ex.target_joints[rows]
    joint_tasks = set(settings.pose_joint_tasks) if settings.pose_joint_weight else set()
    joint_rows = torch.tensor([ex.tasks[int(i)] in joint_tasks for i in rows], dtype=torch.bool)
    weights = (settings.pose_l1_weight, settings.pose_nll_weight, settings.pose_joint_weight, settings.pose_6d_weight)
    seconds_inputs = time.time() - t0

    head = policy.head.train()
    params = list(head.parameters())
    opt = torch.optim.AdamW(params, lr=settings.head_refit_lr, weight_decay=settings.weight_decay)
    bs = min(settings.head_refit_batch_size, len(rows))
    per_epoch = len(rows) // bs
    total = settings.head_refit_epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.head_refit_lr, total_steps=total, pct_start=0.05)
    gen = torch.Generator().manual_seed(settings.seed)
    bar = tqdm(total=total, desc="head refit", disable=not progress, dynamic_ncols=True)
    losses = []
    for epoch in range(settings.head_refit_epochs):
        for idx in torch.randperm(len(rows), generator=gen)[: per_epoch * bs].split(bs):
            mu, log_std = head(x[idx])
            loss, stats = pose_loss(mu, log_std, target_6d[idx], target_joints[idx], joint_rows[idx], weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            sched.step()
            bar.update(1)
            losses.append(loss.item())
        bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-per_epoch:]):.4f}")
    bar.close()
    policy.train()
    return {
        "epochs": settings.head_refit_epochs,
        "width": head.mean[0].out_features,
        "rows": {"text2pose": n_text, "image2pose": len(rows) - n_text},
        "loss_first_epoch": round(float(np.mean(losses[:per_epoch])), 5),
        "loss_last_epoch": round(float(np.mean(losses[-per_epoch:])), 5),
        "seconds_inputs": round(seconds_inputs, 1),
        "seconds": round(time.time() - t0, 1),
    }
