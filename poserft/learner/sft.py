"""Supervised fine-tuning over the three tasks (`poserft sft`).

Two phases in one resumable loop:

1. Vision alignment (`align_steps`, the analogue of LLaVA's stage 1): the vision encoder and
   projector learn, through a throwaway probe over the projected image tokens, to make the pose
   readable from those tokens. Without it the tiny from-scratch LM never routes image content to
   `<POSE>`: its hidden state there collapses to a constant (mean-pose output) because the
   randomly initialised image tokens carry no usable signal to attend to.
2. SFT over the three tasks. Loss per batch = LM cross-entropy on response tokens
   + pose_l1_weight * L1 between rotation matrices of mu and of the target (ChatPose)
   + pose_6d_weight * L1 between the raw 6D numbers (keeps mu on the scale of valid 6D)
   + pose_joint_weight * mean joint-position error (m) of FK(mu) vs FK(target), on the rows of
     the tasks in pose_joint_tasks (the others count as zero in the batch mean)
   + pose_nll_weight * Gaussian NLL of the target under (mu.detach(), std), per dim.
   The joint term is ours (ChatPose has only the rotation loss): it weights each rotation by
   how far it moves the body. The NLL sees a detached mean so it only calibrates the std.
3. Head refit (`head_refit_epochs`, default off; after the last step, not resumable on its own:
   an interrupted refit starts again from the finished state). SFT sees each text2pose row about
   once in the demo's budget, every visit paying for the LM's forward and backward pass; a small
   regressor from the same text features needs tens of epochs (NOTES.md, "Text-to-pose, fifth
   step"). So the rest of the policy is frozen, what the head reads for each training row
   (`PosePolicy.head_input`: the `<POSE>` hidden state under the row's teacher-forced answer, plus
   the text skip) is computed once, and the head alone trains on those vectors with the same pose
   loss. At inference the head reads exactly these vectors, because a text2pose or image2pose
   answer is the task's fixed template and nothing before `<POSE>` changes. The rows are every
   text2pose row and a seeded sample of `head_refit_image_rows` image2pose rows (the head is
   shared). `head_refit_width` first widens the head's hidden layer (new units start with zero
   output weights, so the output is unchanged until it trains; `meta["head"]["width"]` records it).
   `head_refit_words_width` adds the head's word path (`PosePolicy.head_input`; recorded as
   `meta["head"]["words_width"]`): text2pose rows then train it, from their prompts' text-tower
   features, and the LM runs over the image rows only (a text row's hidden state would be
   thrown away). `head_refit_text_rotation_weight`
   scales the rotation terms of the text2pose rows (0: the joint term alone).

Resuming from `state.pt` reaches the same step and data position as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from poserft.common.body import NUM_JOINTS, POSE_6D_DIM, BodyModel
from poserft.common.config import SFTConfig
from poserft.common.metrics import mpjpe
from poserft.common.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_rot6d,
    heading_undo,
    matrix_to_axis_angle,
    rot6d_to_matrix,
)
from poserft.common.train_state import load_train_state, save_train_state
from poserft.data.mixture import load_mixture
from poserft.model.checkpoint import load_policy, save_policy
from poserft.model.policy import PosePolicy, gaussian_log_prob, words_mlp
from poserft.model.text_tower import WIDTH as TOWER_WIDTH


@dataclass
class Examples:
    """Pre-tokenised task rows, indexable by an array of row numbers."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    images: list[bytes | None]
    pose_inputs: list[np.ndarray | None]
    target_6d: torch.Tensor  # (N, 144), meaningful where is_pose_task
    target_joints: torch.Tensor  # (N, 24, 3)
    is_pose_task: torch.Tensor  # (N,) bool
    tasks: list[str]

    def __len__(self):
        return len(self.tasks)

    def lengths(self) -> np.ndarray:
        """Tokens per row (prompt with its image slots + response): what a batch pads to."""
        return np.array([len(p) + len(r) for p, r in zip(self.prompt_ids, self.response_ids)])


def _encode_once(texts: list[str], encode) -> list[list[int]]:
    """Tokenise each distinct text once (prompts and references repeat across rows)."""
    cache: dict[str, list[int]] = {}
    return [cache[t] if t in cache else cache.setdefault(t, encode(t)) for t in texts]


