"""`rl.anchor`: a supervised pose term mixed into the RL updates (InstructGPT's "PPO-ptx", for the pose).

HyGRPO's pose reward on text2pose is the reward retriever's cosine, which ranks a group's poses
no better than chance on short, everyday descriptions (NOTES.md, issue 14): its updates move the
poses of people's words away from what SFT had learned. The anchor adds, to each update, the
mean joint-position error (metres, after forward kinematics) of the policy's pose *mean* on a
few training rows with a target pose, so the head keeps fitting the data while the reward moves
it. With `rl.anchor.target: reference` the rows are held to the frozen reference (SFT) policy's
pose means instead of the data's targets: the term then keeps what SFT answered on them (a
trust region on rows the RL batch does not hold) and pulls them toward no new fit. The rows are
drawn from the training split by (seed, policy version, update, rank): the same run draws the
same rows, a resumed one too, and data-parallel ranks draw different ones.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from poserft.data.mixture import load_mixture, text2pose_words_within
from poserft.learner.sft import batch_inputs, make_examples, mean_joint_error, pose_joints
from poserft.model.policy import PosePolicy


class NoShortRows(ValueError):
    """rl.anchor.max_words leaves no training row: the learner turns the anchor off with a warning."""


def no_short_rows(table: pa.Table, tasks: list[str], max_words: int) -> str | None:
    """Why rl.anchor.max_words leaves the anchor no row of `tasks` in the training `table` (None:
    some are left). The learner then runs without the anchor; the controller says so on the terminal."""
    table = table.filter(pc.is_in(table["task"], pa.array(list(tasks))))
    if not max_words or not table.num_rows or text2pose_words_within(table, high=max_words).num_rows:
        return None
    return (
        f"rl.anchor: no training row of {', '.join(tasks)} has a description of at most {max_words} words "
        "(rl.anchor.max_words); the anchor is off for this run"
    )


class PoseAnchor:
    """The training rows of `tasks` (a folder, a DataConfig or data.sources) and their loss."""

    def __init__(self, policy: PosePolicy, data, tasks: list[str], rows: int, seed: int, max_words: int = 0):
        tables = [load_mixture(data, "train", task=t, seed=seed) for t in tasks]
        table = pa.concat_tables([t for t in tables if t.num_rows])
        if not table.num_rows:
            raise ValueError(f"rl.anchor: the training split has no rows of {', '.join(tasks)}")
        if max_words:  # rl.anchor.max_words: text2pose rows with short descriptions only
            short = text2pose_words_within(table, high=max_words)
            if not short.num_rows:  # data without short descriptions: nothing for the anchor to hold
                raise NoShortRows(no_short_rows(table, tasks, max_words))
            table = short
        self.ex = make_examples(policy, table)
        self.rows, self.seed = rows, seed

    def draw(self, version: int, update: int, rank: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, version, update, rank])
        return rng.choice(len(self.ex), size=min(self.rows, len(self.ex)), replace=False)

    def pose_means(self, policy: PosePolicy, idx: np.ndarray, detach_hidden: bool) -> torch.Tensor:
        """(len(idx), 144) the policy's pose means of rows `idx` under their training answers. Rows
        that read the head's word path (text2pose with `meta["head"]["words_width"]`) take it
        straight from their descriptions' text-tower features: `PosePolicy.head_input` never uses
        their LM hidden state, so the LM does not run for them."""
        idx = [int(i) for i in idx]
        if policy.head.words is not None and all(self.ex.tasks[i] == "text2pose" for i in idx):
            head = policy.head
            feats = policy.text_features([self.ex.prompt_ids[i] for i in idx])
            return head(head.words(feats.to(policy.device, head.words[1].weight.dtype)).float())[0]
        out = policy(batch_inputs(policy, self.ex, idx), detach_pose_hidden=detach_hidden)
        if not bool(out["has_pose"].all()):
            raise ValueError("rl.anchor: a training answer has no <POSE> token")
        return out["mu"]

    def loss(
        self, policy: PosePolicy, idx: np.ndarray, detach_hidden: bool, reference: PosePolicy | None = None
    ) -> torch.Tensor:
        """Mean joint-position error (m) of the pose means of rows `idx`, with gradient, against
        the rows' target poses, or with `reference` against that policy's pose means (no gradient)."""
        mu = self.pose_means(policy, idx, detach_hidden)
        if reference is None:
            return mean_joint_error(mu, self.ex.target_joints[torch.as_tensor(np.asarray(idx))])
        low = next(reference.parameters()).dtype != torch.float32  # rl.learner.reference_dtype bfloat16
        with torch.no_grad(), torch.autocast(reference.device.type, dtype=torch.bfloat16, enabled=low):
            held = self.pose_means(reference, idx, detach_hidden=True).float()
        return mean_joint_error(mu, pose_joints(held))
