"""Scale simulation: the real controller with 1..64 simulated rollout workers.

Runs `poserft.cluster.controller` (the named controller actor, as `poserft train` does) with the
simulated roles of `benchmarks.sim_roles`: rollout workers, learner and reward pool sleep for
durations from a time model of a 7B policy on H100s (see that module's docstring for the model,
its sources and which constants are assumptions) compressed by `--time-scale`. Everything else
(dispatch with the max_staleness bound, weight sync, ledger, Parquet per step, metrics,
checkpoint) is the code that runs in training.

The workload is `configs/8xh100.yaml` (64 prompts x 8 samples per step, rollout tensor
parallelism 2, an 8-GPU learner, updates_per_batch 2, KL to the reference on) with its placement
requests zeroed so the roles fit here. For max_staleness 0 and 1 (`--staleness`) and each worker
count it prints, in simulated seconds over the steps after the first:
- samples/s and groups/s, and the speed-up over one worker;
- learner_util: modelled learner busy time / wall time; learner_ceiling: samples/s if the
  learner were busy all the time (its own limit); rollout_util: modelled generation time /
  (workers x wall time);
- mean and max staleness of the trained batches, groups dropped as too stale;
- where the time goes: the controller's own stage timings, and for the synchronous runs
  `ctl_real_ms`, the controller's own work per step in real milliseconds (joins, advantages,
  Parquet, ledger, Ray calls: it is not compressed, so it counts 1 / time_scale times over in
  simulated seconds; the default time scale 0.1 keeps it at a few per cent of a step, while
  0.01 would make it a large part of every step);
- peak RAM of this process and all Ray processes, and the proportional set size of one
  simulated rollout worker.
The knee ("stops scaling") is the first worker count within 10 % of the best throughput of its
series; "learner-bound" marks learner_util >= 0.85.

`--autoscale` runs `rl.rollout.autoscale` instead of a sweep (max_staleness 1 unless --staleness
names one value; a workload whose generation on one worker is ~3x the learner step:
prefill_mfu 0.15, changeable with --model). First fixed pools (--workers, default 1..6) measure
the learner-bound throughput (the best of them) and what each pool size reaches. Then one run
starts from 1 worker with the autoscaler on (max_workers --max-workers); after --steps learner
steps the modelled generation becomes --slowdown times longer (as longer responses would make
it) for another --steps. Per phase it reports: the pool the time model needs (the smallest
whose slowest shard generates within the learner step), the size the autoscaler settled at and
its throughput over the phase's last quarter, the smallest fixed pool reaching that throughput
(within 5 %), the steps until the throughput (over 5 steps) first reached 90 % of the learner-bound
one, and the decisions per 100 steps after that point (0 = no oscillation); plus every decision.

    python benchmarks/bench_scale.py [--quick] [--time-scale 0.1] [--workers 1,2,4] [--staleness 0,1,3]
                                     [--model response_max=1000] [--set rl.learner.num_gpus=1] [--out FILE]
    python benchmarks/bench_scale.py --autoscale [--quick] [--steps 60] [--slowdown 1.75] [--max-workers 8]

Ray warns that many worker processes are starting on a 2-core node; that is expected here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import print_table, write_json  # noqa: E402

LEARNER_BOUND = 0.85  # learner utilisation from which the learner is called the bottleneck
KNEE = 0.90  # throughput stops scaling at the first worker count within 10 % of the series' best
AUTOSCALE_MODEL = {"prefill_mfu": 0.15}  # --autoscale: generation ~3x the learner step on one worker
REACHED = 0.90  # --autoscale: "reached" = 90 % of the learner-bound throughput
SAME = 0.95  # a fixed pool "reaches the same throughput" within 5 %
ROLLING = 5  # steps over which --autoscale measures throughput
FIXED = "rl.rollout.autoscale.enabled=false"  # a fixed pool (configs/8xh100.yaml turns the autoscaler on)


def settle(timeout_s: float = 60.0) -> None:
    """Wait until the previous run's actor processes have exited (64 of them exiting load the
    2 cores for seconds), so they do not slow the next run."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = 0
        for p in psutil.Process().children(recursive=True):
            try:
                left += any(
                    name in " ".join(p.cmdline())
                    for name in ("SimRolloutWorker", "SimLearner", "SimRewardWorker", "Controller")
                )
            except psutil.Error:
                continue
        if not left:
            break
        time.sleep(0.5)
    time.sleep(2.0)


