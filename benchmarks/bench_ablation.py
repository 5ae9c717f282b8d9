"""Seed ablation of the demo pipeline: SFT -> {HyGRPO, GRPO}, mean ± 95 % confidence interval.

Runs `poserft.demo.run_demo` (data, retrievers, init, SFT, HyGRPO, GRPO, eval) once per seed, one
seed after another, and reports for each checkpoint (sft, hygrpo, grpo) and metric the mean over
the seeds, the sample standard deviation and the half-width of the 95 % confidence interval
(Student's t with n-1 degrees of freedom), plus the paired differences hygrpo - sft and
grpo - sft per seed with their own interval (and whether it excludes 0) and the relative change
of the mean in %. About 25 minutes per seed with configs/tiny-cpu.yaml on the 2-core box, so the
default 3 seeds take about an hour when the finished `make demo` run is reused for seed 0. It is
a benchmark, not part of `make test`.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_ablation.py [--seeds 0,1,2] [--config F] [--data DIR]
        [--out runs/ablation] [--reuse runs/demo|none] [--json F] [--set KEY=VALUE ...] [--quick] [--report-only]
        [--blind FILE|none] [--sft-from OLD_OUT]

What varies with the seed s: `model.init_seed=s` (the policy's random initialisation),
`sft.seed=s` (SFT's torch seed and its batch order) and `rl.seed=s` (the RL prompt order, the
rollout sampling seed `rl.seed + step` and the learner's torch seed), passed to `run_demo` as
config overrides. What does not: the synthetic data (`data.seed`; one folder, `--data`, built
once) and the two retrievers: the reward retriever (the semantic reward of text2pose) and the
evaluator (text2pose recall), which every seed must share for its numbers to be comparable.
Their files (retriever.json, retriever.safetensors) are copied into each seed's folder before
`run_demo`, which then skips training them: from the reused run (below), else from the first
seed that trained them.

Blind set (`--blind`, default benchmarks/data/human_blind/descriptions.jsonl; `none` skips it):
each checkpoint is also evaluated on a second descriptions file, written without seeing the
training captions, by `poserft eval --limit 1 --descriptions FILE` into SEED/eval_blind/METHOD/
(kept, so a rerun or `--report-only` reads it), and its top-1 is the last column.

Reuse (`--reuse`, default runs/demo): the finished `make demo` run stands for the seed whose
config it holds (seed 0 with tiny-cpu.yaml, whose seeds are all 0), so its 25 minutes are not
repeated. It is reused only when its summary.json's `config` equals the config of that seed
field by field, except the paths that name the run's own folders (run_dir, data.dir,
rewards.retriever_dir, eval.evaluator_dir, logging.dir; the data folder is compared on its
own with `--data`) and fields added to the schema after that run that are at their default;
otherwise one line says why and the seed runs fresh. A reused run appears as a symlink
OUT/seedS -> the run folder.

RL-only ablation (`--sft-from OLD_OUT`): a seed folder without an SFT starts from copies of the
init/ and sft/ folders of OLD_OUT/seedS (and the retrievers found there, when none are shared
yet), so a change to rl, rewards or eval is ablated in about 9 minutes per seed here instead of
25. They are copied only when that run's seed, data, model and sft settings equal this seed's
and it was trained on the same data folder; otherwise one line says why and the seed trains its
own SFT.

Resuming: each seed's folder is resumed by `run_demo` stage by stage; a seed whose summary.json
exists is read, not run again (after the same config check: a folder of another config is
reported as failed, delete it to run it again). A seed that fails is reported as failed in
the tables and the JSON and the others go on. `--report-only` runs nothing and recomputes the
tables (and rewrites the JSON) from the seed folders; there a seed of another config than the
current one is kept, with a warning. `--quick` is a smoke test of the script (5-8 minutes on the
2-core box, most of it Ray/vLLM start-up and the 166 dev-set descriptions of each eval): tiny
data in OUT/data, a few SFT and RL steps, 16 eval rows, 2 seeds, output in runs/ablation-quick
and benchmarks/results/ablation_quick.json; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import write_json  # noqa: E402
from poserft.demo import SEED_KEYS  # noqa: E402  (what `poserft demo --seed` sets)

METHODS = ("sft", "hygrpo", "grpo")
BASELINE = "sft"
# Paths naming the run's own folders: a reused run was written to another run_dir.
IGNORED_CONFIG_PATHS = ("run_dir", "data.dir", "rewards.retriever_dir", "eval.evaluator_dir", "logging.dir")
RETRIEVERS = ("retriever_reward", "retriever_evaluator")
RETRIEVER_FILES = ("retriever.json", "retriever.safetensors")  # what Retriever.load reads (not train_state.pt)
QUICK_OVERRIDES = [
    "data.train_poses=200",
    "data.val_poses=32",
    "data.test_poses=32",
    "retriever.epochs=1",
    "sft.align_steps=4",
    "sft.steps=8",
    "sft.warmup_steps=2",
    "sft.val_every=8",
    "sft.val_rows=16",
    "sft.ckpt_every=8",
    "rl.steps=2",
    "rl.prompts_per_step=2",
    "rl.group_size=4",
    "rl.checkpoint_every=1",
    "rl.rollout.num_workers=1",
    "rl.sampling.pose_samples=4",
    "eval.limit=16",
    "eval.max_new_tokens=128",
]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    path: tuple[str, ...]  # inside one checkpoint's eval result (summary.json[method], eval/METHOD/eval.json)
    better: str  # "lower" or "higher"
    digits: int


METRICS = (
    Metric("image2pose_pa_mpjpe_mm", "image2pose PA-MPJPE (mm)", ("image2pose", "pa_mpjpe_mm"), "lower", 1),
    Metric("image2pose_mpjpe_mm", "image2pose MPJPE (mm)", ("image2pose", "mpjpe_mm"), "lower", 1),
    Metric("text2pose_r10", "text2pose R@10 t2p (%)", ("text2pose", "recall_at_10_t2p"), "higher", 1),
    Metric("text2pose_mrecall", "text2pose mRecall (%)", ("text2pose", "mrecall"), "higher", 1),
    Metric("pose2text_similarity", "pose2text similarity", ("pose2text", "text_similarity"), "higher", 4),
    Metric("pose2text_r10", "pose2text R@10 p2t (%)", ("pose2text", "recall_at_10_p2t"), "higher", 1),
    Metric("dev_top1", "dev-set top-1 (%)", ("descriptions", "top1"), "higher", 1),
    Metric("dev_top3", "dev-set top-3 (%)", ("descriptions", "top3"), "higher", 1),
    # Not in summary.json: `blind_top1` below evaluates each checkpoint on --blind.
    Metric("blind_top1", "blind-set top-1 (%)", ("blind_descriptions", "top1"), "higher", 1),
)
EXTRA_METRICS = ("blind_top1",)  # computed here, never in a demo's summary.json
BLIND_SET = Path(__file__).resolve().parent / "data" / "human_blind" / "descriptions.jsonl"
CHECKPOINTS = {"sft": "sft/policy", "hygrpo": "hygrpo/checkpoints/latest", "grpo": "grpo/checkpoints/latest"}

# Student's t, 97.5 % quantile (two-sided 95 %), for df 1..30; above 30 the df-30 value (slightly wide).
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


# ---------------------------------------------------------------- statistics (pure)


def t975(df: int, use_scipy: bool = True) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (scipy when installed)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if use_scipy:
        try:
            from scipy.stats import t
        except ImportError:
            pass
        else:
            return float(t.ppf(0.975, df))
    return T975[min(df, len(T975)) - 1]


def describe(values, use_scipy: bool = True) -> dict:
    """n, mean, sample std and the 95 % CI half-width (None where n is too small)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    out = {"n": n, "mean": None, "std": None, "ci95": None, "lo": None, "hi": None}
    if n == 0:
        return out
    out["mean"] = statistics.fmean(xs)
    if n >= 2:
        out["std"] = statistics.stdev(xs)
        out["ci95"] = t975(n - 1, use_scipy) * out["std"] / math.sqrt(n)
        out["lo"], out["hi"] = out["mean"] - out["ci95"], out["mean"] + out["ci95"]
    return out