def face_forward(aa: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 24, 3) axis-angle poses and their (N, 24, 3) joints turned about the vertical axis to
    face +z (tilt kept): a description says nothing of the facing direction, so a text2pose
    target keeps none (as PoseScript normalises its poses); image2pose keeps the camera's view."""
    rot = axis_angle_to_matrix(aa.double())
    undo = heading_undo(rot[:, 0])
    rot[:, 0] = undo @ rot[:, 0]
    return matrix_to_axis_angle(rot).to(aa.dtype), (joints.double() @ undo.transpose(1, 2)).to(joints.dtype)


def make_examples(policy: PosePolicy, table) -> Examples:
    tasks = table["task"].to_pylist()
    prompts = table["prompt"].to_pylist()
    refs = table["reference_text"].to_pylist()
    aa = torch.from_numpy(
        np.array(table["target_pose"].combine_chunks().flatten(), dtype=np.float32).reshape(-1, 24, 3)
    )
    joints = torch.from_numpy(
        np.array(table["target_joints"].combine_chunks().flatten(), dtype=np.float32).reshape(-1, 24, 3)
    )
    text_rows = torch.tensor([i for i, t in enumerate(tasks) if t == "text2pose"], dtype=torch.long)
    target_aa, target_joints = aa.clone(), joints.clone()
    if len(text_rows):
        target_aa[text_rows], target_joints[text_rows] = face_forward(aa[text_rows], joints[text_rows])
    images = table["image"].to_pylist()
    prompt_ids = _encode_once(prompts, policy.encode_prompt)
    response_ids = _encode_once(refs, policy.encode_response)
    return Examples(
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        images=[im if t == "image2pose" else None for im, t in zip(images, tasks)],
        pose_inputs=[aa[i].reshape(-1).numpy() if t == "pose2text" else None for i, t in enumerate(tasks)],
        target_6d=axis_angle_to_rot6d(target_aa).reshape(-1, 144),
        target_joints=target_joints,
        is_pose_task=torch.tensor([t != "pose2text" for t in tasks]),
        tasks=tasks,
    )


def batch_inputs(policy: PosePolicy, ex: Examples, idx):
    idx = [int(i) for i in idx]
    return policy.build_inputs(
        [ex.prompt_ids[i] for i in idx],
        [ex.response_ids[i] for i in idx],
        [ex.images[i] for i in idx],
        [ex.pose_inputs[i] for i in idx],
    )


_BODY = BodyModel()


def pose_joints(mu: torch.Tensor) -> torch.Tensor:
    """(N, 24, 3) joint positions (m) of 24x6D poses `mu` (N, 144) by forward kinematics."""
    return _BODY.forward_kinematics(mu)


def mean_joint_error(mu: torch.Tensor, target_joints: torch.Tensor) -> torch.Tensor:
    """Mean FK joint-position error (m) of 24x6D poses `mu` (N, 144) against joints (N, 24, 3)."""
    return (pose_joints(mu) - target_joints.to(mu.device)).norm(dim=-1).mean()


def sft_loss(
    policy: PosePolicy,
    ex: Examples,
    idx,
    l1_weight: float,
    nll_weight: float,
    joint_weight: float = 0.0,
    six_d_weight: float = 0.0,
    joint_tasks: tuple[str, ...] = ("text2pose", "image2pose"),
) -> tuple[torch.Tensor, dict]:
    inp = batch_inputs(policy, ex, idx)
    out = policy(inp)
    mask = out["mask"]
    ce = -(out["token_logp"].sum() / mask.sum().clamp_min(1))
    idx_t = torch.as_tensor(np.asarray(idx))
    pose_rows = ex.is_pose_task[idx_t] & out["has_pose"]
    stats = {"ce": ce.item()}
    loss = ce
    if pose_rows.any():
        joint_rows = (
            torch.tensor([ex.tasks[int(i)] in joint_tasks for i in idx_t[pose_rows]], dtype=torch.bool)
            if joint_weight
            else None
        )
        pose, pose_stats = pose_loss(
            out["mu"][pose_rows],
            out["log_std"][pose_rows],
            ex.target_6d[idx_t][pose_rows],
            ex.target_joints[idx_t][pose_rows],
            joint_rows,
            (l1_weight, nll_weight, joint_weight, six_d_weight),
        )
        loss = loss + pose
        stats.update(pose_stats)
    stats["loss"] = loss.item()
    return loss, stats


