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
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPORT_MD = "report.md"
REPORT_DIR = "report"
STAGES = (("gen_s", "generation"), ("reward_s", "reward scoring"), ("train_s", "learner step"), ("sync_s", "weight sync"))
COUNTERS = ("samples", "tokens", "dropped_stale_groups", "requeued_prompts", "worker_failures")
REWARDS = (
    ("format", "format", "1 = response matches the task template"),
    ("text_similarity", "text similarity", "sentence-embedding cosine, -1..1"),
    ("semantic", "semantic", "retriever text-pose cosine, -1..1"),
    ("joint", "joint", "1 / (1 + joint error / tau), 0..1"),
    ("total", "total", "weighted sum per task"),
)
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
                warn(f"{path}: skipped the last line ({i + 1}), which is incomplete JSON (a run killed while writing it?)")
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
        warn(f"{path}: {len(rows) - len(by_step)} step line(s) repeat an earlier step (a resumed run trains the steps "
             "after its checkpoint again); the later line of each step is used")
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


def read_task_rewards(files: list[tuple[int, Path]], warn) -> tuple[dict, list[int]]:
    """{task: {component: (steps, means)}} from the rollout parquets, and the steps read."""
    import pyarrow.parquet as pq

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
            table = pq.read_table(path, columns=cols)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for damaged files
            bad.append(f"{path.name} ({type(err).__name__})")
            continue
        read.append(step)
        tasks = np.array(table["task"].to_pylist(), dtype=object)
        for col in cols[1:]:
            vals = np.array([math.nan if v is None else v for v in table[col].to_pylist()], dtype=np.float64)
            for task in sorted(set(tasks.tolist()) - {None}):
                sel = vals[tasks == task]
                sel = sel[np.isfinite(sel)]
                if sel.size:
                    acc.setdefault(task, {}).setdefault(col[len("reward_"):], []).append((step, float(sel.mean())))
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        warn(f"skipped {len(bad)} unreadable rollout file(s): {shown}")
    out = {t: {c: (np.array([s for s, _ in v]), np.array([m for _, m in v])) for c, v in comps.items()} for t, comps in acc.items()}
    return out, read


# ----------------------------------------------------------------------------- plotting helpers


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def smooth_window(n: int) -> int:
    """Odd moving-average window for n points (0: too few points to smooth)."""
    if n < 6:
        return 0
    w = int(min(25, max(3, round(n / 8))))
    w = w if w % 2 else w + 1
    return min(w, n if n % 2 else n - 1)