def paired_difference(base: dict, other: dict, better: str = "higher", use_scipy: bool = True) -> dict:
    """other - base over the seeds both have (seed -> value), with its 95 % CI.

    `excludes_zero` says whether the interval misses 0; `verdict` is "better"/"worse" (in the
    metric's own direction) when it does, "n.s." when it does not, "n<2" when there is no
    interval; `rel_change_pct` is the mean difference in % of the base mean over the same seeds."""
    seeds = [s for s in base if s in other and base[s] is not None and other[s] is not None]
    diffs = [other[s] - base[s] for s in seeds]
    out = describe(diffs, use_scipy)
    out["seeds"], out["diffs"] = seeds, diffs
    base_mean = statistics.fmean([base[s] for s in seeds]) if seeds else None
    out["rel_change_pct"] = 100.0 * out["mean"] / base_mean if seeds and base_mean else None
    if out["ci95"] is None:
        out["excludes_zero"], out["verdict"] = None, "n<2"
    else:
        out["excludes_zero"] = out["lo"] > 0 or out["hi"] < 0
        improved = out["mean"] < 0 if better == "lower" else out["mean"] > 0
        out["verdict"] = ("better" if improved else "worse") if out["excludes_zero"] else "n.s."
    return out


def extract_metrics(summary: dict) -> dict:
    """{method: {metric key: value or None}} from a demo summary.json (or {method: eval.json})."""
    out = {}
    for method in METHODS:
        row = {}
        for m in METRICS:
            node = summary.get(method)
            for part in m.path:
                node = node.get(part) if isinstance(node, dict) else None
            row[m.key] = float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None
        out[method] = row
    return out