def pose_loss(mu, log_std, target_6d, target_joints, joint_rows, weights) -> tuple[torch.Tensor, dict]:
    """The SFT pose loss of rows with a target: L1 on the rotation matrices, L1 on the raw 6D
    numbers, the Gaussian NLL of the target (mu detached: it trains the std only) and, on
    `joint_rows` (bool, or None for none), the FK joint-position error in metres. `weights`:
    (l1, nll, joint, 6d)."""
    l1_weight, nll_weight, joint_weight, six_d_weight = weights
    l1 = (rot6d_to_matrix(mu.reshape(-1, 6)) - rot6d_to_matrix(target_6d.reshape(-1, 6))).abs().mean()
    nll = -gaussian_log_prob(target_6d, mu.detach(), log_std, reduce="mean").mean()
    l1_6d = (mu - target_6d).abs().mean()
    loss = l1_weight * l1 + six_d_weight * l1_6d + nll_weight * nll
    stats = {"l1": l1.item(), "l1_6d": l1_6d.item(), "nll": nll.item(), "std": log_std.exp().mean().item()}
    if joint_weight and joint_rows is not None and joint_rows.any():
        err = (_BODY.forward_kinematics(mu[joint_rows]) - target_joints[joint_rows]).norm(dim=-1)
        loss = loss + joint_weight * err.mean(1).sum() / len(mu)  # rows without the term count as zero
        stats["joint_m"] = err.mean().item()
    return loss, stats


class AlignProbe(nn.Module):
    """Throwaway readout used only in the alignment phase: flattened projected image tokens -> 24x6D."""

    def __init__(self, tokens: int, hidden: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(tokens * hidden, width), nn.ReLU(), nn.Linear(width, POSE_6D_DIM)
        )
        with torch.no_grad():
            self.net[3].weight.mul_(0.1)
            self.net[3].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0] * NUM_JOINTS))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def align_loss(policy: PosePolicy, probe: AlignProbe, ex: Examples, idx) -> tuple[torch.Tensor, dict]:
    """Joint-position error of the probe's pose read from the projected image tokens."""
    inp = batch_inputs(policy, ex, idx)
    if inp.images is None or len(inp.image_rows) != len(idx):
        raise ValueError("alignment batches must be image2pose rows only")
    mu = probe(policy.projector(policy.vision(inp.images)))
    err = mean_joint_error(mu, ex.target_joints[torch.as_tensor(np.asarray(idx))])
    return err, {"align_joint_m": err.item()}


SFTSettings = SFTConfig  # the pydantic section is the settings object