def moving_average(y: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average that ignores NaN (edges average over fewer points)."""
    m = np.isfinite(y)
    k = np.ones(w)
    num = np.convolve(np.where(m, y, 0.0), k, mode="same")
    den = np.convolve(m.astype(np.float64), k, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, math.nan)


def _plot_series(ax, x, y, colour, label, *, raw_alpha=0.3, lw=2.0, ls="-"):
    """Raw values faintly plus their moving average; markers when there are few points."""
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    w = smooth_window(int(np.isfinite(y).sum()))
    if w:
        ax.plot(x, y, color=colour, alpha=raw_alpha, lw=1.0)
        ax.plot(x, moving_average(y, w), color=colour, lw=lw, ls=ls, label=label)
    else:
        ax.plot(x, y, color=colour, lw=lw, ls=ls, marker="o", ms=4, label=label)
    return w


def _style(ax, title, ylabel, xlabel="training step"):
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:  # one or two steps: whole-step ticks around them
        mid = round((lo + hi) / 2)
        ax.set_xlim(mid - 1.5, mid + 1.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _smoothing_note(n: int) -> str:
    w = smooth_window(n)
    return f"faint: raw per step; bold: centred {w}-step moving average" if w else "one point per step (too few to smooth)"


def _save(fig, path: Path) -> Path:
    """One Agg draw (savefig would lay out and draw twice), written by PIL without metadata."""
    from PIL import Image

    fig.canvas.draw()
    Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).save(path, format="PNG", compress_level=6)
    return path


# ----------------------------------------------------------------------------- plots


def plot_rewards(rows, task_rewards, path: Path) -> Path | None:
    comps = [c for c in REWARDS if has(rows, f"reward_{c[0]}") or any(c[0] in t for t in task_rewards.values())]
    if not comps:
        return None
    steps = np.array([r["step"] for r in rows])
    ncols = 3 if len(comps) > 2 else len(comps)
    nrows = math.ceil((len(comps) + 1) / ncols) if len(comps) > 2 else 1
    fig = _figure(5.0 * ncols, 3.6 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles = {}
    for ax, (key, name, meaning) in zip(axes, comps):
        if has(rows, f"reward_{key}"):
            _plot_series(ax, steps, column(rows, f"reward_{key}"), "black", "all tasks (metrics.jsonl)")
        for task, curves in sorted(task_rewards.items()):
            if key in curves:
                s, m = curves[key]
                _plot_series(ax, s, m, TASK_COLOURS.get(task, "tab:gray"), f"{task} (rollouts)", raw_alpha=0.15, lw=1.6, ls="--")
        _style(ax, f"{name} reward\n({meaning})", "mean reward")
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    spare = list(axes[len(comps):])
    for ax in spare:
        ax.axis("off")
    n = int(len(steps)) or max((len(c[0]) for t in task_rewards.values() for c in t.values()), default=0)
    note = _smoothing_note(n)
    if spare:
        spare[0].legend(handles.values(), handles.keys(), loc="center", fontsize=10, title="mean per step over")
        spare[0].text(0.5, 0.12, note, ha="center", fontsize=9, color="dimgray", transform=spare[0].transAxes)
    else:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=4, fontsize=9)
    fig.suptitle("Rewards per step (a component is averaged over the rows of the tasks it applies to)", fontsize=13)
    return _save(fig, path)


def plot_throughput(rows, series: Series, path: Path) -> Path | None:
    samples, tokens = series.per_step["samples"], series.per_step["tokens"]
    if not (np.isfinite(samples).any() or np.isfinite(tokens).any()) or not np.isfinite(series.wall_s).any():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        sps = np.where(series.wall_s > 0, samples / series.wall_s, math.nan)
        tps = np.where(series.wall_s > 0, tokens / series.wall_s, math.nan)
    fig = _figure(12, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, y, colour, title, unit in ((ax1, sps, "tab:blue", "Rollout samples per second", "samples / s"),
                                        (ax2, tps, "tab:orange", "Generated response tokens per second", "tokens / s")):
        _plot_series(ax, series.steps, y, colour, "moving average" if smooth_window(len(y)) else "per step")
        fin = y[np.isfinite(y)]
        if fin.size:
            ax.axhline(float(np.mean(fin)), color="gray", ls=":", lw=1.2, label=f"mean of the steps {np.mean(fin):,.1f}")
        _style(ax, title, unit)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=9, loc="lower right")
    fig.suptitle("Throughput per step: trained samples or response tokens / wall time between metric lines\n"
                 + _smoothing_note(len(series.steps)), fontsize=11)
    return _save(fig, path)


def _int_panel(ax, steps, y, colour, title, ylabel, label):
    from matplotlib.ticker import MaxNLocator

    ax.step(steps, y, where="mid", color=colour, lw=1.8, label=label)
    if len(steps) < 6:
        ax.plot(steps, y, "o", color=colour, ms=4)
    _style(ax, title, ylabel)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fin = y[np.isfinite(y)]
    top = float(fin.max()) if fin.size else 0.0
    ax.set_ylim(-0.3, max(1.0, top) * 1.15 + 0.3)
    if fin.size and not fin.any():
        ax.text(0.5, 0.6, "0 at every step", ha="center", color="dimgray", fontsize=10, transform=ax.transAxes)


def plot_staleness(rows, series: Series, path: Path) -> Path | None:
    if not any(has(rows, k) for k in ("staleness", "queue_depth", "dropped_stale_groups", "worker_failures")):
        return None
    steps = series.steps
    fig = _figure(15, 4.0)
    ax1, ax2, ax3 = fig.subplots(1, 3, sharex=True)
    _int_panel(ax1, steps, column(rows, "staleness"), "tab:red", "Staleness of the trained batch",
               "policy versions behind", "staleness")
    _int_panel(ax2, steps, column(rows, "queue_depth"), "tab:purple", "Scored batches waiting for the learner",
               "queue depth (batches)", "queue depth")
    dropped = series.per_step["dropped_stale_groups"]
    ax3.bar(steps, np.nan_to_num(dropped), color="tab:red", alpha=0.5, width=0.8, label="dropped stale groups (this step)")
    marker = "o" if len(steps) < 6 else None
    ax3.plot(steps, column(rows, "dropped_stale_groups"), color="tab:red", lw=1.8, marker=marker, label="dropped stale groups (total)")
    ax3.plot(steps, column(rows, "worker_failures"), color="black", lw=1.5, ls="--", marker=marker, mfc="none",
             label="rollout worker failures (total)")
    fin = np.concatenate([column(rows, "dropped_stale_groups"), column(rows, "worker_failures")])
    fin = fin[np.isfinite(fin)]
    _style(ax3, "Dropped groups and worker failures", "count (prompt groups / failures)")
    from matplotlib.ticker import MaxNLocator

    ax3.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax3.set_ylim(-0.3, max(1.0, float(fin.max()) if fin.size else 0.0) * 1.15 + 0.3)
    if fin.size and not fin.any():
        ax3.text(0.5, 0.6, "none dropped, no failures", ha="center", color="dimgray", fontsize=10, transform=ax3.transAxes)
    ax3.legend(fontsize=8, loc="upper left")
    fig.suptitle("Off-policy pressure: a batch older than rl.max_staleness versions is dropped and its prompts re-queued",
                 fontsize=11)
    return _save(fig, path)


def plot_sync(rows, series: Series, path: Path) -> Path | None:
    if not has(rows, "sync_s"):
        return None
    sync = column(rows, "sync_s")
    fin = sync[np.isfinite(sync)]
    ms = fin.size and float(fin.max()) < 2.0
    y, unit = (sync * 1000.0, "ms") if ms else (sync, "s")
    fig = _figure(10, 4.2)
    ax = fig.subplots()
    _plot_series(ax, series.steps, y, "tab:green", "weight sync (moving average)" if smooth_window(len(y)) else "weight sync")
    _style(ax, f"Weight sync: learner -> all rollout workers, per step\n{_smoothing_note(len(y))}", f"sync time ({unit})")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if has(rows, "workers"):
        ax2 = ax.twinx()
        ax2.step(series.steps, column(rows, "workers"), where="mid", color="gray", lw=1.2, ls="--", label="rollout workers")
        ax2.set_ylabel("rollout workers")
        from matplotlib.ticker import MaxNLocator

        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        w = column(rows, "workers")
        ax2.set_ylim(0, np.nanmax(w) * 1.5 + 0.5)
        ax2.spines["top"].set_visible(False)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=9, loc="lower right")
    return _save(fig, path)


def plot_stage_times(rows, series: Series, path: Path) -> Path | None:
    present = [(k, name) for k, name in STAGES if has(rows, k)]
    if not present:
        return None
    steps = series.steps
    fig = _figure(12, 4.6)
    ax = fig.subplots()
    bottom = np.zeros(len(steps))
    bars = len(steps) <= 80
    for k, name in present:
        v = np.nan_to_num(column(rows, k))
        if bars:
            ax.bar(steps, v, bottom=bottom, width=0.85, color=STAGE_COLOURS[k], label=name, alpha=0.85)
        else:
            ax.fill_between(steps, bottom, bottom + v, step="mid", color=STAGE_COLOURS[k], label=name, alpha=0.8, lw=0)
        bottom = bottom + v
    ax.plot(steps, series.wall_s, color="black", lw=1.5, marker="." if bars else None, label="wall time between metric lines")
    _style(ax, "Time per step by stage (stacked)", "seconds")
    ax.legend(fontsize=9, loc="upper right", ncols=3)
    top = np.nanmax(np.concatenate([bottom, np.nan_to_num(series.wall_s)])) if len(steps) else 1.0
    ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
    ax.set_title("Time per step by stage (stacked). With rl.max_staleness > 0 generation overlaps training,\n"
                 "so the stack can exceed the wall time between steps.", fontsize=11)
    return _save(fig, path)


LEARNER_PANELS = (
    ("policy loss", "loss", (("loss", "total"), ("loss_token", "token part"), ("loss_pose", "pose part"))),
    ("KL to the reference: tokens", "KL (nats / token)", (("kl_token", "token KL"),)),
    ("KL to the reference: pose head", "KL (nats / pose)", (("kl_pose", "pose KL"),)),
    ("clipped fraction", "fraction clipped", (("clip_frac_token", "tokens"), ("clip_frac_pose", "poses"))),
    ("gradient norm (before clipping)", "L2 norm", (("grad_norm", "grad norm"),)),
    ("pose head entropy", "nats", (("pose_entropy", "entropy"),)),
)


def plot_learner(rows, series: Series, path: Path) -> Path | None:
    panels = [p for p in LEARNER_PANELS if any(has(rows, k) for k, _ in p[2])]
    if not panels:
        return None
    ncols = 2 if len(panels) == 4 else min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(5.0 * ncols + (1.5 if ncols == 2 else 0.0), 3.5 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = ("black", "tab:blue", "tab:orange")
    for ax, (title, ylabel, keys) in zip(axes, panels):
        for (k, label), colour in zip([kk for kk in keys if has(rows, kk[0])], colours):
            _plot_series(ax, series.steps, column(rows, k), colour, label)
        _style(ax, title, ylabel)
        if len(ax.get_lines()) > 2:
            ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Learner signals per step ({_smoothing_note(len(series.steps))})", fontsize=12)
    return _save(fig, path)


# ----------------------------------------------------------------------------- example poses


def _prompt_decoder(run_dir: Path):
    """A function prompt_tokens -> readable prompt, from the checkpoint's tokenizer (None if unavailable)."""
    tok_path = run_dir / "checkpoints" / "latest" / "tokenizer.json"
    if not tok_path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_path))
    except Exception:  # noqa: BLE001 - an unreadable tokenizer only costs the decoded prompt
        return None

    def decode(ids) -> str:
        s = tok.decode(list(ids), skip_special_tokens=False)
        s = re.sub(r"(?:<image>\s*)+", "<image> ", s)
        s = s.replace("<s>", "").replace("</s>", "").replace("<pad>", "").strip()
        s = re.sub(r"^USER:\s*", "", s)
        s = re.sub(r"\s*ASSISTANT:\s*$", "", s)
        return " ".join(s.split())

    return decode