class MemorySampler:
    """Peak resident memory of this process and everything it started (Ray's GCS, raylet and all
    worker processes), sampled twice a second; plus the proportional set size (PSS, shared pages
    split between processes) of the simulated rollout workers once they have all started."""

    def __init__(self, workers: int):
        import psutil

        self.psutil, self.workers = psutil, workers
        self.peak_rss = 0
        self.pss_per_worker = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _procs(self):
        me = self.psutil.Process()
        return [me, *me.children(recursive=True)]

    def _run(self):
        while not self.stop.is_set():
            total, rollout = 0, []
            for p in self._procs():
                try:
                    total += p.memory_info().rss
                    if "SimRolloutWorker" in " ".join(p.cmdline()):
                        rollout.append(p)
                except self.psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, total)
            if self.pss_per_worker is None and len(rollout) >= self.workers:
                pss = []
                for p in rollout:
                    try:
                        pss.append(p.memory_full_info().pss)
                    except self.psutil.Error:
                        continue
                self.pss_per_worker = sum(pss) / max(1, len(pss))
            self.stop.wait(0.5)


def model_summary(sim, cfg) -> list[dict]:
    """The modelled stage durations for one step of the workload (mean lengths)."""
    import numpy as np

    s = cfg.rl
    n_tasks = len(s.tasks)
    prompts = [sim.prompt_len(s.tasks[i % n_tasks]) for i in range(s.prompts_per_step)]
    plen = np.repeat(prompts, s.group_size)
    rlen = np.array(
        [
            sim.response_len(f"t{i // s.group_size}", i % s.group_size, 0, 0, s.sampling.max_tokens)
            for i in range(len(plen))
        ]
    )
    gen = sim.generation_seconds(plen, rlen, s.group_size)
    tokens = int((plen + rlen).sum())
    ref = s.beta > 0 or s.beta_c > 0
    rows = [
        {"stage": "generate: prefill (distinct prompts)", "seconds": gen["prefill"]},
        {
            "stage": f"generate: decode ({gen['decode_steps']} steps, "
            f"<= {sim.decode_slots(float(np.mean(plen + rlen)))} seqs at once)",
            "seconds": gen["decode"],
        },
        {"stage": "generate: pose-head prefill (worker's own copy)", "seconds": gen["pose_prefill"]},
        {"stage": "generate: one batch on one worker", "seconds": gen["total"]},
        {
            "stage": f"reward ({s.prompts_per_step * s.group_size} samples, per chunk of {cfg.rewards.batch_size})",
            "seconds": sim.reward_seconds(min(cfg.rewards.batch_size, len(plen))),
        },
        {
            "stage": f"learner compute, on-policy ({tokens} tokens)",
            "seconds": sim.learner_seconds(tokens, s.updates_per_batch, ref, True),
        },
        {
            "stage": "learner compute, stale batch",
            "seconds": sim.learner_seconds(tokens, s.updates_per_batch, ref, False),
        },
        {"stage": "learner publish", "seconds": sim.publish_seconds()},
        {"stage": "weight sync (each rollout worker)", "seconds": sim.sync_seconds()},
    ]
    return rows


