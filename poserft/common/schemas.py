"""Data contracts (docs/architecture.md §4) as Arrow schemas: TaskRecord, RolloutRecord, ScoredRecord.

Poses travel flattened: `target_pose` is 24x3 axis-angle (72 floats), `target_joints` 24x3
metres (72 floats), rollout poses are 24x6D (144 floats).
"""

from __future__ import annotations

import pyarrow as pa

TASKS = ("text2pose", "image2pose", "pose2text")
POSE_TOKEN = "<POSE>"
IMAGE_TOKEN = "<image>"
POSE_INPUT_TOKEN = "<pose>"
TEXT_TOKEN = "<text>"  # prompt slots of the text tower (poserft.model.text_tower), when a policy has one
POSE_RESPONSE = f"The SMPL pose of this person is {POSE_TOKEN}."

AA_DIM = 72
POSE_DIM = 144


def _vec(n: int) -> pa.DataType:
    return pa.list_(pa.float32(), n)


TASK_RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("pose_id", pa.int64(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("image", pa.binary()),  # PNG bytes for image2pose, else null
        pa.field("target_pose", _vec(AA_DIM), nullable=False),
        pa.field("target_joints", _vec(AA_DIM), nullable=False),
        pa.field("reference_text", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
    ]
)

ROLLOUT_RECORD_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),  # which of the G text responses
        pa.field("policy_version", pa.int64(), nullable=False),
        pa.field("worker_id", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.list_(pa.int32()), nullable=False),
        pa.field("response_tokens", pa.list_(pa.int32()), nullable=False),
        pa.field("token_logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("has_pose", pa.bool_(), nullable=False),
        pa.field("mu", _vec(POSE_DIM)),
        pa.field("log_std", _vec(POSE_DIM)),
        pa.field("pose", _vec(POSE_DIM)),
        pa.field("pose_logprob", pa.float32()),
        pa.field("generation_seconds", pa.float32(), nullable=False),
        pa.field("error", pa.string()),  # per-row failure (e.g. prompt longer than the context)
        # k-th pose drawn for this response (rl.sampling.pose_samples); null means 0 (one pose each)
        pa.field("pose_sample_index", pa.int32()),
    ]
)

REWARD_COMPONENTS = ("format", "text_similarity", "semantic", "joint")
# Reward weights per task and component: the default of `rewards.weights` and of `RewardSettings`.
DEFAULT_REWARD_WEIGHTS = {
    "text2pose": {"format": 1.0, "text_similarity": 0.25, "semantic": 1.0},
    "image2pose": {"format": 1.0, "text_similarity": 0.25, "joint": 1.0},
    "pose2text": {"format": 1.0, "text_similarity": 1.0},
}


def scored_record_schema(components=REWARD_COMPONENTS) -> pa.Schema:
    extra = [pa.field(f"reward_{c}", pa.float32()) for c in components]
    extra += [
        pa.field("reward_total", pa.float32()),
        pa.field("reward_error", pa.string()),  # why a row could not be scored; null when fine
        pa.field("advantage_discrete", pa.float32()),
        pa.field("advantage_continuous", pa.float32()),
    ]
    return pa.schema(list(ROLLOUT_RECORD_SCHEMA) + extra)


ROLLOUT_TASK_COLUMNS = ("id", "task", "prompt", "image", "target_pose")


def response_rows(table: pa.Table) -> pa.Table:
    """One row per text response: with several pose samples per response (rl.sampling.pose_samples)
    the rows after the first repeat its tokens, so throughput counts only the first."""
    if "pose_sample_index" not in table.schema.names:
        return table
    import pyarrow.compute as pc

    return table.filter(pc.fill_null(pc.equal(table["pose_sample_index"], 0), True))


class VersionMismatch(RuntimeError):
    """A weight update or a request named a policy version the worker does not hold."""


def check_rollout_request(
    worker_id: str, version: int, tasks, group_size: int, expected_version: int | None
) -> list[str]:
    """The checks every rollout worker (real or simulated) makes on a request; returns the task names."""
    if expected_version is not None and expected_version != version:
        raise VersionMismatch(f"{worker_id} holds policy version {version}, request expects {expected_version}")
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    if tasks.num_rows == 0:
        raise ValueError("rollout got an empty batch of tasks")
    missing = [c for c in ROLLOUT_TASK_COLUMNS if c not in tasks.schema.names]
    if missing:
        raise ValueError(f"task batch is missing columns {missing}")
    names = tasks["task"].to_pylist()
    unknown = sorted({t for t in names if t not in TASKS}, key=str)
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}")
    return names
