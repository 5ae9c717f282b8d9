"""Where one step of each poserft role spends its time, at equal cores (one thread per role).

The setting is bench_peer.py's: GRPO on text2pose, poserft's format reward only, the same
checkpoint and the prompts the controller draws for step 1 (P prompts x G). Each role runs in
this process as the Ray actor would run it (the actor classes wrap these cores), one after the
other, each with `--threads` torch threads (1, as tiny-cpu.yaml gives each actor):

- rollout: `RolloutWorkerCore.generate` (vLLM on CPU, then the pose-head prefill over every
  response, decoding, the Arrow rows), after one warm-up call;
- reward: `RewardScorer.score` on the joined batch (what a reward pool worker runs);
- learner: `LearnerCore.train_step` (Arrow to rows, advantages, micro-batches, the update,
  `publish` = state dict + `ray.put` into a local one-CPU Ray), after one warm-up step;
- sync: `RolloutWorkerCore.update_weights` with the published state (vLLM's in-place reload
  from a /dev/shm file, plus the worker's own policy copy).

Each call runs under cProfile; the table groups its time into named parts (cumulative time of
the functions listed in PARTS; "other" is the rest) and the JSON also keeps the top functions by
own time. cProfile adds its own per-call overhead, so shares matter more than absolute seconds;
`wall_s` is a second, unprofiled run of the same call.

    python benchmarks/profile_roles.py [--config F] [--ckpt DIR] [--preset tiny|base] [--threads 1]
                                       [--set KEY=VALUE] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.bench_peer import checkpoint, poserft_config  # noqa: E402
from benchmarks.common import print_table, write_json  # noqa: E402

# role -> [(part, [(file substring, function name), ...], nested)]: a part's time is the largest
# cumulative time among its functions; a nested part ("  " prefix) lies inside the top-level part
# above it, and "other" is the role's time outside every top-level part
PARTS = {
    "rollout": [
        ("encode prompts", [("model/policy.py", "encode_prompt")], False),
        ("prompt embeddings", [("model/generation.py", "prompt_embeddings")], False),
        ("vLLM generate", [("rollout_workers/engine.py", "generate")], False),
        ("poses + rows (_with_poses)", [("rollout_workers/worker.py", "_with_poses")], False),
        ("pose-head prefill", [("model/generation.py", "pose_from_response")], True),
        ("decode text", [("model/generation.py", "decode_response")], True),
    ],
    "reward": [
        ("format reward", [("reward_service/rewards.py", "format_reward")], False),
        ("column reads", [("reward_service/rewards.py", "_vector_column")], False),
    ],
    "learner": [
        ("prepare (rows, advantages, micro-batches)", [("learner/learner.py", "_prepare")], False),
        ("old log-probs", [("learner/learner.py", "_old_logprobs")], False),
        ("update", [("learner/learner.py", "_update")], False),
        ("build inputs", [("model/policy.py", "build_inputs")], True),
        ("forward", [("model/policy.py", "forward")], True),
        ("loss", [("hygrpo", "hygrpo_loss")], True),
        ("backward", [("torch/_tensor.py", "backward")], True),
        ("grad clip", [("torch/nn/utils/clip_grad.py", "clip_grad_norm_")], True),
        ("optimizer", [("torch/optim/optimizer.py", "wrapper")], True),
        ("publish (state dict + ray.put)", [("learner/learner.py", "publish")], False),
    ],
    "sync": [
        ("vLLM reload (file + collective_rpc)", [("rollout_workers/engine.py", "load_lm_weights")], False),
        ("worker policy copy", [("torch/nn/modules/module.py", "load_state_dict")], False),
    ],
}


def profiled(fn):
    """(result, seconds, pstats.Stats) of one call under cProfile."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        out = fn()
    finally:
        prof.disable()
    return out, time.perf_counter() - t0, pstats.Stats(prof)


def cumulative(stats: pstats.Stats, where: str, name: str) -> float:
    """Largest cumulative time of a function matching (file substring, name); recursion-safe."""
    best = 0.0
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if func == name and where in file:
            best = max(best, ct)
    return best


def top_functions(stats: pstats.Stats, n: int) -> list[dict]:
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [
        {"function": f"{Path(file).name}:{line}({func})", "calls": nc, "own_s": tt, "cum_s": ct}
        for (file, line, func), (_cc, nc, tt, ct, _callers) in rows
    ]