def aggregate(per_seed: dict, use_scipy: bool = True) -> dict:
    """Stats over the seeds whose values are known: per_seed = {seed: {method: {metric: value}} or None}."""
    ok = {s: v for s, v in per_seed.items() if v is not None}
    stats = {
        method: {m.key: describe([v[method][m.key] for v in ok.values()], use_scipy) for m in METRICS}
        for method in METHODS
    }
    paired = {}
    for method in METHODS:
        if method == BASELINE:
            continue
        paired[f"{method}-{BASELINE}"] = {
            m.key: paired_difference(
                {s: v[BASELINE][m.key] for s, v in ok.items()},
                {s: v[method][m.key] for s, v in ok.items()},
                m.better,
                use_scipy,
            )
            for m in METRICS
        }
    return {"stats": stats, "paired": paired}


def seed_overrides(seed: int) -> list[str]:
    return [f"{key}={seed}" for key in SEED_KEYS]


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, path + "."))
        else:
            out[path] = v
    return out


def config_mismatches(old: dict, new: dict, defaults: dict | None = None, ignore=IGNORED_CONFIG_PATHS) -> list[str]:
    """Where a run's recorded config `old` differs from `new` (both model_dump()s as JSON).

    Paths under `ignore` are skipped; a field missing from `old` (added to the schema after that
    run) counts only when `new` sets it to something else than its default in `defaults`."""
    o, n, d = _flatten(old), _flatten(new), _flatten(defaults or {})

    def ignored(p):
        return any(p == i or p.startswith(i + ".") for i in ignore)

    out = []
    for p in sorted(set(o) | set(n)):
        if ignored(p):
            continue
        if p not in o:
            if p not in d or d[p] != n[p]:
                out.append(f"{p}: not in the run, {n[p]!r} here")
        elif p not in n:
            out.append(f"{p}: {o[p]!r} in the run, gone here")
        elif o[p] != n[p]:
            out.append(f"{p}: {o[p]!r} in the run, {n[p]!r} here")
    return out


# ---------------------------------------------------------------- tables (pure)