def sweep(args, sim, workdir: Path) -> tuple[list[dict], dict]:
    import ray

    from benchmarks.sim_roles import run_simulation, sim_config, summarise, write_sim_dataset

    steps = args.steps or (6 if args.quick else 10)
    workers = (
        [int(w) for w in args.workers.split(",")]
        if args.workers
        else ([1, 2, 4, 8, 16] if args.quick else [1, 2, 4, 8, 16, 32, 64])
    )
    staleness = [int(k) for k in args.staleness.split(",")]
    base, _ = sim_config(args.config, args.set, sim, workdir / "data", workdir / "probe")
    data = write_sim_dataset(workdir / "data", max(4096, 2 * steps * base.rl.prompts_per_step), tuple(base.rl.tasks))
    rows = []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        for k in staleness:
            for n in workers:
                run_dir = workdir / f"k{k}_n{n}"
                over = [*args.set, FIXED, f"rl.rollout.num_workers={n}", f"rl.max_staleness={k}", f"rl.steps={steps}"]
                cfg, run_sim = sim_config(args.config, over, sim, data, run_dir)
                print(f"max_staleness {k}, {n} rollout workers, {steps} steps ...", end=" ", flush=True)
                settle()
                t0 = time.time()
                with MemorySampler(n) as mem:
                    result = run_simulation(cfg, run_sim, run_dir)
                row = {
                    "max_staleness": k,
                    "workers": n,
                    **summarise(run_dir, run_sim.time_scale, cfg.rl.group_size, n),
                    "samples_per_step": cfg.rl.prompts_per_step * cfg.rl.group_size,
                    "dropped_groups": result["dropped_stale_groups"],
                    "requeued_prompts": result["requeued_prompts"],
                    "run_real_s": time.time() - t0,
                    "peak_ram_GB": mem.peak_rss / 1e9,
                    "pss_per_worker_MB": (mem.pss_per_worker or 0) / 1e6,
                }
                rows.append(row)
                print(
                    f"{row['samples_per_s']:.1f} samples/s, learner {row['learner_util']:.2f}, "
                    f"{row['run_real_s']:.0f} s real",
                    flush=True,
                )
    finally:
        ray.shutdown()
    return rows, {"steps": steps, "workers": workers, "staleness": staleness, "config": base}


def mark(rows: list[dict], sim, cfg) -> None:
    """Speed-up over one worker, the learner's ceiling, the knee, and (synchronous runs) the
    controller's own real time per step; notes for the table."""
    import math

    rows_per_step = cfg.rl.prompts_per_step * cfg.rl.group_size
    chunks = math.ceil(rows_per_step / cfg.rewards.batch_size)
    reward_model = sim.reward_seconds(min(cfg.rewards.batch_size, rows_per_step)) * math.ceil(
        chunks / cfg.rewards.num_workers
    )
    for k in sorted({r["max_staleness"] for r in rows}):
        series = [r for r in rows if r["max_staleness"] == k]
        best = max(r["samples_per_s"] for r in series)
        knee = next(r for r in series if r["samples_per_s"] >= KNEE * best)
        for r in series:
            r["speedup"] = r["samples_per_s"] / series[0]["samples_per_s"]
            r["learner_ceiling"] = (
                r["samples_per_step"] / r["learner_s"]
            )  # samples/s with the learner busy all the time
            if k == 0:  # serial: step = generate + reward + learner + sync + the controller's own work
                modelled = r["gen_model_s"] + reward_model + r["learner_s"] + sim.sync_seconds()
                r["ctl_real_ms"] = (r["s_per_step"] - modelled) * sim.time_scale * 1000
            notes = []
            if r is knee:
                notes.append(f"<- stops scaling (within {100 * (1 - KNEE):.0f} % of the best, {best:.1f})")
            if r["learner_util"] >= LEARNER_BOUND:
                notes.append("learner-bound")
            r["note"] = ", ".join(notes)


def needed_pool(sim, cfg, version: int, most: int = 64) -> dict:
    """What the time model says about one step: generation on one worker, the learner step, and
    the smallest pool whose slowest shard (prompts split as the controller splits them)
    generates within the learner step."""
    import numpy as np

    from poserft.cluster.inflight import split_even

    s = cfg.rl
    g = s.group_size
    plen = np.repeat([sim.prompt_len(s.tasks[i % len(s.tasks)]) for i in range(s.prompts_per_step)], g)
    rlen = np.array(
        [sim.response_len(f"t{i // g}", i % g, version, 0, s.sampling.max_tokens) for i in range(len(plen))]
    )
    learner = sim.learner_seconds(int((plen + rlen).sum()), s.updates_per_batch, s.beta > 0 or s.beta_c > 0, False)
    learner += sim.publish_seconds()

    def batch_s(n: int) -> float:
        parts = split_even(list(range(s.prompts_per_step)), n)
        rows = [np.concatenate([np.arange(p * g, (p + 1) * g) for p in part]) for part in parts]
        return max(sim.generation_seconds(plen[r], rlen[r], g)["total"] for r in rows) * sim.gen_factor(version)

    need = next((n for n in range(1, most + 1) if batch_s(n) <= learner), most)
    return {"gen_1_worker_s": batch_s(1), "learner_s": learner, "model_need": need}


