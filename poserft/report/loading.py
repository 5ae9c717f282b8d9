"""Reading a run folder for `poserft report`: metrics.jsonl, the rollout files' rewards, the ledger and
the checkpoint's metadata; the constants every part of the report shares."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPORT_MD = "report.md"
REPORT_DIR = "report"
STAGES = (
    ("gen_s", "generation"),
    ("reward_s", "reward scoring"),
    ("train_s", "learner step"),
    ("sync_s", "weight sync"),
)
COUNTERS = ("samples", "tokens", "dropped_stale_groups", "requeued_prompts", "worker_failures")
REWARDS = (
    ("format", "format", "1 = response matches the task template"),
    ("text_similarity", "text similarity", "sentence-embedding cosine, -1..1"),
    ("semantic", "semantic", "retriever text-pose cosine, -1..1"),
    ("joint", "joint", "1 / (1 + joint error / tau), 0..1"),
    ("joint_mean_pose", "joint of the mean pose", "joint reward of the head's mean, not of a sampled pose"),
    ("total", "total", "weighted sum per task"),
)
MEAN_POSE = "joint_mean_pose"  # computed here from the rollouts' `mu` and `target_joints`, not a rollout column
RUN_CONFIG = "config.yaml"  # the resolved config `poserft train` writes into the run folder
PLOT_FILES = ("rewards.png", "throughput.png", "staleness.png", "sync.png", "stage_times.png", "learner.png")
EXAMPLE_TASKS = ("text2pose", "image2pose")
EXAMPLES_PER_TASK = 3
MAX_REWARD_FILES = 1000  # per-task reward curves read at most this many rollout files
CAPTION_CHARS = 74
DPI = 110
TASK_COLOURS = {"text2pose": "tab:blue", "image2pose": "tab:orange", "pose2text": "tab:green"}
STAGE_COLOURS = {"gen_s": "tab:blue", "reward_s": "tab:purple", "train_s": "tab:orange", "sync_s": "tab:green"}


class ReportError(ValueError):
    """The folder is not a training run, or the report cannot be written; the message says which."""


def _stderr_warn(msg: str) -> None:
    print(f"poserft report: warning: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------- reading


def read_metrics(path: Path, warn: Callable[[str], None]) -> list[dict]:
    """The intact step lines of `metrics.jsonl`, one per step (last occurrence), sorted by step."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        raise ReportError(f"cannot read {path}: {err.strerror or err}") from err
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if not any(rest.strip() for rest in lines[i + 1 :]):
                warn(
                    f"{path}: skipped the last line ({i + 1}), which is incomplete JSON (a run killed while writing "
                    "it?)"
                )
            else:
                warn(f"{path}: skipped line {i + 1}, which is not valid JSON ({err.msg})")
            continue
        step = obj.get("step") if isinstance(obj, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            warn(f"{path}: skipped line {i + 1}, which has no integer 'step'")
            continue
        rows.append(obj)
    by_step = {}
    for r in rows:
        by_step[r["step"]] = r
    if len(by_step) < len(rows):
        warn(
            f"{path}: {len(rows) - len(by_step)} step line(s) repeat an earlier step (a resumed run trains the steps "
            "after its checkpoint again); the later line of each step is used"
        )
    return [by_step[s] for s in sorted(by_step)]


def _num(v) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return math.nan


def column(rows: list[dict], key: str) -> np.ndarray:
    """Float array of `key` over the rows; NaN where missing or not a number."""
    return np.array([_num(r.get(key)) for r in rows], dtype=np.float64)


def has(rows: list[dict], key: str) -> bool:
    return bool(rows) and bool(np.isfinite(column(rows, key)).any())


def is_running_total(values: np.ndarray) -> bool:
    d = np.diff(values)
    return not (d[np.isfinite(d)] < 0).any()


def increments(total: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Per-step values of a running total; NaN where the previous step is missing.

    A series that ever decreases is not a running total and is returned as it is."""
    if total.size == 0 or not is_running_total(total):
        return total.copy()
    out = np.full_like(total, math.nan)
    out[0] = total[0] if steps[0] == 1 else math.nan
    out[1:] = np.where(np.diff(steps) == 1, np.diff(total), math.nan)
    return out


@dataclass
class Series:
    """Per-step arrays derived from metrics.jsonl."""

    steps: np.ndarray
    wall_s: np.ndarray  # time between consecutive metric lines (stage sum for the first / after a gap)
    stage_sum_s: np.ndarray
    per_step: dict  # counter -> per-step increments
    totals: dict  # counter -> final running total (NaN when absent)
    pauses: int = 0


def derive(rows: list[dict]) -> Series:
    steps = np.array([r["step"] for r in rows], dtype=np.int64)
    stages = np.stack([column(rows, k) for k, _ in STAGES]) if rows else np.zeros((len(STAGES), 0))
    known = np.isfinite(stages).any(0)
    stage_sum = np.where(known, np.nansum(stages, 0), math.nan)
    t = column(rows, "time")
    wall = stage_sum.copy()
    pauses = 0
    if len(rows) > 1:
        dt = np.diff(t)
        ok = (np.diff(steps) == 1) & np.isfinite(dt) & (dt > 0)
        if ok.any():
            typical = float(np.median(dt[ok]))
            # a restart (resume) shows as a gap much longer than a step; fall back to the stage times there
            gap = ok & (dt > 10 * typical) & (dt > 30.0) & ~(dt < 2 * np.nan_to_num(stage_sum[1:], nan=0.0))
            pauses = int(gap.sum())
            ok &= ~gap
        wall[1:] = np.where(ok, dt, stage_sum[1:])
    per_step, totals = {}, {}
    for k in COUNTERS:
        c = column(rows, k)
        per_step[k] = increments(c, steps)
        finite = c[np.isfinite(c)]
        if not finite.size:
            totals[k] = math.nan
        else:
            totals[k] = float(finite[-1]) if is_running_total(c) else float(finite.sum())
    if "samples" in per_step:
        rows_col = column(rows, "rows")
        per_step["samples"] = np.where(np.isfinite(per_step["samples"]), per_step["samples"], rows_col)
    return Series(steps, wall, stage_sum, per_step, totals, pauses)


def rollout_files(rollouts: Path) -> list[tuple[int, Path]]:
    out = []
    for p in rollouts.glob("step_*.parquet"):
        m = re.fullmatch(r"step_(\d+)\.parquet", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def read_run_config(run_dir: Path) -> dict:
    """RUN_DIR/config.yaml as a dict ({} for runs started before it was written, or unreadable)."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(run_dir) / RUN_CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


class MeanPoseReward:
    """The joint reward of each response's mean pose `mu` (the pose the head would give without
    sampling), with the run's reward settings: training can raise it while the sampled poses'
    mean reward stays flat, because the samples' spread dominates their error."""

    def __init__(self, run_config: dict):
        from poserft.common.body import BodyModel

        rewards = run_config.get("rewards") or {}
        self.tau_m = float(rewards.get("joint_tau_m", 0.1))
        self.align = rewards.get("joint_align", "root")
        self.root_share = float(rewards.get("joint_root_share", 0.0))
        self.body = BodyModel(smpl_dir=(run_config.get("body") or {}).get("smpl_dir"))

    def __call__(self, table) -> np.ndarray:
        """Per row: the reward of `mu` for image2pose rows with a pose (first pose sample only), else NaN."""
        import torch

        from poserft.reward_service.rewards import joint_reward

        cols = table.to_pydict()
        out = np.full(table.num_rows, math.nan)
        idx = [
            i
            for i in range(table.num_rows)
            if cols["task"][i] == "image2pose"
            and cols["has_pose"][i]
            and cols["mu"][i] is not None
            and cols["target_joints"][i] is not None
            and not (cols.get("pose_sample_index") or [0] * table.num_rows)[i]
        ]
        if idx:
            mu = torch.tensor([cols["mu"][i] for i in idx], dtype=torch.float64)
            target = torch.tensor([cols["target_joints"][i] for i in idx], dtype=torch.float64).reshape(-1, 24, 3)
            out[idx] = joint_reward(self.body, mu, target, self.tau_m, self.align, self.root_share)
        return out


def read_task_rewards(files: list[tuple[int, Path]], warn, run_config: dict | None = None) -> tuple[dict, list[int]]:
    """{task: {component: (steps, means)}} from the rollout parquets, and the steps read. With the
    rollouts' `mu` and `target_joints`, also the joint reward of the mean pose (`MEAN_POSE`)."""
    import pyarrow.parquet as pq

    mean_pose = None
    acc: dict = {}
    read = []
    bad = []
    if len(files) > MAX_REWARD_FILES:  # a long run: evenly spaced steps, always the first and the last
        keep = np.unique(np.linspace(0, len(files) - 1, MAX_REWARD_FILES).round().astype(int))
        files = [files[i] for i in keep]
    for step, path in files:
        try:
            names = pq.read_schema(path).names
            if "task" not in names:
                bad.append(f"{path.name} (no 'task' column)")
                continue
            cols = ["task"] + [f"reward_{c}" for c, _, _ in REWARDS if f"reward_{c}" in names]
            extra = [c for c in ("has_pose", "mu", "target_joints", "pose_sample_index") if c in names]
            table = pq.read_table(path, columns=cols + extra)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
            bad.append(f"{path.name} ({type(err).__name__})")
            continue
        read.append(step)
        tasks = np.array(table["task"].to_pylist(), dtype=object)
        columns = {col: [math.nan if v is None else v for v in table[col].to_pylist()] for col in cols[1:]}
        if {"has_pose", "mu", "target_joints"} <= set(extra) and "image2pose" in tasks:
            mean_pose = mean_pose or MeanPoseReward(run_config or {})
            columns[f"reward_{MEAN_POSE}"] = mean_pose(table)
        for col, values in columns.items():
            vals = np.asarray(values, dtype=np.float64)
            for task in sorted(set(tasks.tolist()) - {None}):
                sel = vals[tasks == task]
                sel = sel[np.isfinite(sel)]
                if sel.size:
                    acc.setdefault(task, {}).setdefault(col[len("reward_") :], []).append((step, float(sel.mean())))
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        warn(f"skipped {len(bad)} unreadable rollout file(s): {shown}")
    out = {
        t: {c: (np.array([s for s, _ in v]), np.array([m for _, m in v])) for c, v in comps.items()}
        for t, comps in acc.items()
    }
    return out, read


def _checkpoint_version(run_dir: Path):
    meta = run_dir / "checkpoints" / "latest" / "poserft.json"
    try:
        return json.loads(meta.read_text()).get("policy_version")
    except (OSError, ValueError, AttributeError):
        return None


def _ledger_counts(path: Path):
    if not path.is_file():
        return None
    steps = prompts = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
            steps += 1
            prompts += len(e.get("task_ids", []))
        except (ValueError, AttributeError, TypeError):
            continue
    return steps, prompts


# ----------------------------------------------------------------------------- entry point


def _check_run_dir(run_dir: Path) -> Path:
    if not run_dir.exists():
        raise ReportError(f"{run_dir} does not exist")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a training run: it is a file, not a folder")
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        hint = ""
        found = sorted(p.parent for p in run_dir.glob("*/metrics.jsonl"))
        if found:
            hint = "; runs inside it: " + ", ".join(str(p) for p in found[:4])
        what = "not a file" if metrics.exists() else "missing"
        raise ReportError(
            f"{run_dir} is not a training run: metrics.jsonl is {what} (expected from `poserft train`){hint}"
        )
    return metrics


def run_dirs_inside(folder: Path) -> list[Path]:
    """Training runs directly inside `folder` (e.g. runs/demo/hygrpo and runs/demo/grpo)."""
    return sorted(p.parent for p in Path(folder).glob("*/metrics.jsonl") if p.is_file())