def _fmt(x, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mean_ci(st: dict, digits: int) -> str:
    if st["mean"] is None:
        return "-"
    if st["ci95"] is None:
        return f"{_fmt(st['mean'], digits)} (n={st['n']})"
    return f"{_fmt(st['mean'], digits)} ± {_fmt(st['ci95'], digits)}"


def _arrow(m: Metric) -> str:
    return "↓" if m.better == "lower" else "↑"


def format_tables(result: dict) -> str:
    """Markdown: per-method mean ± CI, the paired differences, and the raw values per seed."""
    stats, paired, per_seed = result["stats"], result["paired"], result["per_seed"]
    head = "| {} | n | " + " | ".join(f"{m.label} {_arrow(m)}" for m in METRICS) + " |"
    rule = "|---|---|" + "---|" * len(METRICS)
    lines = [
        "mean ± 95 % CI half-width over the seeds (↓ lower is better, ↑ higher is better)",
        "",
        head.format("method"),
        rule,
    ]
    for method in METHODS:
        n = max(st["n"] for st in stats[method].values())
        cells = [_mean_ci(stats[method][m.key], m.digits) for m in METRICS]
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "paired difference per seed, mean ± 95 % CI (relative change of the mean); better/worse: the CI excludes 0",
        "",
        head.format("difference"),
        rule,
    ]
    for name, per_metric in paired.items():
        n = max(p["n"] for p in per_metric.values())
        cells = []
        for m in METRICS:
            p = per_metric[m.key]
            if p["mean"] is None:
                cells.append("-")
                continue
            rel = "" if p["rel_change_pct"] is None else f" ({p['rel_change_pct']:+.1f} %)"
            ci = "" if p["ci95"] is None else f" ± {_fmt(p['ci95'], m.digits)}"
            cells.append(f"{p['mean']:+.{m.digits}f}{ci}{rel} {p['verdict']}")
        lines.append(f"| {name.replace('-', ' - ')} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "raw values per seed", "", head.format("seed / method").replace("| n |", "| status |"), rule]
    for seed, info in per_seed.items():
        if info["values"] is None:
            lines.append(f"| {seed} | failed: {info['error']} |" + " |" * (len(METRICS) - 1) + " |")
            continue
        for method in METHODS:
            cells = [_fmt(info["values"][method][m.key], m.digits) for m in METRICS]
            status = "reused" if info.get("reused") else "ok"
            lines.append(f"| {seed} / {method} | {status} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- running the seeds


def _config_tree(config: str, overrides: list[str]) -> dict:
    from poserft.common.config import load_config

    return json.loads(json.dumps(load_config(config, overrides).model_dump(), default=str))


def _default_tree() -> dict:
    from poserft.common.config.schema import Config

    return json.loads(json.dumps(Config().model_dump(), default=str))


def _same_dir(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def recorded_seed(config: dict) -> int | None:
    """The ablation seed a run's recorded config stands for: its SEED_KEYS all equal (else None)."""
    flat = _flatten(config)
    values = {flat.get(k) for k in SEED_KEYS}
    return values.pop() if len(values) == 1 and isinstance(next(iter(values)), int) else None


def reuse_problem(summary: dict, expected: dict, defaults: dict, data_dir: Path) -> str | None:
    """Why a finished run (its summary.json) cannot stand for the config `expected` (None: it can)."""
    diffs = config_mismatches(summary.get("config", {}), expected, defaults)
    if diffs:
        more = f" (+{len(diffs) - 1} more)" if len(diffs) > 1 else ""
        return f"its config differs: {diffs[0]}{more}"
    run_data = summary.get("data", {}).get("dir")
    if run_data is None or not _same_dir(run_data, data_dir):
        return f"it was trained on {run_data}, not {data_dir}"
    if any(v is None for row in extract_metrics(summary).values() for k, v in row.items() if k not in EXTRA_METRICS):
        return "its summary.json lacks some eval results"
    return None


def _read_summary(run_dir: Path) -> tuple[dict | None, str | None]:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None, f"{path} does not exist (not a finished demo run)"
    try:
        return json.loads(path.read_text()), None
    except json.JSONDecodeError as e:
        return None, f"{path} is not JSON ({e})"


# What a seed's init and SFT are a function of: `--sft-from` reuses them when these agree.
SFT_INPUTS = ("seed", "data", "model", "sft")


def sft_reuse_problem(src: Path, expected: dict, defaults: dict, data_dir: Path) -> str | None:
    """Why the init and SFT of the finished run `src` cannot stand for a seed of config `expected`
    (None: they can). Only the config's SFT inputs (SFT_INPUTS) and the data folder must agree:
    an RL-only ablation changes rl, rewards or eval and keeps the SFT."""
    summary, why = _read_summary(src)
    if summary is None:
        return why
    ignore = IGNORED_CONFIG_PATHS + tuple(k for k in {**summary.get("config", {}), **expected} if k not in SFT_INPUTS)
    diffs = config_mismatches(summary.get("config", {}), expected, defaults, ignore=ignore)
    if diffs:
        return f"its SFT's config differs: {diffs[0]}"
    run_data = summary.get("data", {}).get("dir")
    if run_data is None or not _same_dir(run_data, data_dir):
        return f"its SFT was trained on {run_data}, not {data_dir}"
    if not all((src / d / "poserft.json").is_file() for d in ("init", "sft/policy")):
        return f"{src} lacks init/ or sft/policy/"
    return None


def copy_sft(src: Path, dst: Path) -> None:
    """Copy the init and SFT folders of `src` into the seed folder `dst` (run_demo then skips them)."""
    dst.mkdir(parents=True, exist_ok=True)
    for d in ("init", "sft"):
        if not (dst / d).exists():
            shutil.copytree(src / d, dst / d)


def has_retrievers(run_dir: Path) -> bool:
    return all((run_dir / r / f).is_file() for r in RETRIEVERS for f in RETRIEVER_FILES)


def share_retrievers(src: Path, dst: Path) -> None:
    """Copy the reward and evaluator retrievers of `src` into `dst`; an existing copy must be the same."""
    for r in RETRIEVERS:
        (dst / r).mkdir(parents=True, exist_ok=True)
        for f in RETRIEVER_FILES:
            a, b = src / r / f, dst / r / f
            if b.is_file():
                if not filecmp.cmp(a, b, shallow=False):
                    raise RuntimeError(f"{b} differs from {a}: the seeds would not share the retriever (delete {dst})")
            else:
                shutil.copy2(a, b)


def load_seed(seed_dir: Path, expected: dict, defaults: dict, strict: bool = True) -> tuple[dict | None, str | None]:
    """(values, note) from a finished seed folder, or (None, why not).

    A run of another config than `expected` is refused when `strict` (running: the seeds must not
    mix configs); with `--report-only` its values are kept and the note says how it differs."""
    summary, why = _read_summary(seed_dir)
    if summary is None:
        return None, why
    diffs = config_mismatches(summary.get("config", {}), expected, defaults)
    if diffs and strict:
        return None, f"{seed_dir / 'summary.json'} holds another config ({diffs[0]}); delete {seed_dir} to run it again"
    note = f"another config than {seed_dir.name}'s expected one: {diffs[0]} (+{len(diffs) - 1} more)" if diffs else None
    return extract_metrics(summary), note


def blind_top1(seed_dir: Path, blind: Path, data_dir: Path, run: bool = True) -> dict:
    """{method: top-1 % or None} on the `blind` descriptions file, from SEED/eval_blind/METHOD/eval.json;
    with `run`, a missing one is made first by `poserft eval --limit 1 --descriptions` (about a
    minute per checkpoint). A file written for another descriptions file is not used."""
    out = {}
    for method, ckpt in CHECKPOINTS.items():
        folder = seed_dir / "eval_blind" / method
        path = folder / "eval.json"
        found = json.loads(path.read_text()) if path.is_file() else None
        if found and Path((found.get("descriptions") or {}).get("file", "")).resolve() != blind.resolve():
            found = None
        if found is None and run and (seed_dir / ckpt).exists():
            cmd = [sys.executable, "-m", "poserft", "eval", "--ckpt", str(seed_dir / ckpt), "--data", str(data_dir)]
            cmd += ["--evaluator", str(seed_dir / "retriever_evaluator"), "--limit", "1"]
            cmd += ["--descriptions", str(blind), "--out", str(folder)]
            print(f"[ablation] {seed_dir.name} / {method}: {blind.parent.name} top-1", flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0 and path.is_file():
                found = json.loads(path.read_text())
            else:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                print(f"[ablation] {seed_dir.name} / {method}: blind eval failed: {tail[0]}", flush=True)
        top1 = ((found or {}).get("descriptions") or {}).get("top1")
        out[method] = float(top1) if isinstance(top1, (int, float)) else None
    return out


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def run_seed(seed: int, seed_dir: Path, data_dir: Path, config: str, overrides: list[str], retriever_src):
    from poserft.demo import run_demo

    if retriever_src is not None:
        share_retrievers(retriever_src, seed_dir)
        print(f"[ablation] seed {seed}: retrievers copied from {retriever_src}", flush=True)
    try:
        run_demo(data_dir=data_dir, run_dir=seed_dir, seed=seed, config=config, overrides=overrides)
    finally:
        import ray

        if ray.is_initialized():  # a failed RL stage leaves it up; the next seed starts its own
            ray.shutdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; 0,1 with --quick)")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--data", default=None, help="the shared data folder (default data/synth; OUT/data with --quick)")
    ap.add_argument("--out", default=None, help="seed folders OUT/seedS (default runs/ablation[-quick])")
    ap.add_argument("--reuse", default="runs/demo", help="a finished `make demo` run for its seed, or `none`")
    ap.add_argument(
        "--sft-from",
        default=None,
        help="an earlier ablation's OUT: each seed starts from the init and SFT of its seed folder there, when "
        "their seed, data, model and sft settings match (an RL-only ablation)",
    )
    ap.add_argument("--json", default=None, help="default benchmarks/results/ablation[_quick].json")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every seed")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny data, a few steps, 2 seeds")
    ap.add_argument("--report-only", action="store_true", help="run nothing; tables from the seed folders")
    ap.add_argument(
        "--blind",
        default=str(BLIND_SET),
        help="a second descriptions file each checkpoint is evaluated on (default the blind set; `none` = skip)",
    )
    args = ap.parse_args(argv)
    blind = None if args.blind.lower() in ("", "none") else Path(args.blind)
    if blind is not None and not blind.is_file():
        print(f"--blind {blind} does not exist", file=sys.stderr)
        return 2

    seeds = [int(s) for s in (args.seeds or ("0,1" if args.quick else "0,1,2")).split(",") if s.strip()]
    out = Path(args.out or ("runs/ablation-quick" if args.quick else "runs/ablation"))
    data_dir = Path(args.data or (out / "data" if args.quick else "data/synth"))
    json_out = args.json or f"benchmarks/results/ablation{'_quick' if args.quick else ''}.json"
    if not Path(args.config).is_file():
        print(f"config {args.config} does not exist", file=sys.stderr)
        return 2
    base = (QUICK_OVERRIDES if args.quick else []) + list(args.set)
    defaults = _default_tree()
    reuse = None if args.reuse.lower() in ("", "none") else Path(args.reuse)
    sft_from = None if args.sft_from is None else Path(args.sft_from)
    if sft_from is not None and not sft_from.is_dir():
        print(f"--sft-from {sft_from} is not a folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)

    per_seed: dict[str, dict] = {}
    retriever_src: Path | None = None
    reuse_seed, reuse_note = None, "report only: not looked at" if args.report_only else "not asked"
    if reuse is not None and not args.report_only:
        reuse_summary, reuse_note = _read_summary(reuse)
        if reuse_summary is not None:
            reuse_seed = recorded_seed(reuse_summary.get("config", {}))
            if reuse_seed not in seeds:
                got = "differ from each other" if reuse_seed is None else f"are {reuse_seed}"
                reuse_note, reuse_seed = f"its seeds ({', '.join(SEED_KEYS)}) {got}, not one of --seeds", None
            else:
                reuse_note = reuse_problem(
                    reuse_summary, _config_tree(args.config, base + seed_overrides(reuse_seed)), defaults, data_dir
                )
                if reuse_note is not None:
                    reuse_seed = None
        if reuse_seed is None:
            print(f"[ablation] not reusing {reuse}: {reuse_note}", flush=True)
        else:
            reuse_note = f"{reuse} stands for seed {reuse_seed}"
            link = out / f"seed{reuse_seed}"
            if not link.exists() and not link.is_symlink():
                link.symlink_to(reuse.resolve(), target_is_directory=True)
                print(
                    f"[ablation] seed {reuse_seed}: the finished run {reuse} stands for it ({link} -> it)", flush=True
                )
            if link.resolve() != reuse.resolve():
                reuse_note = f"{link} exists and is not {reuse}: it is used as it is"
                print(f"[ablation] {reuse_note}", flush=True)
            elif has_retrievers(reuse):
                retriever_src = reuse.resolve()
    t_all = time.time()
    for i, seed in enumerate(seeds, 1):
        overrides = base + seed_overrides(seed)
        expected = _config_tree(args.config, overrides)
        seed_dir = out / f"seed{seed}"
        info = {"dir": str(seed_dir), "overrides": seed_overrides(seed), "reused": False, "values": None, "error": None}
        per_seed[str(seed)] = info
        info["reused"] = seed_dir.is_symlink()
        if not args.report_only and not (seed_dir / "summary.json").is_file():
            print(
                f"\n[ablation] seed {seed} ({i}/{len(seeds)}): {' '.join(seed_overrides(seed))} -> {seed_dir}",
                flush=True,
            )
            if sft_from is not None and not (seed_dir / "sft").exists():
                src = (sft_from / f"seed{seed}").resolve()
                why = sft_reuse_problem(src, expected, defaults, data_dir)
                if why is None:
                    copy_sft(src, seed_dir)
                    if retriever_src is None and has_retrievers(src):
                        retriever_src = src
                    info["sft_from"] = str(src)
                    print(f"[ablation] seed {seed}: init and SFT copied from {src}", flush=True)
                else:
                    print(f"[ablation] seed {seed}: not reusing the SFT of {src}: {why}", flush=True)
            t0 = time.time()
            try:
                run_seed(seed, seed_dir, data_dir, args.config, overrides, retriever_src)
            except Exception as e:  # noqa: BLE001 - one failed seed must not lose the others
                traceback.print_exc()
                info["error"] = _error_line(e)
                print(f"[ablation] seed {seed} FAILED after {time.time() - t0:.0f} s: {info['error']}", flush=True)
            else:
                print(f"[ablation] seed {seed} done in {time.time() - t0:.0f} s", flush=True)
            info["seconds"] = round(time.time() - t0, 1)
        if retriever_src is None and has_retrievers(seed_dir):
            retriever_src = seed_dir
        if info["error"] is None:
            values, note = load_seed(seed_dir, expected, defaults, strict=not args.report_only)
            info["values"] = values
            info["error" if values is None else "warning"] = note
            if values is not None and note:
                print(f"[ablation] seed {seed}: WARNING {note}", flush=True)
            if values is not None and blind is not None:
                for method, top1 in blind_top1(seed_dir, blind, data_dir, run=not args.report_only).items():
                    values[method]["blind_top1"] = top1
        if info["values"] is None:
            print(f"[ablation] seed {seed}: no results ({info['error']})", flush=True)

    agg = aggregate({s: v["values"] for s, v in per_seed.items()})
    result = {**agg, "per_seed": per_seed}
    print("\n" + format_tables(result))
    failed = [s for s, v in per_seed.items() if v["values"] is None]
    if failed:
        print(f"\nseeds without results: {', '.join(failed)} (see per_seed in the JSON)")
    write_json(
        "bench_ablation",
        {
            "config": args.config,
            "overrides": base,
            "quick": args.quick,
            "seeds": seeds,
            "seed_keys": list(SEED_KEYS),
            "data": str(data_dir),
            "out": str(out),
            "reuse": {"dir": None if reuse is None else str(reuse), "note": reuse_note},
            "sft_from": None if sft_from is None else str(sft_from),
            "retrievers_from": None if retriever_src is None else str(retriever_src),
            "ci": "95 % two-sided, Student's t with n-1 df; std is the sample std (ddof 1)",
            "metrics": [
                {"key": m.key, "label": m.label, "path": ".".join(("METHOD", *m.path)), "better": m.better}
                for m in METRICS
            ],
            "blind": None if blind is None else str(blind),
            "wall_s": round(time.time() - t_all, 1),
            **result,
        },
        json_out,
    )
    return 1 if len(failed) == len(seeds) else 0


if __name__ == "__main__":
    sys.exit(main())
