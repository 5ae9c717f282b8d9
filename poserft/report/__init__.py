"""`poserft report RUN_DIR`: a training run folder -> `RUN_DIR/report.md` and PNGs in `RUN_DIR/report/`.

Inputs (written by `poserft/cluster/controller.py`):
- `metrics.jsonl`: one JSON object per trained step. Stage times (`gen_s`, `reward_s`, `train_s`,
  `sync_s`), `staleness`, `queue_depth`, `workers`, mean rewards, learner losses and KLs, and the
  controller's counters. The counters `samples`, `tokens`, `dropped_stale_groups`,
  `requeued_prompts` and `worker_failures` are running totals since the run began (they survive
  a resume); per-step values are their differences. A resumed run may hold a step twice (the
  steps after its checkpoint are trained again); the later line wins.
- `rollouts/step_*.parquet`: every scored rollout of a step; the per-task reward curves come
  from their `task` and `reward_*` columns, the example poses from the newest readable file.
- `ledger.jsonl` and `checkpoints/latest/poserft.json`: counts for the data-sources note; the
  checkpoint's `tokenizer.json` decodes the example prompts when present.

Outputs: `report.md` (summary table, rewards of the first vs the last steps overall and per task,
the figures with one-line captions, data sources, warnings) and in `report/`: `rewards.png`,
`throughput.png`, `staleness.png`, `sync.png`, `stage_times.png`, `learner.png` and
`examples_<task>.png` (text2pose, image2pose). Noisy curves show the raw values faintly under a
centred moving average.

Damage a killed run leaves behind is tolerated: a truncated last line of `metrics.jsonl` is
skipped with a warning, an empty one gives a report without metric plots, a missing or
unreadable rollout folder gives a report without example poses. A folder that is not a run is an
error (`ReportError`, a `ValueError`) naming the missing file.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch).

The package: `loading` (reading the run folder), `plots` (the figures), `examples` (example poses
over their targets), `markdown` (report.md's text); this module puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from poserft.report.examples import _examples
from poserft.report.loading import (
    PLOT_FILES,
    REPORT_DIR,
    REPORT_MD,
    ReportError,
    _check_run_dir,
    _stderr_warn,
    derive,
    increments,
    read_metrics,
    read_run_config,
    read_task_rewards,
    rollout_files,
    run_dirs_inside,
)
from poserft.report.markdown import _markdown
from poserft.report.plots import (
    moving_average,
    plot_compare,
    plot_learner,
    plot_rewards,
    plot_stage_times,
    plot_staleness,
    plot_sync,
    plot_throughput,
    smooth_window,
)

__all__ = [
    "ReportError", "increments", "moving_average", "read_metrics", "register_cli", "smooth_window",
    "write_folder_report", "write_report",
]  # fmt: skip


def write_report(run_dir, warn: Callable[[str], None] | None = None) -> Path:
    """Write RUN_DIR/report.md and RUN_DIR/report/*.png; returns the markdown path.

    `warn` receives one message per tolerated problem (default: printed to stderr); the messages
    are also listed in the report."""
    run_dir = Path(run_dir)
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        (warn or _stderr_warn)(msg)

    metrics_path = _check_run_dir(run_dir)
    out_dir = run_dir / REPORT_DIR
    try:
        out_dir.mkdir(exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ReportError(f"cannot write the report into {out_dir}: {err.strerror or err}") from err
    for stale in list(out_dir.glob("*.png")):  # only our own figure names: a re-run never shows an old figure
        if stale.name in PLOT_FILES or stale.name.startswith("examples_"):
            stale.unlink()

    rows = read_metrics(metrics_path, note)
    if not rows:
        note(f"{metrics_path} holds no complete step yet; the report has no metric plots")
    series = derive(rows)

    rollouts = run_dir / "rollouts"
    files = rollout_files(rollouts) if rollouts.is_dir() else []
    run_config = read_run_config(run_dir)
    task_rewards, read_steps = read_task_rewards(files, note, run_config) if files else ({}, [])

    figures: list[tuple[str, Path, str]] = []  # (title, path, caption)

    def add(title, path, caption):
        if path is not None:
            figures.append((title, path, caption))

    if rows or task_rewards:
        add(
            "Rewards",
            plot_rewards(rows, task_rewards, out_dir / "rewards.png"),
            "Mean reward per step for each component: black over all rows (metrics.jsonl), dashed per task (rollout "
            "parquets).",
        )
    if rows:
        add(
            "Throughput",
            plot_throughput(rows, series, out_dir / "throughput.png"),
            "Samples and generated tokens per second of wall time between consecutive steps.",
        )
        add(
            "Staleness, queue depth, dropped groups",
            plot_staleness(rows, series, out_dir / "staleness.png"),
            "Policy versions between a batch's generation and its training, batches waiting, and dropped prompt "
            "groups.",
        )
        add(
            "Weight sync",
            plot_sync(rows, series, out_dir / "sync.png"),
            "Time to push the new weights from the learner to every rollout worker after each step.",
        )
        add(
            "Stage times",
            plot_stage_times(rows, series, out_dir / "stage_times.png"),
            "Generation, reward scoring, learner step and weight sync per step, stacked, against the wall time per "
            "step.",
        )
        add(
            "Learner",
            plot_learner(rows, series, out_dir / "learner.png", run_config),
            "Policy loss, KL to the frozen reference, clipped fractions, gradient norm and pose-head entropy.",
        )

    example_note = ""
    example_figs: list[tuple[str, Path, str]] = []
    if not rollouts.is_dir():
        example_note = "No example poses: the run has no `rollouts/` folder."
    elif not files:
        example_note = "No example poses: `rollouts/` holds no `step_*.parquet` file."
    else:
        example_figs, example_note = _examples(run_dir, files, read_steps, out_dir)
    if example_note and not example_figs:
        note(example_note)

    md = _markdown(run_dir, rows, series, task_rewards, files, read_steps, figures, example_figs, example_note, notes)
    path = run_dir / REPORT_MD
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(md)
        tmp.replace(path)
    except OSError as err:
        raise ReportError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def write_folder_report(folder, warn: Callable[[str], None] | None = None) -> Path:
    """For a folder of runs (such as runs/demo): a report for each run, a comparison of their
    reward curves and FOLDER/report.md linking them, with summary.md (eval results) when present."""
    folder = Path(folder)
    runs = run_dirs_inside(folder)
    if not runs:
        _check_run_dir(folder)  # raises the error that says what is missing
    out_dir = folder / REPORT_DIR
    out_dir.mkdir(exist_ok=True)
    reports = {r.name: write_report(r, warn) for r in runs}
    rows = {r.name: read_metrics(r / "metrics.jsonl", warn or _stderr_warn) for r in runs}
    lines = [f"# Report: {folder}", ""]
    summary = folder / "summary.md"
    if summary.is_file():
        body = summary.read_text().split("\n", 1)[1] if summary.read_text().startswith("#") else summary.read_text()
        lines += ["## Evaluation (summary.md)", "", body.strip(), ""]
    compare = plot_compare(rows, out_dir / "compare_rewards.png")
    if compare is not None:
        lines += [
            "## Rewards, run by run",
            "",
            f"![rewards]({compare.relative_to(folder)})",
            "",
            "*Mean reward per step of each run, per component.*",
            "",
        ]
    lines += ["## Runs", ""]
    for name, path in reports.items():
        n = len(rows[name])
        last = rows[name][-1] if rows[name] else {}
        lines.append(
            f"- [{name}]({path.relative_to(folder)}): {n} steps, final policy version {last.get('version', '?')}"
        )
        for png in ("rewards.png", "throughput.png"):
            if (path.parent / REPORT_DIR / png).is_file():
                lines.append(f"  ![{name} {png}]({(path.parent / REPORT_DIR / png).relative_to(folder)})")
    md = folder / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write RUN_DIR/report.md with plots from a training run folder",
        description="Summarise a `poserft train` run folder: RUN_DIR/report.md and PNGs in RUN_DIR/report/.",
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a run folder (holds metrics.jsonl, rollouts/, checkpoints/), or a folder of runs such as runs/demo",
    )
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    folder = Path(args.run_dir)
    is_run = (folder / "metrics.jsonl").exists()
    path = write_report(folder) if is_run or not run_dirs_inside(folder) else write_folder_report(folder)
    pngs = sorted((path.parent / REPORT_DIR).glob("*.png"))
    print(f"wrote {path} and {len(pngs)} PNG(s) in {path.parent / REPORT_DIR}")
    return 0
