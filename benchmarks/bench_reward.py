"""Reward throughput: each reward component alone, then the whole scorer in-process vs a Ray pool vs gRPC.

    python benchmarks/bench_reward.py [--quick] [--out FILE]

What is measured (CPU only, synthetic rows from a fixed seed):

1. Components, in-process: rewards/s of `format_reward`, `text_similarity` (MiniLM),
   `semantic_reward` (an untrained retriever: same cost as a trained one) and `joint_reward`
   (built-in FK), each on a batch of N rows, N = 1, 32, 256 (--quick) or 1, 4, 16, 64, 256, 1024.
2. The whole scorer (`RewardScorer.score`: all four components, tasks mixed 1:1:1 over
   text2pose / image2pose / pose2text, so every row gets format + text_similarity and one of
   semantic or joint) on the same N, four ways:
   - in-process: `scorer.score(table)` in this process;
   - pool 1w / pool 2w: a Ray `RewardPool` with 1 or 2 workers (1 CPU each) on a local Ray
     cluster; the batch is split evenly over the workers (chunk = ceil(N / workers)), so the
     2-worker pool gets two chunks to run in parallel;
   - gRPC: a `RewardServer` on 127.0.0.1 (in this process, its own threads) called by a real
     `RewardClient` over a TCP channel with a bearer token, rows as dicts in and out.
   The figure is rows/s (one row = one fully scored rollout).

`TextEmbedder` caches embeddings, so timing the same texts twice would time dict lookups. Every
timed call therefore gets fresh pose2text responses (a counter in the sentence); references
(captions, the pose template) come from a small fixed set and are cached after the warm-up,
as in training, where references repeat and responses do not. Successive calls start at row
0, 1, 2, 0, ... so that batch size 1 also averages over the three tasks (a pose2text row costs
a MiniLM encoding, a text2pose row a retriever pass, an image2pose row an FK).

How to read the ratios (all are throughput ratios, >1 = faster than the denominator):
- pool1w/inproc: the cost of Ray (Arrow serialisation, scheduling, object store) plus the fact
  that a Ray worker with num_cpus=1 runs torch with 1 thread where this process uses all cores.
  Well below 1 at N = 1 (the per-call overhead dominates), closer to 1 for large N.
- grpc/inproc: the cost of protobuf conversion both ways plus a localhost round trip.
- pool2w/pool1w: parallel speed-up of the pool; at most ~2 (two 1-CPU workers), reached only
  for large N with cores to spare. On a 2-core machine shared with other jobs, 2 workers cannot
  beat 1 by much: the second worker only gets the core the first one leaves idle, and at N = 1
  there is nothing to split. Read it as "does the pool scale", not as a production number.
- pool2w/inproc: whether a 2-worker pool beats scoring in the driver at all; with 2 cores it
  cannot (in-process torch already uses both), so expect < 1 here.
Medians over repeated calls (benchmarks.common.timeit), after one warm-up call.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import print_table, timeit, write_json  # noqa: E402
from poserft.common.body import BodyModel  # noqa: E402
from poserft.common.rotations import axis_angle_to_rot6d  # noqa: E402
from poserft.common.schemas import POSE_RESPONSE  # noqa: E402
from poserft.reward_service.retriever import Retriever, RetrieverConfig  # noqa: E402
from poserft.reward_service.rewards import (  # noqa: E402
    REQUIRED_COLUMNS,
    RewardScorer,
    RewardSettings,
    TextEmbedder,
    format_reward,
    joint_reward,
    semantic_reward,
    text_similarity,
)

SEED = 0
TASK_CYCLE = ("text2pose", "image2pose", "pose2text")
SIDES = ("left", "right")
PARTS = ("knee", "elbow", "hip", "shoulder", "wrist", "ankle")
STATES = ("bent", "straight", "raised", "lowered", "turned outwards", "slightly bent")


def make_rows(n: int, seed: int = SEED) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """n scorer rows (tasks cycling text2pose / image2pose / pose2text, all valid), plus every
    row's 6D pose (N, 144) and target joints (N, 24, 3) as tensors for the component benchmark."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    body = BodyModel()
    # random axis-angle: uniform direction, angle up to 0.6 rad per joint (a plausible body)
    axis = torch.nn.functional.normalize(torch.randn(n, 24, 3, generator=g, dtype=torch.float64), dim=-1)
    aa = axis * torch.rand(n, 24, 1, generator=g, dtype=torch.float64) * 0.6
    six = axis_angle_to_rot6d(aa).reshape(n, 144).float()
    # targets: FK of a nearby pose, so the joint reward lands mid-range rather than at 1
    with torch.no_grad():
        target = body.forward_kinematics(aa + 0.15 * torch.randn(n, 24, 3, generator=g, dtype=torch.float64)).float()
    rows = []
    for i in range(n):
        task = TASK_CYCLE[i % 3]
        caption = f"the {rng.choice(SIDES)} {rng.choice(PARTS)} is {rng.choice(STATES)}."
        pose_task = task != "pose2text"
        rows.append(
            {
                "id": f"r{i}",
                "task": task,
                "text": POSE_RESPONSE if pose_task else caption.capitalize(),
                "has_pose": pose_task,
                "pose": six[i].tolist() if pose_task else None,
                "caption": caption,
                "reference_text": POSE_RESPONSE if pose_task else caption,
                "target_joints": target[i].reshape(72).tolist(),
            }
        )
    return rows, six, target


