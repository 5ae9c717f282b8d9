"""`poserft serve` under load: requests/s and p50/p99 latency at concurrency 1, 8 and 32.

Two servers, each the real `poserft serve` CLI in its own process (own local Ray, HF backend,
one replica): "batched" (`--max-batch 32`: concurrent requests share one engine call through
`@serve.batch`) and the naive baseline "per-request" (`--max-batch 1`: one HF `generate` per
request, everything else identical). Clients are threads, each sending text2pose requests back to
back over HTTP; latency is per request, requests/s is completed requests over the level's wall time.

    python benchmarks/bench_serve.py --ckpt RUN/policy [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json  # noqa: E402

TOKEN = "bench-token"
TEXTS = [
    "a person squatting with arms forward",
    "The person is kneeling with both arms raised.",
    "someone stands with the left leg lifted",
    "the body leans forward, hands on the knees",
    "a person sitting on the ground with legs crossed",
    "both arms stretched out to the sides",
    "the right arm is raised above the head",
    "a person lunging forward on the left leg",
]
SERVERS = {"batched": 32, "per-request": 1}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: str, max_batch: int, num_cpus: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "POSERFT_SERVE_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own
    argv = [
        sys.executable,
        "-m",
        "poserft",
        "serve",
        "--ckpt",
        ckpt,
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
    ]
    proc = subprocess.Popen(
        [*argv, "--num-cpus", str(num_cpus)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"poserft serve exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("poserft serve did not answer /healthz within 300 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_request(url: str, text: str) -> float:
    body = json.dumps({"text": text}).encode()
    req = urllib.request.Request(url + "/v1/text2pose", data=body, headers={"Authorization": f"Bearer {TOKEN}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        json.loads(r.read())
    return time.perf_counter() - t


def load_level(url: str, concurrency: int, per_client: int) -> dict:
    def client(c: int) -> list[float]:
        return [one_request(url, TEXTS[(c + k) % len(TEXTS)]) for k in range(per_client)]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [lat for lats in pool.map(client, range(concurrency)) for lat in lats]
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "req_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="policy checkpoint folder")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--requests", type=int, default=64, help="requests per level (at least 2 per client)")
    ap.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved for the replica")
    ap.add_argument("--quick", action="store_true", help="32 requests per level")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    total = 32 if args.quick else args.requests
    rows = []
    for name, max_batch in SERVERS.items():
        proc, url = start_server(args.ckpt, max_batch, args.num_cpus)
        try:
            one_request(url, TEXTS[0])  # warm-up
            for n in levels:
                row = {"server": name, "max_batch": max_batch, **load_level(url, n, max(2, total // n))}
                rows.append(row)
                rate, p50, p99 = row["req_per_s"], row["p50_ms"], row["p99_ms"]
                print(f"{name:12s} c={n:3d}: {rate:.2f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
        finally:
            stop_server(proc)
    print()
    print_table(rows, ["server", "concurrency", "requests", "req_per_s", "p50_ms", "p99_ms"])
    ratios = {}
    for n in levels:
        b = next(r for r in rows if r["server"] == "batched" and r["concurrency"] == n)
        p = next(r for r in rows if r["server"] == "per-request" and r["concurrency"] == n)
        ratios[str(n)] = b["req_per_s"] / p["req_per_s"]
    print("\nbatched / per-request throughput: " + ", ".join(f"c={n}: {r:.2f}x" for n, r in ratios.items()))
    write_json("bench_serve", {"ckpt": args.ckpt, "rows": rows, "throughput_ratio": ratios}, args.out)


if __name__ == "__main__":
    main()