def _rolling(lines: list[dict], time_scale: float) -> list[float | None]:
    """Samples/s (simulated) over the ROLLING steps up to each step (None before there are enough)."""
    out = []
    for i, ln in enumerate(lines):
        if i < ROLLING:
            out.append(None)
            continue
        before = lines[i - ROLLING]
        out.append((ln["samples"] - before["samples"]) / ((ln["time"] - before["time"]) / time_scale))
    return out


def _reached(rolling: list[float | None], first: int, last: int, level: float) -> int | None:
    """The index in [first, last) where the rolling throughput first reaches `level`; after a dip
    below it when the phase starts above it (phase 2: the pool must catch up with the change)."""
    start = first
    if first > 0:
        dip = next((i for i in range(first, last) if rolling[i] is not None and rolling[i] < level), None)
        if dip is None:
            return min(first + ROLLING - 1, last - 1)
        start = dip
    return next((i for i in range(start, last) if rolling[i] is not None and rolling[i] >= level), None)


def autoscale_run(args, sim, workdir: Path) -> dict:
    """Fixed pools, then the autoscaled run with its mid-run change (see the module docstring)."""
    import json

    import ray

    from benchmarks.sim_roles import run_simulation, sim_config, summarise, write_sim_dataset

    phase = args.steps or (20 if args.quick else 60)
    fixed_steps = 8 if args.quick else 14
    pools = (
        [int(w) for w in args.workers.split(",")] if args.workers else ([1, 2, 4] if args.quick else [1, 2, 3, 4, 5, 6])
    )
    ks = [int(k) for k in args.staleness.split(",")]
    k = ks[0] if len(ks) == 1 else 1
    base, _ = sim_config(args.config, args.set, sim, workdir / "data", workdir / "probe")
    rows = max(4096, 2 * (2 * phase + fixed_steps * len(pools)) * base.rl.prompts_per_step)
    data = write_sim_dataset(workdir / "data", rows, tuple(base.rl.tasks))
    common = [*args.set, f"rl.max_staleness={k}", "rl.checkpoint_every=1000"]
    fixed = []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        for n in pools:
            run_dir = workdir / f"fixed_n{n}"
            cfg, run_sim = sim_config(
                args.config,
                [*common, FIXED, f"rl.rollout.num_workers={n}", f"rl.steps={fixed_steps}"],
                sim,
                data,
                run_dir,
            )
            print(f"fixed pool of {n} rollout workers, {fixed_steps} steps ...", end=" ", flush=True)
            settle()
            run_simulation(cfg, run_sim, run_dir)
            fixed.append({"workers": n, **summarise(run_dir, sim.time_scale, cfg.rl.group_size, n)})
            print(f"{fixed[-1]['samples_per_s']:.1f} samples/s", flush=True)
        over = [
            *common,
            "rl.rollout.num_workers=1",
            "rl.rollout.autoscale.enabled=true",
            "rl.rollout.autoscale.min_workers=1",
            f"rl.rollout.autoscale.max_workers={args.max_workers}",
            f"rl.steps={2 * phase}",
        ]
        run_dir = workdir / "autoscale"
        cfg, run_sim = sim_config(args.config, over, sim, data, run_dir)
        run_sim = replace(run_sim, gen_scale=args.slowdown, gen_scale_from_version=phase)
        print(
            f"autoscale from 1 worker: {phase} steps, then generation x{args.slowdown} for {phase} steps ...",
            end=" ",
            flush=True,
        )
        settle()
        t0 = time.time()
        run_simulation(cfg, run_sim, run_dir)
        print(f"{time.time() - t0:.0f} s real", flush=True)
    finally:
        ray.shutdown()
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    plateau = max(r["samples_per_s"] for r in fixed)
    rolling = _rolling(lines, sim.time_scale)
    decisions = [
        {
            "step": ln["step"],
            "direction": ln["autoscale_direction"],
            "reason": ln["autoscale_reason"],
            "target": ln["target_workers"],
        }
        for ln in lines
        if "autoscale_direction" in ln
    ]
    phases = []
    for name, first, last, version in (
        ("1", 0, phase, 0),
        (f"2 (generation x{args.slowdown})", phase, 2 * phase, phase),
    ):
        part = lines[first:last]
        tail = part[-max(ROLLING, len(part) // 4) :]
        settled_tput = (tail[-1]["samples"] - tail[0]["samples"]) / (
            (tail[-1]["time"] - tail[0]["time"]) / sim.time_scale
        )
        reach = _reached(rolling, first, last, REACHED * plateau)
        after = [d for d in decisions if reach is not None and lines[reach]["step"] < d["step"] <= last]
        span = last - (reach if reach is not None else last)
        model = needed_pool(run_sim, cfg, version)
        same = (
            next((r["workers"] for r in fixed if r["samples_per_s"] >= SAME * settled_tput), None)
            if first == 0
            else None
        )
        phases.append(
            {
                "phase": name,
                "steps": f"{first + 1}-{last}",
                **model,
                "settled_workers": part[-1]["target_workers"],
                "settled_samples_per_s": settled_tput,
                "smallest_fixed_same": same if same is not None else "-",
                "steps_to_90pct": (reach - first + 1) if reach is not None else "never",
                "decisions": sum(1 for d in decisions if first < d["step"] <= last),
                "decisions_per_100_settled": 100 * len(after) / span if span else "-",
            }
        )
    return {
        "max_staleness": k,
        "phase_steps": phase,
        "fixed_steps": fixed_steps,
        "slowdown": args.slowdown,
        "max_workers": args.max_workers,
        "learner_bound_samples_per_s": plateau,
        "model_ceiling_samples_per_s": base.rl.prompts_per_step * base.rl.group_size / phases[0]["learner_s"],
        "fixed": fixed,
        "phases": phases,
        "decisions": decisions,
        "steps": [
            {
                k_: ln.get(k_)
                for k_ in (
                    "step",
                    "time",
                    "samples",
                    "workers",
                    "target_workers",
                    "learner_wait_frac",
                    "worker_busy_frac",
                    "wait_on_gen_frac",
                    "queue_depth",
                    "idle_behind_bound_frac",
                    "autoscale_direction",
                )
            }
            for ln in lines
        ],
        "rolling_samples_per_s": rolling,
        "config": cfg,
    }


def print_autoscale(result: dict, sim) -> None:
    print(
        f"\nfixed pools, max_staleness {result['max_staleness']}, steps 2..{result['fixed_steps']} (simulated seconds, "
        f"time scale {sim.time_scale})"
    )
    print_table(result["fixed"], ["workers", "samples_per_s", "learner_util", "rollout_util", "mean_staleness"])
    print(
        f"learner-bound throughput (best fixed pool): {result['learner_bound_samples_per_s']:.1f} samples/s; "
        f"the time model's ceiling {result['model_ceiling_samples_per_s']:.1f}"
    )
    print(f"\nautoscale from 1 worker (rl.rollout.autoscale defaults, max_workers {result['max_workers']})")
    print_table(
        result["phases"],
        [
            "phase",
            "steps",
            "gen_1_worker_s",
            "learner_s",
            "model_need",
            "settled_workers",
            "settled_samples_per_s",
            "smallest_fixed_same",
            "steps_to_90pct",
            "decisions",
            "decisions_per_100_settled",
        ],
    )
    print("\ndecisions")
    print_table(result["decisions"], ["step", "direction", "reason", "target"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="1,2,4,8,16 workers and 6 steps per run (default 1..64 and 10 steps)"
    )
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "8xh100.yaml"))
    ap.add_argument("--workers", default=None, help="comma-separated worker counts")
    ap.add_argument("--staleness", default="0,1", help="comma-separated max_staleness values (default 0,1)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--time-scale", type=float, default=0.1, help="real seconds per simulated second (default 0.1)")
    ap.add_argument("--model", action="append", default=[], metavar="FIELD=VALUE", help="override a SimModel constant")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--out", default=None)
    ap.add_argument("--autoscale", action="store_true", help="run rl.rollout.autoscale instead of the sweep")
    ap.add_argument("--slowdown", type=float, default=1.75, help="--autoscale: generation time factor of phase 2")
    ap.add_argument("--max-workers", type=int, default=8, help="--autoscale: rl.rollout.autoscale.max_workers")
    args = ap.parse_args()

    from benchmarks.sim_roles import SimModel

    sim = SimModel(time_scale=args.time_scale)
    if args.autoscale:
        sim = replace(sim, **AUTOSCALE_MODEL)
    kinds = {f.name: type(getattr(sim, f.name)) for f in fields(sim)}
    for item in args.model:
        key, _, value = item.partition("=")
        if key not in kinds:
            sys.exit(f"bench_scale: unknown model constant {key!r}; known: {', '.join(kinds)}")
        cast = kinds[key]
        sim = replace(
            sim,
            **{
                key: value.lower() in ("1", "true", "yes")
                if cast is bool
                else cast(float(value))
                if cast is int
                else cast(value)
            },
        )

    if args.autoscale:
        with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
            result = autoscale_run(args, sim, Path(tmp))
        print_autoscale(result, sim)
        cfg = result.pop("config")
        write_json(
            "bench_scale_autoscale_quick" if args.quick else "bench_scale_autoscale",
            {
                "config": args.config,
                "overrides": args.set,
                "quick": args.quick,
                "time_scale": sim.time_scale,
                "model": asdict(sim),
                "autoscale": cfg.rl.rollout.autoscale.model_dump(),
                "reached_fraction": REACHED,
                "same_fraction": SAME,
                "rolling_steps": ROLLING,
                **result,
            },
            args.out,
        )
        return
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        rows, meta = sweep(args, sim, Path(tmp))
    cfg = meta["config"]
    from benchmarks.sim_roles import sim_config

    _, sized = sim_config(args.config, args.set, sim, "unused", "unused")
    stages = model_summary(sized, cfg)
    mark(rows, sized, cfg)

    s = cfg.rl
    print(
        f"\nmodelled stage times for one step ({s.prompts_per_step} prompts x {s.group_size} samples, rollout TP "
        f"{sized.rollout_tp}, "
        f"learner {sized.learner_gpus} GPUs), simulated seconds"
    )
    print_table(stages, ["stage", "seconds"])
    print(
        "\nthroughput and utilisation by max_staleness and rollout workers (simulated seconds, steps "
        f"2..{meta['steps']}; "
        f"time scale {sim.time_scale})"
    )
    print_table(
        rows,
        [
            "max_staleness",
            "workers",
            "samples_per_s",
            "groups_per_s",
            "speedup",
            "learner_util",
            "learner_ceiling",
            "rollout_util",
            "mean_staleness",
            "max_staleness_seen",
            "dropped_groups",
            "note",
        ],
    )
    print(
        "\nwhere the time goes (simulated seconds per step; gen/reward/train/sync as the controller measures them, "
        "learner_s = modelled learner busy time)"
    )
    print_table(
        rows,
        [
            "max_staleness",
            "workers",
            "s_per_step",
            "gen_model_s",
            "gen_s",
            "reward_s",
            "learner_s",
            "train_s",
            "sync_s",
            "ctl_real_ms",
            "real_s_per_step",
            "run_real_s",
            "peak_ram_GB",
            "pss_per_worker_MB",
        ],
    )
    write_json(
        "bench_scale_quick" if args.quick else "bench_scale",
        {
            "config": args.config,
            "overrides": args.set,
            "quick": args.quick,
            "steps": meta["steps"],
            "time_scale": sim.time_scale,
            "model": asdict(sized),
            "stages": stages,
            "runs": rows,
            "learner_bound_util": LEARNER_BOUND,
            "knee_fraction_of_best": KNEE,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