class Feeder:
    """Batches of n rows for the timed calls. Call k starts at row k % 3, so every batch size,
    including 1, sees all three tasks in turn, and its pose2text responses are sentences never
    seen before (a counter in them): the embedding cache answers for references only."""

    def __init__(self, rows: list[dict], sizes: list[int]):
        self.counter = itertools.count()
        self.rows = rows
        self.tables = {(n, off): pa.Table.from_pylist(rows[off : off + n]) for n in sizes for off in range(3)}
        self.dicts = {key: t.to_pylist() for key, t in self.tables.items()}

    def _next(self, n: int) -> tuple[int, list[str]]:
        k = next(self.counter)
        off = k % 3
        texts = [
            f"{r['text'][:-1]}, take {k}." if r["task"] == "pose2text" else r["text"] for r in self.rows[off : off + n]
        ]
        return off, texts

    def table(self, n: int) -> pa.Table:
        off, texts = self._next(n)
        t = self.tables[n, off]
        return t.set_column(t.schema.get_field_index("text"), "text", pa.array(texts, pa.string()))

    def dict_rows(self, n: int) -> list[dict]:
        off, texts = self._next(n)
        rows = self.dicts[n, off]
        for row, text in zip(rows, texts):
            row["text"] = text
        return rows

    def fresh_texts(self, n: int) -> list[str]:
        """n never-seen sentences (for the text_similarity component)."""
        k = next(self.counter)
        return [f"{r['caption'][:-1]}, take {k}." for r in self.rows[:n]]


def _torch_threads() -> int:
    return torch.get_num_threads()


def bench_components(scorer: RewardScorer, rows, six, target, sizes: list[int], min_s: float) -> list[dict]:
    fresh = Feeder(rows, [])
    out = []
    for n in sizes:
        texts = [r["text"] for r in rows[:n]]
        tasks = [r["task"] for r in rows[:n]]
        captions = [r["caption"] for r in rows[:n]]
        pose, pose64, tgt = six[:n], six[:n].double(), target[:n].double()
        fns = {
            "format": lambda: format_reward(texts, tasks),
            "text_similarity": lambda: text_similarity(scorer.embedder, fresh.fresh_texts(n), captions),
            "semantic": lambda: semantic_reward(scorer.retriever, captions, pose),
            "joint": lambda: joint_reward(scorer.body, pose64, tgt, scorer.settings.joint_tau_m),
        }
        row = {"batch": n}
        for name, fn in fns.items():
            row[f"{name} rewards/s"] = n / timeit(fn, min_seconds=min_s)
        out.append(row)
    return out