def pick_examples(table, per_task: int = EXAMPLES_PER_TASK) -> dict:
    """{task: [row, ...]}: sample 0 (else the first row) of the first `per_task` groups of each task."""
    rows = table.to_pylist()
    out: dict = {}
    for task in EXAMPLE_TASKS:
        groups: dict = {}
        for r in rows:
            if r.get("task") == task:
                groups.setdefault(r.get("group_id") or r.get("task_id") or id(r), []).append(r)
        chosen = []
        for members in groups.values():
            zero = [m for m in members if m.get("sample_index") == 0]
            responses = {m.get("sample_index") for m in members}  # rows per response: one per pose sample
            chosen.append((zero or members)[0] | {"_group_size": len(responses), "_pose_samples": len(members) // max(1, len(responses))})
            if len(chosen) == per_task:
                break
        if chosen:
            out[task] = chosen
    return out


def _joints_from_6d(body, pose) -> np.ndarray | None:
    import torch

    if pose is None:
        return None
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape != (144,) or not np.isfinite(arr).all():
        return None
    with torch.no_grad():
        return body.forward_kinematics(torch.from_numpy(arr).reshape(1, 144))[0].numpy()


def _fmt(v, digits=2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    """Wrapped lines, cut to `max_lines` with an ellipsis on the last one."""
    lines = textwrap.wrap(" ".join(text.split()), width)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 4].rstrip() + " ..."
    return lines


def _caption(r: dict, prompt: str, prompt_label: str, mpjpe_mm: float | None) -> str:
    head = f"{r.get('task')} | {r.get('task_id', '?')} | sample {r.get('sample_index', '?')} of {r['_group_size']}"
    if r.get("_pose_samples", 1) > 1:
        head += f" (pose {r.get('pose_sample_index') or 0} of {r['_pose_samples']})"
    if r.get("policy_version") is not None:
        head += f" | policy v{r['policy_version']}"
    lines = [head, ""] + _wrap(f"{prompt_label}: {prompt}", CAPTION_CHARS, 7)
    if prompt_label == "Prompt" and r.get("task") != "text2pose" and r.get("caption"):
        lines += [""] + _wrap(f"Target caption (not shown to the model): {r['caption']}", CAPTION_CHARS, 4)
    resp = str(r.get("text") or "").strip() or "(empty)"
    lines += [""] + _wrap(f"Response: {resp}", CAPTION_CHARS, 2)
    rewards = [f"{name} {_fmt(r.get(f'reward_{key}'))}" for key, name, _ in REWARDS if r.get(f"reward_{key}") is not None]
    lines += ["", "Rewards: " + (", ".join(rewards) if rewards else "none (not scored)")]
    if r.get("reward_error"):
        lines.append(f"Reward error: {str(r['reward_error'])[:70]}")
    if mpjpe_mm is not None:
        lines.append(f"Mean joint error of the sampled pose: {mpjpe_mm:.0f} mm")
    return "\n".join(lines)


def _prompt_text(r: dict, decode) -> tuple[str, str]:
    """(text, label): the decoded prompt, else the caption the row carries."""
    if decode is not None and r.get("prompt_tokens") is not None:
        try:
            return decode(r["prompt_tokens"]), "Prompt"
        except Exception:  # noqa: BLE001 - ids the tokenizer does not know: fall back to the caption
            pass
    if r.get("caption"):
        return r["caption"], "Caption" if r.get("task") == "text2pose" else "Caption of the target"
    return "(not recorded)", "Prompt"


def plot_examples(task: str, examples: list[dict], decode, path: Path) -> Path:
    from PIL import Image

    from poserft.common.body import BodyModel
    from poserft.data.render import render_pil

    body = BodyModel()
    with_image = task == "image2pose"
    cols = ["input image"] if with_image else []
    cols += ["target pose", "sampled pose (colour)\nover the target (grey)", "prompt, response and rewards"]
    ratios = [1.0] * (len(cols) - 1) + [2.6]
    n = len(examples)
    fig = _figure(2.6 * (len(cols) - 1) + 6.8, 2.75 * n + 0.6)
    axes = fig.subplots(n, len(cols), squeeze=False, gridspec_kw={"width_ratios": ratios})
    for i, r in enumerate(examples):
        ax_row = list(axes[i])
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        if with_image:
            ax = ax_row.pop(0)
            try:
                img = Image.open(io.BytesIO(r["image"])).convert("RGB")
                ax.imshow(np.asarray(img), interpolation="nearest")
                ax.set_xlabel(f"{img.size[0]} x {img.size[1]} px", fontsize=8)
            except Exception:  # noqa: BLE001 - a missing/broken image is shown as such
                ax.text(0.5, 0.5, "no readable image", ha="center", va="center", fontsize=9)
        target = np.asarray(r.get("target_joints") or [], dtype=np.float64)
        target = target.reshape(24, 3) if target.size == 72 and np.isfinite(target).all() else None
        pred = _joints_from_6d(body, r.get("pose")) if r.get("has_pose", True) else None
        ax_t, ax_p, ax_c = ax_row
        if target is not None:
            ax_t.imshow(np.asarray(render_pil(target, size=220)))
        else:
            ax_t.text(0.5, 0.5, "no target joints", ha="center", va="center", fontsize=9)
        mpjpe = None
        if pred is not None:
            ax_p.imshow(np.asarray(render_pil(pred, size=220, overlay=target)))
            if target is not None:
                mpjpe = float(np.linalg.norm((pred - pred[:1]) - (target - target[:1]), axis=-1).mean() * 1000.0)
        else:
            ax_p.set_facecolor("black")
            ax_p.text(0.5, 0.5, "no pose in the response\n(no valid <POSE>)", ha="center", va="center", color="white", fontsize=9)
        prompt, label = _prompt_text(r, decode)
        ax_c.axis("off")
        ax_c.text(0.0, 0.98, _caption(r, prompt, label, mpjpe), va="top", ha="left", fontsize=9.5,
                  transform=ax_c.transAxes)
        if i == 0:
            for ax, title in zip(axes[0], cols):
                ax.set_title(title, fontsize=10)
    fig.suptitle(f"{task}: example rollouts of the last step (sample 0 of the first {n} groups; "
                 "left/right limbs orange/blue)", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------- markdown


def _mean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _n(v, digits=0, unit="") -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:,.{digits}f}{unit}"


def _signed(v, digits=3) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:+.{digits}f}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


@dataclass
class _Doc:
    lines: list = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


def _max(rows, key) -> float:
    return float(np.nanmax(column(rows, key))) if has(rows, key) else math.nan


def _summary_rows(rows, series: Series, ckpt_version) -> list[list[str]]:
    steps = series.steps
    timed = np.isfinite(series.wall_s).any()
    total_wall = float(np.nansum(series.wall_s)) if timed else math.nan
    wall_median = float(np.nanmedian(series.wall_s)) if timed else math.nan
    t = series.totals
    rate = {k: t[k] / total_wall if total_wall > 0 else math.nan for k in ("samples", "tokens")}
    stage_means = ", ".join(f"{name} {_n(_mean(column(rows, k)), 2)} s" for k, name in STAGES if has(rows, k))
    workers = column(rows, "workers")
    wf = workers[np.isfinite(workers)]
    workers_text = "n/a" if not wf.size else f"{int(wf.min())}" if wf.min() == wf.max() else f"{int(wf.min())}-{int(wf.max())}"
    ckpt = f"`checkpoints/latest` at policy version {ckpt_version}" if ckpt_version is not None else "none found"
    out = [
        ["steps", f"{len(steps)} ({_step_range(steps)})"],
        ["final policy version", _n(_num(rows[-1].get("version"))) if rows else "n/a"],
        ["checkpoint", ckpt],
        ["total samples (scored rollouts trained)", _n(t["samples"])],
        ["total tokens (generated response tokens)", _n(t["tokens"])],
        ["mean step time (wall)", f"{_n(_mean(series.wall_s), 2, ' s')} (median {_n(wall_median, 2, ' s')})"],
        ["mean stage times", stage_means or "n/a"],
        ["run time covered", _n(total_wall, 1, " s")],
        ["throughput over the run", f"{_n(rate['samples'], 1, ' samples/s')}, {_n(rate['tokens'], 1, ' tokens/s')}"],
        ["rollout workers", workers_text],
        ["max staleness / max queue depth", f"{_n(_max(rows, 'staleness'))} / {_n(_max(rows, 'queue_depth'))}"],
        ["dropped stale groups (prompts re-queued)", f"{_n(t['dropped_stale_groups'])} ({_n(t['requeued_prompts'])})"],
        ["rollout worker failures", _n(t["worker_failures"])],
    ]
    if series.pauses:
        out.append(["pauses (restarts)", f"{series.pauses} gap(s) between steps much longer than a step; "
                                         "counted with their stage times"])
    return out


def _step_range(steps) -> str:
    steps = list(steps)
    if not steps:
        return "none"
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"


def _reward_rows(rows, k: int) -> list[list[str]]:
    out = []
    for key, name, meaning in REWARDS:
        if not has(rows, f"reward_{key}"):
            continue
        v = column(rows, f"reward_{key}")
        first, last = _mean(v[:k]), _mean(v[-k:])
        out.append([f"{name} ({meaning})", _n(first, 3), _n(last, 3), _signed(last - first)])
    return out


def _task_reward_rows(task_rewards, k: int) -> list[list[str]]:
    out = []
    for task in sorted(task_rewards):
        for key, name, _ in REWARDS:
            if key in task_rewards[task]:
                _, m = task_rewards[task][key]
                first, last = _mean(m[:k]), _mean(m[-k:])
                out.append([task, name, _n(first, 3), _n(last, 3), _signed(last - first)])
    return out


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
        raise ReportError(f"{run_dir} is not a training run: metrics.jsonl is {what} (expected from `poserft train`){hint}")
    return metrics


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
    task_rewards, read_steps = read_task_rewards(files, note) if files else ({}, [])

    figures: list[tuple[str, Path, str]] = []  # (title, path, caption)

    def add(title, path, caption):
        if path is not None:
            figures.append((title, path, caption))

    if rows or task_rewards:
        add("Rewards", plot_rewards(rows, task_rewards, out_dir / "rewards.png"),
            "Mean reward per step for each component: black over all rows (metrics.jsonl), dashed per task (rollout parquets).")
    if rows:
        add("Throughput", plot_throughput(rows, series, out_dir / "throughput.png"),
            "Samples and generated tokens per second of wall time between consecutive steps.")
        add("Staleness, queue depth, dropped groups", plot_staleness(rows, series, out_dir / "staleness.png"),
            "Policy versions between a batch's generation and its training, batches waiting, and dropped prompt groups.")
        add("Weight sync", plot_sync(rows, series, out_dir / "sync.png"),
            "Time to push the new weights from the learner to every rollout worker after each step.")
        add("Stage times", plot_stage_times(rows, series, out_dir / "stage_times.png"),
            "Generation, reward scoring, learner step and weight sync per step, stacked, against the wall time per step.")
        add("Learner", plot_learner(rows, series, out_dir / "learner.png"),
            "Policy loss, KL to the frozen reference, clipped fractions, gradient norm and pose-head entropy.")

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


def _examples(run_dir, files, read_steps, out_dir):
    """Render the example figures from the newest readable parquet; returns (figures, note)."""
    import pyarrow.parquet as pq

    needed = {"task", "pose", "target_joints"}
    for step, path in reversed(files):
        if step not in read_steps:
            continue
        try:
            names = set(pq.read_schema(path).names)
            missing = needed - names
            if missing:
                return [], f"No example poses: {path.name} lacks the column(s) {', '.join(sorted(missing))}."
            wanted = ["task", "task_id", "group_id", "sample_index", "policy_version", "prompt_tokens", "text", "caption",
                      "has_pose", "pose", "target_joints", "image", "reward_error"] + [f"reward_{c}" for c, _, _ in REWARDS]
            table = pq.read_table(path, columns=[c for c in wanted if c in names])
        except Exception:  # noqa: BLE001 - fall back to an older file
            continue
        picked = pick_examples(table)
        if not picked:
            return [], f"No example poses: {path.name} has no text2pose or image2pose rows."
        decode = _prompt_decoder(run_dir)
        figs = []
        for task, examples in picked.items():
            p = plot_examples(task, examples, decode, out_dir / f"examples_{task}.png")
            figs.append((f"Example poses: {task}", p,
                         f"{task} rollouts from `rollouts/{path.name}` (step {step}): target, sampled pose over the target, "
                         "prompt and rewards."))
        missing_tasks = [t for t in EXAMPLE_TASKS if t not in picked]
        msg = f"{path.name} has no {' or '.join(missing_tasks)} rows." if missing_tasks else ""
        return figs, msg
    return [], "No example poses: no rollout parquet could be read."


def _markdown(run_dir, rows, series, task_rewards, files, read_steps, figures, example_figs, example_note, notes) -> str:
    doc = _Doc()
    doc.add(f"# Training run report: `{run_dir.name}`", "",
            f"Generated by `poserft report` from `{run_dir}`.", "")
    doc.add("## Summary", "")
    if rows:
        doc.add(*_md_table(["", ""], _summary_rows(rows, series, _checkpoint_version(run_dir))), "")
    else:
        doc.add("`metrics.jsonl` holds no complete step yet (the run was stopped or killed before its first step finished).", "")
    k = max(1, min(5, len(rows) // 4))
    if rows and _reward_rows(rows, k):
        doc.add("## Rewards", "",
                f"Mean of the per-step mean reward over the first and the last {k} step(s) (`metrics.jsonl`).", "")
        doc.add(*_md_table(["component", f"first {k} step(s)", f"last {k} step(s)", "change"], _reward_rows(rows, k)), "")
    if task_rewards:
        kt = max(1, min(5, min(len(c[0]) for t in task_rewards.values() for c in t.values()) // 4))
        doc.add(f"By task, from the rollout parquets (first and last {kt} step(s) read):", "")
        doc.add(*_md_table(["task", "component", f"first {kt}", f"last {kt}", "change"], _task_reward_rows(task_rewards, kt)), "")
    if figures:
        doc.add("## Plots", "")
        for title, path, caption in figures:
            doc.add(f"### {title}", "", f"![{title}]({REPORT_DIR}/{path.name})", "", f"*{caption}*", "")
    doc.add("## Example poses", "")
    for title, path, caption in example_figs:
        doc.add(f"### {title}", "", f"![{title}]({REPORT_DIR}/{path.name})", "", f"*{caption}*", "")
    if example_note:
        doc.add(example_note, "")
    if example_figs:
        doc.add("Predicted joints come from the sampled 6D pose through the built-in skeleton "
                "(`poserft.common.body.BodyModel`); a run trained with `body.smpl_dir` used SMPL joints for its rewards.", "")
    doc.add("## Data sources", "")
    n_lines = len(rows)
    doc.add(f"- `metrics.jsonl`: {n_lines} step line(s) used"
            + (f" ({_step_range(series.steps)})" if n_lines else "") + ".")
    if files:
        sampled = " (evenly spaced)" if len(files) > MAX_REWARD_FILES else ""
        doc.add(f"- `rollouts/`: {len(files)} `step_*.parquet` file(s), {len(read_steps)} read{sampled} for the per-task rewards"
                + (f" ({_step_range(read_steps)})" if read_steps else "") + ".")
    else:
        doc.add("- `rollouts/`: " + ("no parquet files." if (run_dir / "rollouts").is_dir() else "missing."))
    ledger = _ledger_counts(run_dir / "ledger.jsonl")
    doc.add(f"- `ledger.jsonl`: {ledger[0]} step(s), {ledger[1]} prompt(s) trained." if ledger else "- `ledger.jsonl`: missing.")
    version = _checkpoint_version(run_dir)
    doc.add(f"- `checkpoints/latest/poserft.json`: policy version {version}." if version is not None
            else "- `checkpoints/latest`: no checkpoint metadata.")
    doc.add("- Per-step samples and tokens are differences of the controller's running totals; step wall time is the "
            "time between consecutive metric lines (the stage-time sum for the first step).", "")
    if notes:
        doc.add("## Warnings", "", *[f"- {n}" for n in notes], "")
    return "\n".join(doc.lines)


def run_dirs_inside(folder: Path) -> list[Path]:
    """Training runs directly inside `folder` (e.g. runs/demo/hygrpo and runs/demo/grpo)."""
    return sorted(p.parent for p in Path(folder).glob("*/metrics.jsonl") if p.is_file())


def plot_compare(runs: dict[str, list[dict]], path: Path) -> Path | None:
    """One panel per reward component, one smoothed line per run."""
    comps = [c for c in REWARDS if any(has(rows, f"reward_{c[0]}") for rows in runs.values())]
    if not comps:
        return None
    ncols = min(3, len(comps))
    nrows = math.ceil(len(comps) / ncols)
    fig = _figure(5.0 * ncols, 3.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for ax, (key, name, meaning) in zip(axes, comps):
        for (run, rows), colour in zip(runs.items(), colours):
            if has(rows, f"reward_{key}"):
                _plot_series(ax, np.array([r["step"] for r in rows]), column(rows, f"reward_{key}"), colour, run)
        _style(ax, f"{name} reward\n({meaning})", "mean reward")
        ax.legend(fontsize=9)
    for ax in axes[len(comps):]:
        ax.axis("off")
    fig.suptitle("Reward per step, run by run (faint: raw, bold: moving average)", fontsize=13)
    return _save(fig, path)


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
        lines += ["## Rewards, run by run", "", f"![rewards]({compare.relative_to(folder)})", "",
                  "*Mean reward per step of each run, per component.*", ""]
    lines += ["## Runs", ""]
    for name, path in reports.items():
        n = len(rows[name])
        last = rows[name][-1] if rows[name] else {}
        lines.append(f"- [{name}]({path.relative_to(folder)}): {n} steps, final policy version {last.get('version', '?')}")
        for png in ("rewards.png", "throughput.png"):
            if (path.parent / REPORT_DIR / png).is_file():
                lines.append(f"  ![{name} {png}]({(path.parent / REPORT_DIR / png).relative_to(folder)})")
    md = folder / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("report", help="write RUN_DIR/report.md with plots from a training run folder",
                              description="Summarise a `poserft train` run folder: RUN_DIR/report.md and PNGs in RUN_DIR/report/.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holds metrics.jsonl, rollouts/, checkpoints/), or a folder of runs such as runs/demo")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    folder = Path(args.run_dir)
    is_run = (folder / "metrics.jsonl").exists()
    path = write_report(folder) if is_run or not run_dirs_inside(folder) else write_folder_report(folder)
    pngs = sorted((path.parent / REPORT_DIR).glob("*.png"))
    print(f"wrote {path} and {len(pngs)} PNG(s) in {path.parent / REPORT_DIR}")
    return 0
