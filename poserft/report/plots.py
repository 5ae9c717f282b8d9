"""The report's figures (matplotlib's Agg canvas, no pyplot): rewards, throughput, staleness, weight
sync, stage times, learner signals, and the side-by-side reward curves of several runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from poserft.report.loading import DPI, REWARDS, STAGE_COLOURS, STAGES, TASK_COLOURS, Series, column, has

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
    return (
        f"faint: raw per step; bold: centred {w}-step moving average" if w else "one point per step (too few to smooth)"
    )


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
                start = float(np.nanmean(m[: max(1, min(5, len(m) // 4))]))
                colour = TASK_COLOURS.get(task, "tab:gray")
                ax.axhline(start, color=colour, ls=":", lw=1.0, label=f"{task}: run start (first steps' mean)")
                _plot_series(
                    ax, s, m, TASK_COLOURS.get(task, "tab:gray"), f"{task} (rollouts)", raw_alpha=0.15, lw=1.6, ls="--"
                )
        _style(ax, f"{name} reward\n({meaning})", "mean reward")
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    spare = list(axes[len(comps) :])
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
    for ax, y, colour, title, unit in (
        (ax1, sps, "tab:blue", "Rollout samples per second", "samples / s"),
        (ax2, tps, "tab:orange", "Generated response tokens per second", "tokens / s"),
    ):
        _plot_series(ax, series.steps, y, colour, "moving average" if smooth_window(len(y)) else "per step")
        fin = y[np.isfinite(y)]
        if fin.size:
            ax.axhline(
                float(np.mean(fin)), color="gray", ls=":", lw=1.2, label=f"mean of the steps {np.mean(fin):,.1f}"
            )
        _style(ax, title, unit)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=9, loc="lower right")
    fig.suptitle(
        "Throughput per step: trained samples or response tokens / wall time between metric lines\n"
        + _smoothing_note(len(series.steps)),
        fontsize=11,
    )
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
    _int_panel(
        ax1,
        steps,
        column(rows, "staleness"),
        "tab:red",
        "Staleness of the trained batch",
        "policy versions behind",
        "staleness",
    )
    _int_panel(
        ax2,
        steps,
        column(rows, "queue_depth"),
        "tab:purple",
        "Scored batches waiting for the learner",
        "queue depth (batches)",
        "queue depth",
    )
    dropped = series.per_step["dropped_stale_groups"]
    ax3.bar(
        steps, np.nan_to_num(dropped), color="tab:red", alpha=0.5, width=0.8, label="dropped stale groups (this step)"
    )
    marker = "o" if len(steps) < 6 else None
    ax3.plot(
        steps,
        column(rows, "dropped_stale_groups"),
        color="tab:red",
        lw=1.8,
        marker=marker,
        label="dropped stale groups (total)",
    )
    ax3.plot(
        steps,
        column(rows, "worker_failures"),
        color="black",
        lw=1.5,
        ls="--",
        marker=marker,
        mfc="none",
        label="rollout worker failures (total)",
    )
    fin = np.concatenate([column(rows, "dropped_stale_groups"), column(rows, "worker_failures")])
    fin = fin[np.isfinite(fin)]
    _style(ax3, "Dropped groups and worker failures", "count (prompt groups / failures)")
    from matplotlib.ticker import MaxNLocator

    ax3.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax3.set_ylim(-0.3, max(1.0, float(fin.max()) if fin.size else 0.0) * 1.15 + 0.3)
    if fin.size and not fin.any():
        ax3.text(
            0.5, 0.6, "none dropped, no failures", ha="center", color="dimgray", fontsize=10, transform=ax3.transAxes
        )
    ax3.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Off-policy pressure: a batch older than rl.max_staleness versions is dropped and its prompts re-queued",
        fontsize=11,
    )
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
    _plot_series(
        ax, series.steps, y, "tab:green", "weight sync (moving average)" if smooth_window(len(y)) else "weight sync"
    )
    _style(
        ax, f"Weight sync: learner -> all rollout workers, per step\n{_smoothing_note(len(y))}", f"sync time ({unit})"
    )
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if has(rows, "workers"):
        ax2 = ax.twinx()
        ax2.step(
            series.steps, column(rows, "workers"), where="mid", color="gray", lw=1.2, ls="--", label="rollout workers"
        )
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
    ax.plot(
        steps,
        series.wall_s,
        color="black",
        lw=1.5,
        marker="." if bars else None,
        label="wall time between metric lines",
    )
    _style(ax, "Time per step by stage (stacked)", "seconds")
    ax.legend(fontsize=9, loc="upper right", ncols=3)
    top = np.nanmax(np.concatenate([bottom, np.nan_to_num(series.wall_s)])) if len(steps) else 1.0
    ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
    ax.set_title(
        "Time per step by stage (stacked). With rl.max_staleness > 0 generation overlaps training,\n"
        "so the stack can exceed the wall time between steps.",
        fontsize=11,
    )
    return _save(fig, path)


LEARNER_PANELS = (
    ("KL to the reference: tokens", "KL (nats / token)", (("kl_token", "token KL"),)),
    ("KL to the reference: pose head", "KL (nats / pose)", (("kl_pose", "pose KL"),)),
    ("clipped fraction", "fraction clipped", (("clip_frac_token", "tokens"), ("clip_frac_pose", "poses"))),
    ("gradient norm (before clipping)", "L2 norm", (("grad_norm", "grad norm"),)),
    ("pose head entropy", "nats", (("pose_entropy", "entropy"),)),
)


def loss_parts(rows, run_config: dict) -> list[tuple[str, np.ndarray, str]]:
    """The terms that add up to the learner's loss, each with its weight, as (label, values, colour):
    loss = token surrogate + lambda_c x pose surrogate + beta x token KL + beta_c x pose KL. Without
    the run's config.yaml the weights are unknown and the KL terms are shown as the rest."""
    rl = run_config.get("rl") or {}
    parts = []
    if has(rows, "loss_token"):
        parts.append(("token surrogate", column(rows, "loss_token"), "tab:blue"))
    lam, beta, beta_c = rl.get("lambda_c"), rl.get("beta"), rl.get("beta_c")
    if has(rows, "loss_pose"):
        w = 1.0 if lam is None else float(lam)
        parts.append((f"{w:g} x pose surrogate (lambda_c)", w * column(rows, "loss_pose"), "tab:orange"))
    if beta is not None and beta_c is not None:
        if float(beta) and has(rows, "kl_token"):
            parts.append((f"{float(beta):g} x token KL (beta)", float(beta) * column(rows, "kl_token"), "tab:purple"))
        if float(beta_c) and has(rows, "kl_pose"):
            kl_pose = float(beta_c) * column(rows, "kl_pose")
            parts.append((f"{float(beta_c):g} x pose KL (beta_c)", kl_pose, "tab:green"))
    elif has(rows, "loss") and parts:
        rest = column(rows, "loss") - sum(np.nan_to_num(v) for _, v, _ in parts)
        parts.append(("KL terms (total - surrogates; no config.yaml)", rest, "tab:green"))
    return parts


