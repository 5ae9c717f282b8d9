"""The whole actor-learner pipeline on real Ray: throughput by `max_staleness`, the per-stage
time breakdown, and weight-sync seconds against model size.

Part 1 runs `poserft train`'s controller (real vLLM rollout workers, the reward pool, the
learner) on the same config and SFT checkpoint for max_staleness 0, 1 and 2, and reads each
run's `metrics.jsonl`: steps/s and samples/s over the steps after the first (which carries the
engine warm-up), and the mean seconds per step of each stage (generate, reward, learner, sync).
With staleness >= 1 generation overlaps training, so the stage times add up to more than the
wall time per step; that overlap is the point of the setting.

Part 2 measures one weight sync (learner `publish` -> `ray.put`, rollout worker
`update_weights` -> vLLM in-place reload + pose head/encoder) for the tiny and the base preset.

    python benchmarks/bench_pipeline.py [--quick] [--config configs/tiny-cpu.yaml] [--sft runs/demo/sft/policy]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import print_table, write_json  # noqa: E402

STAGES = ("gen_s", "reward_s", "train_s", "sync_s")


def summarise_run(run_dir: Path) -> dict:
    """Throughput and stage means from a finished run's metrics.jsonl (first step excluded)."""
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    if len(lines) < 3:
        raise RuntimeError(
            f"{run_dir}: only {len(lines)} steps recorded; need at least 3 to time steps after the first"
        )
    steady = lines[1:]
    wall = steady[-1]["time"] - lines[0]["time"]
    samples = steady[-1]["samples"] - lines[0]["samples"]  # the controller logs running totals
    tokens = steady[-1]["tokens"] - lines[0]["tokens"]
    out = {
        "steps": len(lines),
        "steps_per_s": len(steady) / wall,
        "samples_per_s": samples / wall,
        "tokens_per_s": tokens / wall,
        "s_per_step": wall / len(steady),
        "max_staleness_seen": max(ln["staleness"] for ln in lines),
        "dropped_stale_groups": lines[-1].get("dropped_stale_groups", 0),
    }
    for k in STAGES:
        out[k] = sum(ln[k] for ln in steady) / len(steady)
    return out


def pipeline_runs(
    cfg_path: str, sft: str, staleness: list[int], steps: int, workdir: Path, overrides: list[str]
) -> list[dict]:
    import ray

    from poserft.cluster.controller import run_training
    from poserft.common.config import load_config

    rows = []
    for k in staleness:
        run_dir = workdir / f"staleness_{k}"
        cfg = load_config(
            cfg_path,
            [
                *overrides,
                f"rl.max_staleness={k}",
                f"rl.steps={steps}",
                "rl.checkpoint_every=1000",
                f"run_dir={run_dir}",
                "rl.metrics_port=null",
            ],
        )
        print(f"\n== max_staleness {k}: {steps} steps ==", flush=True)
        t0 = time.time()
        run_training(cfg, sft, str(run_dir))
        row = {"max_staleness": k, **summarise_run(run_dir), "run_seconds": time.time() - t0}
        rows.append(row)
        ray.shutdown()  # a fresh cluster per setting, so one run's actors cannot slow the next
    return rows


def sync_times(data: str, presets: list[str], repeats: int, workdir: Path) -> list[dict]:
    import ray

    from poserft.common.config import RLConfig
    from poserft.learner.learner import LearnerCore
    from poserft.model.checkpoint import count_parameters, init_policy, save_policy
    from poserft.rollout_workers.worker import rollout_actor_class

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    try:
        for preset in presets:
            ckpt = workdir / f"init_{preset}"
            policy = init_policy(preset, data, seed=0)
            params = count_parameters(policy)["total"]
            save_policy(policy, ckpt)
            learner = ray.remote(LearnerCore).options(num_cpus=0.5).remote(str(ckpt), RLConfig(beta_c=0.0), 1)
            worker = (
                rollout_actor_class()
                .options(num_cpus=0.5)
                .remote(str(ckpt), "rollout-0", "vllm", {"max_tokens": 8, "seed": 0}, {"kv_cache_mb": 64}, 1)
            )
            ray.get(worker.get_version.remote())  # engine up
            nbytes = ray.get(learner.weight_bytes.remote())
            pub, upd = [], []
            for i in range(repeats):
                t = time.perf_counter()
                _, ref = ray.get(learner.publish.remote())
                t_pub = time.perf_counter() - t
                t = time.perf_counter()
                ray.get(worker.update_weights.remote(i + 1, ref))
                pub.append(t_pub)
                upd.append(time.perf_counter() - t)
            rows.append(
                {
                    "preset": preset,
                    "params_M": params / 1e6,
                    "weights_MB": nbytes / 2**20,
                    "publish_s": sorted(pub)[len(pub) // 2],
                    "update_s": sorted(upd)[len(upd) // 2],
                    "sync_s": sorted(p + u for p, u in zip(pub, upd))[len(pub) // 2],
                }
            )
            ray.kill(worker)
            ray.kill(learner)
    finally:
        ray.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 steps per staleness setting, sync over 2 repeats")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument(
        "--sft", default="runs/demo/sft/policy", help="SFT checkpoint to train from (`make demo` writes it)"
    )
    ap.add_argument("--data", default=None, help="dataset folder (default: data.dir of the config)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for the pipeline runs"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from poserft.common.config import load_config

    if not (Path(args.sft) / "poserft.json").is_file():
        sys.exit(f"bench_pipeline: {args.sft} is not a checkpoint; run `make demo` first or pass --sft")
    data = args.data or load_config(args.config).data.dir
    steps = args.steps or (6 if args.quick else 12)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        runs = pipeline_runs(args.config, args.sft, [0, 1, 2], steps, Path(tmp), args.set)
        syncs = sync_times(data, ["tiny", "base"], 2 if args.quick else 5, Path(tmp))
    base = runs[0]["samples_per_s"]
    for r in runs:
        r["speedup_vs_sync"] = r["samples_per_s"] / base
    print("\nthroughput by max_staleness (same config and checkpoint; steps after the first)")
    print_table(
        runs,
        [
            "max_staleness",
            "steps",
            "steps_per_s",
            "samples_per_s",
            "tokens_per_s",
            "speedup_vs_sync",
            "max_staleness_seen",
            "dropped_stale_groups",
        ],
    )
    print("\nmean seconds per step by stage (overlapping stages can sum to more than s_per_step)")
    print_table(runs, ["max_staleness", "s_per_step", *STAGES])
    print("\nweight sync against model size (learner publish + one rollout worker's vLLM reload)")
    print_table(syncs, ["preset", "params_M", "weights_MB", "publish_s", "update_s", "sync_s"])
    write_json(
        "bench_pipeline",
        {
            "config": args.config,
            "sft": args.sft,
            "steps": steps,
            "quick": args.quick,
            "overrides": args.set,
            "pipeline": runs,
            "weight_sync": syncs,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