def bench_paths(scorer: RewardScorer, rows: list[dict], sizes: list[int], min_s: float, token: str):
    """rows/s of the whole scorer per path and batch size -> ({path: {n: rows/s}}, extra info)."""
    import ray

    from poserft.reward_service import grpc_server as gs
    from poserft.reward_service.pool import RewardPool

    feed = Feeder(rows, sizes)
    results: dict[str, dict[int, float]] = {"in-process": {}, "pool 1w": {}, "pool 2w": {}, "gRPC": {}}
    check_n = max(sizes)
    check = feed.tables[check_n, 0]
    reference = scorer.score(check)["reward_total"].to_numpy(zero_copy_only=False)
    max_diff, pool_stats, startup = {}, {}, {}

    for n in sizes:
        results["in-process"][n] = n / timeit(lambda: scorer.score(feed.table(n)), min_seconds=min_s)

    server, port = gs.serve("127.0.0.1", 0, scorer, token=token)
    try:
        with gs.RewardClient(f"127.0.0.1:{port}", token=token, timeout=300) as client:
            got = np.array([r["reward_total"] for r in client.score(feed.dicts[check_n, 0])], np.float64)
            max_diff["gRPC"] = float(np.max(np.abs(got - reference)))
            for n in sizes:
                results["gRPC"][n] = n / timeit(lambda: client.score(feed.dict_rows(n)), min_seconds=min_s)
    finally:
        server.stop(None)

    worker_threads = ray.get(ray.remote(num_cpus=1)(_torch_threads).remote())
    for workers in (1, 2):
        key = f"pool {workers}w"
        t0 = time.perf_counter()
        pool = RewardPool(scorer.settings, num_workers=workers, batch_size=math.ceil(check_n / workers), num_cpus=1)
        startup[key] = time.perf_counter() - t0
        try:
            got = pool.score(check)["reward_total"].to_numpy(zero_copy_only=False)
            max_diff[key] = float(np.max(np.abs(got - reference)))
            for n in sizes:
                pool.batch_size = math.ceil(n / workers)  # split the batch evenly over the workers
                results[key][n] = n / timeit(lambda: pool.score(feed.table(n)), min_seconds=min_s)
            pool_stats[key] = dict(vars(pool.stats))
        finally:
            pool.shutdown()
    info = {
        "ray_worker_torch_threads": worker_threads,
        "checked_batch": check_n,
        "max_abs_diff_reward_total_vs_in_process": max_diff,
        "pool_startup_s": startup,
        "pool_stats": pool_stats,
    }
    return results, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch sizes 1, 32, 256 and shorter timing")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_reward.json)")
    args = ap.parse_args()
    sizes = [1, 32, 256] if args.quick else [1, 4, 16, 64, 256, 1024]
    min_s = 0.3 if args.quick else 1.5
    t_start = time.perf_counter()

    import ray

    rows, six, target = make_rows(max(sizes) + 2)  # + 2: batches start at row 0, 1 or 2
    assert set(REQUIRED_COLUMNS) <= set(rows[0])
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(SEED)
        Retriever(RetrieverConfig()).save(tmp)  # untrained: same cost as a trained one
        settings = RewardSettings(retriever_dir=tmp)
        scorer = RewardScorer(settings, text_embedder=TextEmbedder())
        threads = torch.get_num_threads()

        comp = bench_components(scorer, rows, six, target, sizes, min_s)
        comp_cols = ["batch"] + [f"{c} rewards/s" for c in ("format", "text_similarity", "semantic", "joint")]
        print(f"Reward components in-process (CPU, torch threads = {threads}; text_similarity on fresh responses)")
        print_table(comp, comp_cols)

        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            print("\nWhole scorer (mixed tasks): starting gRPC server and Ray pools ...", flush=True)
            paths, info = bench_paths(scorer, rows, sizes, min_s, token=secrets.token_hex(16))
        finally:
            ray.shutdown()

    whole = []
    for n in sizes:
        r = {"batch": n, **{f"{p} rows/s": paths[p][n] for p in paths}}
        r["pool1w/inproc"] = paths["pool 1w"][n] / paths["in-process"][n]
        r["pool2w/inproc"] = paths["pool 2w"][n] / paths["in-process"][n]
        r["gRPC/inproc"] = paths["gRPC"][n] / paths["in-process"][n]
        r["pool2w/pool1w"] = paths["pool 2w"][n] / paths["pool 1w"][n]
        whole.append(r)
    cols = (
        ["batch"] + [f"{p} rows/s" for p in paths] + ["pool1w/inproc", "pool2w/inproc", "gRPC/inproc", "pool2w/pool1w"]
    )
    print(
        f"\nWhole scorer, rows/s (in-process torch threads = {threads}, Ray worker torch threads = "
        f"{info['ray_worker_torch_threads']}, pool chunk = ceil(batch / workers))"
    )
    print_table(whole, cols)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in info["max_abs_diff_reward_total_vs_in_process"].items())
    print(f"\nsame rewards on all paths (batch {info['checked_batch']}, max |diff reward_total|): {diffs}")
    cores = os.cpu_count() or 1
    wt = info["ray_worker_torch_threads"]
    print("ratios are throughput ratios (>1 = faster than the denominator).")
    if cores <= 2:
        last = whole[-1]
        print(
            f"NOTE: this machine has {cores} cores, shared with other jobs: 2 reward workers cannot beat 1 by much "
            f"here (two 1-thread workers can at best double one, and cannot beat in-process scoring, which "
            f"already uses both cores). Measured at batch {last['batch']}: pool2w/pool1w = "
            f"{last['pool2w/pool1w']:.2f}, "
            f"pool2w/inproc = {last['pool2w/inproc']:.2f}."
        )
    print(
        f"pool1w/inproc also compares a Ray worker's {wt} torch thread(s) with this process's {threads}; "
        "pool startup (models loaded once per worker, not timed above): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in info["pool_startup_s"].items())
    )
    elapsed = time.perf_counter() - t_start
    print(f"total runtime {elapsed:.0f} s")
    write_json(
        "bench_reward",
        {
            "quick": args.quick,
            "batch_sizes": sizes,
            "cpu_count": cores,
            "torch_threads_in_process": threads,
            "components": comp,
            "whole_scorer": whole,
            **info,
            "runtime_s": elapsed,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