def plot_learner(rows, series: Series, path: Path, run_config: dict | None = None) -> Path | None:
    parts = loss_parts(rows, run_config or {}) if has(rows, "loss") else []
    panels = [p for p in LEARNER_PANELS if any(has(rows, k) for k, _ in p[2])]
    if not panels and not has(rows, "loss"):
        return None
    n = len(panels) + has(rows, "loss")
    ncols = 2 if n == 4 else min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(5.0 * ncols + (1.5 if ncols == 2 else 0.0), 3.5 * nrows + 0.6)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    if has(rows, "loss"):
        ax = axes.pop(0)
        _plot_series(ax, series.steps, column(rows, "loss"), "black", "total loss")
        for label, values, colour in parts:
            _plot_series(ax, series.steps, values, colour, label, lw=1.6)
        _style(ax, "learner loss and the terms it adds up", "loss")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.legend(fontsize=7)
    colours = ("black", "tab:blue", "tab:orange")
    for ax, (title, ylabel, keys) in zip(axes, panels):
        for (k, label), colour in zip([kk for kk in keys if has(rows, kk[0])], colours):
            _plot_series(ax, series.steps, column(rows, k), colour, label)
        _style(ax, title, ylabel)
        if len(ax.get_lines()) > 2:
            ax.legend(fontsize=8)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"Learner signals per step ({_smoothing_note(len(series.steps))})", fontsize=12)
    return _save(fig, path)


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
    for ax in axes[len(comps) :]:
        ax.axis("off")
    fig.suptitle("Reward per step, run by run (faint: raw, bold: moving average)", fontsize=13)
    return _save(fig, path)