def _lr_lambda(s: SFTSettings):
    """Constant after a short warm-up during alignment; warm-up then cosine (to 5%) during SFT."""

    def f(step):
        if step < s.align_steps:
            return min(1.0, (step + 1) / max(1, s.warmup_steps))
        step -= s.align_steps
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        frac = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def _order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of step `step`: a deterministic function of (seed, step), so resume is exact."""
    start = step * batch_size
    epoch, offset = divmod(start, n)
    rows = _order(n, seed, epoch)[offset : offset + batch_size]
    if len(rows) < batch_size:
        rows = np.concatenate([rows, _order(n, seed, epoch + 1)[: batch_size - len(rows)]])
    return rows


GROUP_BATCHES = 64  # batches per length-sorted group of `EpochBatches`


class EpochBatches:
    """The SFT batch of each step when tasks are weighted or batches grouped by length; a
    deterministic function of (seed, step), so a resumed run sees the same batches.

    An epoch holds each row `floor(w)` times, w being its task's weight (`sft.task_weights`), plus
    round(sum of the fractions) more rows drawn without replacement in proportion to their
    fractions: the same number of rows every epoch. With `group` (`sft.group_by_length`) the
    epoch's shuffled rows are cut into groups of GROUP_BATCHES batches, each group sorted by
    length and cut into batches, and the batches shuffled: a batch is padded to its longest row,
    so mixing 20-token captions with 150-token pose2text answers would pay 150 for every row.
    Only the epoch's last batch may be shorter than `batch_size`.
    """

    def __init__(self, lengths, batch_size: int, seed: int, weights=None, group: bool = True):
        self.lengths = np.asarray(lengths)
        n = len(self.lengths)
        self.weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (n,) or (self.weights < 0).any() or self.weights.sum() <= 0:
            raise ValueError("SFT row weights must be one non-negative number per row, not all 0")
        self.batch_size, self.seed, self.group = int(batch_size), seed, group
        self._repeats = np.floor(self.weights).astype(int)
        self._frac = self.weights - self._repeats
        self._extra = int(round(self._frac.sum()))
        self.rows_per_epoch = int(self._repeats.sum()) + self._extra
        self.per_epoch = math.ceil(self.rows_per_epoch / self.batch_size)
        self._epoch, self._batches = None, []

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """The epoch's rows, shuffled."""
        rows = np.repeat(np.arange(len(self.lengths)), self._repeats)
        if self._extra:
            rng = np.random.default_rng([self.seed, epoch, 2])
            extra = rng.choice(len(self.lengths), self._extra, replace=False, p=self._frac / self._frac.sum())
            rows = np.concatenate([rows, np.sort(extra)])
        return rows[_order(len(rows), self.seed, epoch)]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if epoch != self._epoch:
            order = self.epoch_rows(epoch)
            if not self.group:
                batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            else:
                group = self.batch_size * GROUP_BATCHES
                batches = []
                for start in range(0, len(order), group):
                    chunk = order[start : start + group]
                    chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                    batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
                shuffle = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
                batches = [batches[i] for i in shuffle]
            self._epoch, self._batches = epoch, batches
        return self._batches

    def __call__(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        return self.epoch_batches(epoch)[k]


def task_row_weights(tasks: list[str], task_weights: dict[str, float]) -> np.ndarray | None:
    """Per-row sampling weights from `sft.task_weights` (tasks not named weigh 1; a named task the
    split lacks weighs nothing); None if every row weighs 1."""
    weights = np.array([float(task_weights.get(t, 1.0)) for t in tasks])
    if weights.sum() <= 0:
        raise ValueError("sft.task_weights gives every task of the training split weight 0: nothing to train on")
    return None if (weights == 1).all() else weights


@torch.no_grad()
def validate(policy: PosePolicy, ex: Examples, body: BodyModel, rows: int = 192) -> dict:
    policy.eval()
    idx = np.unique(np.linspace(0, len(ex) - 1, min(rows, len(ex))).astype(int))  # spread over the tasks
    stats = []
    pose_err = []
    for i in range(0, len(idx), 64):
        b = idx[i : i + 64]
        _, st = sft_loss(policy, ex, b, 1.0, 1.0)
        stats.append(st)
        out = policy(batch_inputs(policy, ex, b))
        sel = torch.as_tensor([ex.tasks[j] == "image2pose" for j in b]) & out["has_pose"]
        if sel.any():
            pred = body.forward_kinematics(out["mu"][sel].double())
            pose_err.append(mpjpe(pred, ex.target_joints[torch.as_tensor(b)][sel].double()))
    policy.train()
    res = {k: float(np.mean([s[k] for s in stats if k in s])) for k in ("ce", "l1", "nll")}
    if pose_err:
        res["image2pose_mpjpe_mm_tf"] = float(torch.cat(pose_err).mean())
    return res


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


def add_words_path(policy: PosePolicy, width: int) -> None:
    """Give the head a word path of `width` units (freshly initialised; `PosePolicy.head_input`)."""
    if policy.text_tokens == 0:
        raise ValueError("sft.head_refit_words_width needs a text tower (model.text_tower); this policy has none")
    cfg = policy.head.cfg
    if cfg.words_width:
        raise ValueError(f"the head already has a word path ({cfg.words_width} units)")
    cfg.words_width = width
    device = policy.head.mean[0].weight.device
    policy.head.words = words_mlp(width, cfg.hidden_size).to(device)
    policy.meta.setdefault("head", {})["words_width"] = width


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
    x = torch.cat(out)
    return x[torch.from_numpy(np.argsort(order)).to(x.device)]  # back to the order of `rows`


def refit_head(policy: PosePolicy, ex: Examples, settings, progress: bool = True) -> dict:
    """Widen (if asked) and train `policy.head` alone on frozen head inputs; returns a summary."""
    t0 = time.time()
    if settings.head_refit_width:
        widen_head(policy, settings.head_refit_width)
    rows = refit_rows(ex, settings.head_refit_image_rows, settings.seed)
    if not len(rows):
        raise ValueError("head refit: the training split has no text2pose or image2pose rows")
    is_text = torch.tensor([ex.tasks[int(i)] == "text2pose" for i in rows], dtype=torch.bool)
    n_text = int(is_text.sum())
    words = None
    if settings.head_refit_words_width:
        # text2pose rows will read the word path, so their <POSE> hidden states are never used:
        # the LM runs over the image rows only (most of the refit's input time otherwise)
        image_idx = torch.nonzero(~is_text).squeeze(1)
        x = torch.zeros(len(rows), policy.head.cfg.hidden_size, device=policy.device)
        if len(image_idx):
            x[image_idx.to(x.device)] = head_inputs(policy, ex, rows[image_idx.numpy()], progress=progress)
        add_words_path(policy, settings.head_refit_words_width)
        words = torch.zeros(len(rows), TOWER_WIDTH, device=x.device)
        text_idx = torch.nonzero(is_text).squeeze(1)
        if len(text_idx):
            feats = policy.text_features([ex.prompt_ids[int(rows[i])] for i in text_idx.tolist()])
            words[text_idx.to(x.device)] = feats.to(x.device)
    else:
        x = head_inputs(policy, ex, rows, progress=progress).detach()
    target_6d, target_joints = ex.target_6d[rows], ex.target_joints[rows]
    joint_tasks = set(settings.pose_joint_tasks) if settings.pose_joint_weight else set()
    joint_rows = torch.tensor([ex.tasks[int(i)] in joint_tasks for i in rows], dtype=torch.bool)
    rot = settings.head_refit_text_rotation_weight
    weights = (settings.pose_l1_weight, settings.pose_nll_weight, settings.pose_joint_weight, settings.pose_6d_weight)
    text_weights = (weights[0] * rot, weights[1], weights[2], weights[3] * rot)
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
            xb, text = x[idx], is_text[idx]
            if words is not None and text.any():  # text2pose rows read the word path, trained here
                pos = torch.nonzero(text).squeeze(1).to(xb.device)
                xb = xb.index_copy(0, pos, head.words(words[idx[text]]))
            mu, log_std = head(xb)
            if rot == 1.0:
                loss, _ = pose_loss(mu, log_std, target_6d[idx], target_joints[idx], joint_rows[idx], weights)
            else:  # each task's mean loss, weighted by its share of the batch
                loss = 0.0
                for part, w in ((text, text_weights), (~text, weights)):
                    if part.any():
                        term, _ = pose_loss(
                            mu[part],
                            log_std[part],
                            target_6d[idx][part],
                            target_joints[idx][part],
                            joint_rows[idx][part],
                            w,
                        )
                        loss = loss + term * part.float().mean()
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
        "words_width": settings.head_refit_words_width,
        "text_rotation_weight": rot,
        "rows": {"text2pose": n_text, "image2pose": len(rows) - n_text},
        "loss_first_epoch": round(float(np.mean(losses[:per_epoch])), 5),
        "loss_last_epoch": round(float(np.mean(losses[-per_epoch:])), 5),
        "seconds_inputs": round(seconds_inputs, 1),
        "seconds": round(time.time() - t0, 1),
    }


