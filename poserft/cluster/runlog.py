"""What a run leaves in its folder, step by step: `ledger.jsonl` (the task ids trained at each
step), `rollouts/step_NNNNN.parquet` (every scored rollout, with its advantages) and
`metrics.jsonl` (one line per step). All three are appended after a step and cut back to the
checkpoint's step on resume, so after a crash they agree with the checkpoint the run resumes from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _step_of(line: str) -> int | None:
    """The step of one JSON line, or None for a line cut short by a crash."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class JsonLines:
    """An append-only file of JSON lines, each with a `step`."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Forget the lines after `step` (and any line cut short); they will be written again."""
        if self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines() if (s := _step_of(ln)) is not None and s <= step]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(k + "\n" for k in keep))
            os.replace(tmp, self.path)

    def append(self, entry: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[dict]:
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln] if self.path.is_file() else []


Ledger = JsonLines  # the name the tests and tools know the task-id log by


class RunLog:
    """The per-step records of one run folder."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        (self.run_dir / "rollouts").mkdir(parents=True, exist_ok=True)
        self.ledger = JsonLines(self.run_dir / "ledger.jsonl")
        self.metrics = JsonLines(self.run_dir / "metrics.jsonl")

    def truncate_after(self, step: int) -> None:
        """On resume: the steps after the checkpoint will be trained (and written) again."""
        self.ledger.truncate_after(step)
        self.metrics.truncate_after(step)

    def record(self, step: int, version: int, task_ids: list[str], rollouts: pa.Table, line: dict) -> None:
        """One finished step: its scored rollouts, the task ids it trained on, its metrics line."""
        pq.write_table(rollouts, self.run_dir / "rollouts" / f"step_{step:05d}.parquet", compression="zstd")
        self.ledger.append({"step": step, "version": version, "task_ids": task_ids})
        self.metrics.append(line)


def write_run_record(cfg, run_dir: Path, argv: list[str]) -> None:
    """RUN_DIR/config.yaml (the resolved config, every default filled in) and RUN_DIR/command.txt."""
    import shlex
    import time

    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (run_dir / "command.txt").write_text(f"{shlex.join(['poserft', *argv])}\n# cwd {Path.cwd()}\n# started {stamp}\n")
