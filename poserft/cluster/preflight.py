"""Checks `poserft train` runs before it starts Ray, so a run that cannot work fails in a second
with one line naming the key or path instead of a Ray traceback minutes later.

- `check_run(cfg, init, run_dir)`: every reward with a non-zero weight on a trained task can be
  computed (the semantic reward needs `rewards.retriever_dir`), `--init` is a complete
  checkpoint, the data folder holds the trained split, some text2pose description is as long as
  `rl.text2pose_min_words`, the run folder is writable, and a
  `body.smpl_dir` (when set) has its model file. Raises `PreflightError` (a `ValueError`).
- `placement_plan(cfg)` / `check_placement(cfg)`: what each role asks of the cluster, and whether
  the Ray cluster this process is connected to can place it (for `train --dry-run`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from poserft.common.config import Config

SMPL_FILE = "SMPL_NEUTRAL.pkl"
RETRIEVER_FILES = ("retriever.json", "retriever.safetensors")


class PreflightError(ValueError):
    """A run that cannot work; the message names the config key or command-line path."""


def _check_rewards(cfg: Config) -> None:
    for task in cfg.rl.tasks:
        weights = cfg.rewards.weights.get(task, {})
        if not weights.get("semantic"):
            continue
        where = f"rewards.weights.{task}.semantic is {weights['semantic']:g}"
        folder = cfg.rewards.retriever_dir
        if not folder:
            raise PreflightError(
                f"rewards.retriever_dir is not set, but {where}: point it at a reward retriever "
                "(`poserft retriever train`), or set that weight to 0"
            )
        for name in RETRIEVER_FILES:
            if not (Path(folder) / name).is_file():
                raise PreflightError(
                    f"rewards.retriever_dir {folder}: {name} is missing ({where}); train one with `poserft retriever "
                    "train`"
                )


def _check_prompts(cfg: Config) -> None:
    """rl.text2pose_min_words: at least one text2pose training row has a description that long
    (the controller's own check, `short_text2pose_dropped`, would otherwise fail inside a Ray actor).
    Reads only the task and caption columns of each source's train split."""
    low = cfg.rl.text2pose_min_words
    if not low or "text2pose" not in cfg.rl.tasks:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from poserft.data.mixture import resolve_sources, short_text2pose_dropped

    try:
        sources = resolve_sources(cfg.data)
    except ValueError as err:  # DatasetError: a malformed data.sources
        raise PreflightError(str(err)) from None
    tables = []
    for source in sources:
        path = source.dir / "train.parquet"
        if not path.is_file():
            continue  # load_mixture names a folder without its train split when the run starts
        try:
            tables.append(pq.read_table(path, columns=["task", "caption"]))
        except (OSError, ValueError, pa.ArrowException) as err:
            raise PreflightError(f"{path}: not readable for its task and caption columns ({str(err)[:120]})") from None
    if not tables:
        return
    try:
        short_text2pose_dropped(pa.concat_tables(tables, promote_options="permissive"), low)
    except ValueError as err:  # no text2pose description that long
        raise PreflightError(str(err)) from None


def _check_writable(run_dir: Path) -> None:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PreflightError(f"--run-dir {run_dir}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PreflightError(f"--run-dir {run_dir}: folder {probe} is not writable")


def check_run(cfg: Config, init: str | Path, run_dir: str | Path) -> None:
    """Everything a training run reads or writes, checked before Ray starts (see the module doc)."""
    from poserft.data.dataset import DatasetError, load_card
    from poserft.model.checkpoint import check_checkpoint
    from poserft.model.lm_files import CheckpointError

    try:
        check_checkpoint(init)
    except CheckpointError as err:
        raise PreflightError(f"--init: {err}") from None
    data = Path(cfg.data.dir)
    if not data.is_dir():
        raise PreflightError(
            f"data.dir {data} does not exist; build it with `poserft data build --out {data}` or set data.dir"
        )
    try:
        card = load_card(data)
    except DatasetError as err:
        raise PreflightError(f"data.dir: {err}") from None
    if "train" not in card.get("splits", {}):
        raise PreflightError(f"data.dir {data}: the dataset card lists no train split")
    _check_prompts(cfg)
    _check_rewards(cfg)
    if cfg.body.smpl_dir and not (Path(cfg.body.smpl_dir) / SMPL_FILE).is_file():
        raise PreflightError(f"body.smpl_dir {cfg.body.smpl_dir} has no {SMPL_FILE}")
    _check_writable(Path(run_dir))
    from poserft.tracking import TrackerError, check_trackers

    try:
        check_trackers(cfg, run_dir)  # logging.trackers: installed and writable, before Ray starts
    except TrackerError as err:
        raise PreflightError(str(err)) from None


@dataclass
class RoleRequest:
    role: str
    count: int
    bundle: dict[str, float]  # what one placement group asks of one node
    key: str  # the config section that sets it


def placement_plan(cfg: Config) -> list[RoleRequest]:
    from poserft.cluster.placement import bundle, bundles_total, group_bundles

    r, lr, rw = cfg.rl.rollout, cfg.rl.learner, cfg.rl.reward
    learner = bundles_total(group_bundles(lr.world_size, lr.num_cpus, lr.num_gpus, lr.resources))
    return [
        RoleRequest("learner", 1, learner, "rl.learner"),
        RoleRequest("rollout worker", r.num_workers, bundle(r.num_cpus, r.num_gpus, r.resources), "rl.rollout"),
        RoleRequest(
            "reward worker", cfg.rewards.num_workers, bundle(rw.num_cpus, rw.num_gpus, rw.resources), "rl.reward"
        ),
    ]


def check_placement(cfg: Config) -> list[str]:
    """Each role fits on some node of the connected cluster (else a one-line ConfigError), and a
    note when all of them together exceed the cluster's total (they would wait for each other)."""
    import ray

    from poserft.cluster.placement import check_feasible

    plan = placement_plan(cfg)
    lines = []
    for req in plan:
        check_feasible(req.role, req.bundle, req.key)
        lines.append(f"{req.role}: {req.count} x {req.bundle} ({req.key})")
    total = ray.cluster_resources()
    asked: dict[str, float] = {}
    for req in plan:
        for k, v in req.bundle.items():
            asked[k] = asked.get(k, 0.0) + v * req.count
    short = [f"{k} {v:g} of {total.get(k, 0.0):g}" for k, v in asked.items() if v > total.get(k, 0.0) + 1e-9]
    if short:
        lines.append(
            "warning: all roles together ask for more than the cluster has (" + ", ".join(short) + "); some will wait"
        )
    return lines