def run_sft(
    init_ckpt: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    settings: SFTSettings,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train from `init_ckpt`; writes `out_dir/state.pt` periodically and `out_dir/policy` at the end.

    `stop_after` stops (after checkpointing) once that step is reached, as an interrupted run would.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    policy = load_policy(init_ckpt)
    if settings.head_refit_epochs and settings.head_refit_words_width and policy.text_tokens == 0:
        raise ValueError(  # before any step, not after the SFT loop
            f"sft.head_refit_words_width needs a policy with a text tower; {init_ckpt} has none "
            "(initialise it with model.text_tower: minilm-wordemb)"
        )
    policy.train()
    train = make_examples(policy, load_mixture(data_dir, "train", seed=settings.seed))  # a folder, or data.sources
    val = make_examples(policy, load_mixture(data_dir, "val"))
    body = BodyModel()
    probe = AlignProbe(policy.image_tokens, policy.lm.config.hidden_size)
    modules = nn.ModuleDict({"policy": policy, "probe": probe})  # what state.pt holds
    # One optimizer over both: parameters without a gradient in a phase (the LM while aligning,
    # the probe during SFT) are skipped by AdamW, so the phases do not disturb each other.
    opt = torch.optim.AdamW(modules.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(settings))
    state_path = out_dir / "state.pt"
    # Settings that cannot change the result (threads, logging cadence) may differ on resume.
    # The head refit runs after the last step, so its settings do not touch the state either.
    refit_keys = {k for k in SFTSettings.model_fields if k.startswith("head_refit_")}
    same = settings.model_dump(exclude={"threads", "val_every", "val_rows", "ckpt_every", *refit_keys})
    added = {  # how states from before these keys ran
        "group_by_length": False,
        "task_weights": {},
        "pose_joint_tasks": ["text2pose", "image2pose"],
    }
    restored = load_train_state(state_path, modules, opt, sched, same, added)
    step, log = (restored["step"], restored["log"]) if restored else (0, [])
    total = settings.align_steps + settings.steps
    if restored:
        print(f"resuming SFT from {state_path} at step {step}/{total}")
    image_rows = np.array([i for i, t in enumerate(train.tasks) if t == "image2pose"])
    if settings.align_steps and not len(image_rows):
        raise ValueError(
            "sft.align_steps > 0 needs image2pose rows in the training split; set sft.align_steps: 0 for text-only data"
        )

    row_weights = task_row_weights(train.tasks, settings.task_weights)
    if settings.group_by_length or row_weights is not None:
        sft_batch = EpochBatches(
            train.lengths(), settings.batch_size, settings.seed, row_weights, settings.group_by_length
        )
    else:
        sft_batch = lambda k: batch_indices(len(train), settings.batch_size, settings.seed, k)  # noqa: E731

    def save_state():
        save_train_state(state_path, modules, opt, sched, same, step=step, log=log)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.dtype == "bf16")
    bar = tqdm(total=total, initial=step, desc="sft", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    while step < total:
        aligning = step < settings.align_steps
        bar.set_description("align" if aligning else "sft")
        with autocast:
            if aligning:
                idx = image_rows[batch_indices(len(image_rows), settings.batch_size, settings.seed, step)]
                loss, st = align_loss(policy, probe, train, idx)
            else:
                idx = sft_batch(step - settings.align_steps)
                loss, st = sft_loss(
                    policy,
                    train,
                    idx,
                    settings.pose_l1_weight,
                    settings.pose_nll_weight,
                    settings.pose_joint_weight,
                    settings.pose_6d_weight,
                    tuple(settings.pose_joint_tasks),
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), settings.grad_clip)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in st.items() if k in ("ce", "l1", "joint_m", "std", "align_joint_m")})
        sft_step = step - settings.align_steps
        if step == settings.align_steps or (sft_step > 0 and (sft_step % settings.val_every == 0 or step == total)):
            v = validate(policy, val, body, settings.val_rows)
            log.append(
                {
                    "step": step,
                    "phase": "align" if sft_step <= 0 else "sft",
                    "seconds": round(time.time() - t0, 1),
                    **{f"train_{k}": x for k, x in st.items()},
                    **{f"val_{k}": x for k, x in v.items()},
                }
            )
            tqdm.write(f"sft step {step}/{total}: " + "  ".join(f"{k} {x:.3f}" for k, x in v.items()))
        if step % settings.ckpt_every == 0 or step == total or step == stop_after:
            save_state()
        if stop_after is not None and step >= stop_after:
            bar.close()
            return {"step": step, "stopped": True, "log": log}
    bar.close()
    refit = {}
    if settings.head_refit_epochs:
        refit = {"head_refit": refit_head(policy, train, settings, progress)}
        tqdm.write(f"head refit: {refit['head_refit']}")
    save_policy(
        policy,
        out_dir / "policy",
        policy_version=0,
        stage="sft",
        sft_steps=settings.steps,
        align_steps=settings.align_steps,
        **refit,
    )
    return {
        "step": step,
        "log": log,
        "seconds": round(time.time() - t0, 1),
        "policy": str(out_dir / "policy"),
        **refit,
    }