def breakdown(role: str, total: float, stats: pstats.Stats) -> list[dict]:
    rows, outside = [], total
    for part, funcs, nested in PARTS[role]:
        sec = max(cumulative(stats, where, name) for where, name in funcs)
        rows.append({"role": role, "part": ("  " if nested else "") + part, "s": sec, "share": sec / total})
        if not nested:
            outside -= sec
    rows.append({"role": role, "part": "other", "s": max(0.0, outside), "share": max(0.0, outside) / total})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--preset", default=None, help="fresh init of this preset (tiny, base) instead of the demo SFT")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every role (1 = tiny-cpu.yaml's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--top", type=int, default=10, help="functions by own time kept per role in the JSON")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import pyarrow as pa
    import ray
    import torch

    from poserft.cluster.controller import TASK_JOIN, Controller
    from poserft.learner.learner import LearnerCore
    from poserft.reward_service.rewards import RewardScorer, RewardSettings
    from poserft.rollout_workers.engine import engine_kwargs
    from poserft.rollout_workers.worker import RolloutWorkerCore

    torch.set_num_threads(args.threads)
    overrides = [*args.set, *([f"model.preset={args.preset}"] if args.preset else [])]
    with tempfile.TemporaryDirectory(prefix="profile_roles_") as tmp:
        tmp = Path(tmp)
        cfg = poserft_config(args.config, 3, "vllm", tmp / "run", overrides)
        ckpt, note = checkpoint(args.ckpt, cfg.data.dir, cfg.model.preset, tmp)
        s = cfg.rl
        stub = SimpleNamespace(cfg=cfg, s=s)
        Controller._load_tasks(stub)
        p = s.prompts_per_step
        steps = [[stub.tasks[i] for i in stub.order[k * p : (k + 1) * p]] for k in range(3)]
        print(f"checkpoint: {note}; {p} prompts x G={s.group_size}, max {s.sampling.max_tokens} tokens", flush=True)

        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            worker = RolloutWorkerCore(
                ckpt, "profile-0", "vllm", s.sampling.model_dump(), engine_kwargs(s.rollout), args.threads
            )
            scorer = RewardScorer(RewardSettings.from_config(cfg))
            learner = LearnerCore(ckpt, s, args.threads, model=cfg.model)

            def rollout(k: int) -> pa.Table:
                tasks = pa.Table.from_pylist(steps[k])
                return worker.generate(tasks, s.group_size, worker.version, s.seed + k)

            def joined(rollout_table: pa.Table) -> pa.Table:
                by_id = {r["id"]: r for step in steps for r in step}
                out = rollout_table
                for col in TASK_JOIN:
                    out = out.append_column(col, pa.array([by_id[i][col] for i in out["task_id"].to_pylist()]))
                return out

            # warm-up: one whole step (vLLM's first batch, the learner's first optimizer step)
            warm = scorer.score(joined(rollout(0)))
            learner.train_step(warm)
            worker.update_weights(learner.version, ray.get(learner.weights_ref))

            results, tops, walls = [], {}, {}
            gen, total, stats = profiled(lambda: rollout(1))
            results += breakdown("rollout", total, stats)
            tops["rollout"] = top_functions(stats, args.top)
            batch = joined(gen)
            scored, total_r, stats = profiled(lambda: scorer.score(batch))
            results += breakdown("reward", total_r, stats)
            tops["reward"] = top_functions(stats, args.top)
            metrics, total_l, stats = profiled(lambda: learner.train_step(scored))
            results += breakdown("learner", total_l, stats)
            tops["learner"] = top_functions(stats, args.top)
            state = ray.get(learner.weights_ref)
            _, total_s, stats = profiled(lambda: worker.update_weights(learner.version, state))
            results += breakdown("sync", total_s, stats)
            tops["sync"] = top_functions(stats, args.top)
            totals = {"rollout": total, "reward": total_r, "learner": total_l, "sync": total_s}

            # the same calls without the profiler (step 2's prompts, the next versions)
            t0 = time.perf_counter()
            gen2 = rollout(2)
            walls["rollout"] = time.perf_counter() - t0
            batch2 = joined(gen2)
            t0 = time.perf_counter()
            scored2 = scorer.score(batch2)
            walls["reward"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            learner.train_step(scored2)
            walls["learner"] = time.perf_counter() - t0
            state = ray.get(learner.weights_ref)
            t0 = time.perf_counter()
            worker.update_weights(learner.version, state)
            walls["sync"] = time.perf_counter() - t0
        finally:
            ray.shutdown()

    samples = gen.num_rows
    tokens = sum(len(t) for t in gen["response_tokens"].to_pylist())
    summary = [
        {
            "role": role,
            "profiled_s": totals[role],
            "wall_s": walls[role],
            "ms_per_sample": 1000 * walls[role] / samples,
        }
        for role in totals
    ]
    print(f"\none step, {samples} samples ({tokens} response tokens), {args.threads} torch thread(s) per role")
    print_table(summary, ["role", "profiled_s", "wall_s", "ms_per_sample"])
    print("\nwhere each role's (profiled) time goes")
    print_table(results, ["role", "part", "s", "share"])
    write_json(
        "profile_roles",
        {
            "config": args.config,
            "overrides": overrides,
            "checkpoint": note,
            "threads_per_role": args.threads,
            "prompts_per_step": s.prompts_per_step,
            "group_size": s.group_size,
            "max_tokens": s.sampling.max_tokens,
            "samples": samples,
            "response_tokens": tokens,
            "learner_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "summary": summary,
            "parts": results,
            "top_functions": tops,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
