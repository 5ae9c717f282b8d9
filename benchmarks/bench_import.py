"""Importer throughput (rows/s) and peak memory (RSS) on generated fixtures in the real layouts.

- PoseScript/AMASS: 100,000 poses in 200 AMASS-style npz files (500 frames each), one human
  caption for every second pose, three automatic captions for every pose; imported with
  `--captions human` (half the poses go to the pose-only file) and `--captions all`.
- 3DPW: sequences of full-size 1080 x 1920 JPEG frames with two people each, imported at stride 1.

Each import runs in a fresh process, which reports its own peak RSS (VmHWM), so the figure is
the importer's and not the fixture writer's.

python benchmarks/bench_import.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_json  # noqa: E402

_CHILD = """
import json, sys, time
from poserft.data.importers import import_3dpw, import_posescript
kind, args = sys.argv[1], json.loads(sys.argv[2])
t = time.perf_counter()
card = import_posescript(**args) if kind == "posescript" else import_3dpw(**args)
seconds = time.perf_counter() - t
rows = sum(s["rows"] for s in card["splits"].values()) + card.get("pose_only", {}).get("rows", 0)
# VmHWM: the peak RSS of this process image (ru_maxrss would include the parent's at fork)
peak_mb = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) / 1024
print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss_mb": peak_mb}))
"""


def _run(kind: str, **kwargs) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, json.dumps({**kwargs, "progress": False})],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["rows_per_s"] = res["rows"] / res["seconds"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10,000 poses and 40 3DPW frames instead of 100,000 and 400")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_import.json)")
    args = ap.parse_args()
    from tests.import_fixtures import write_3dpw, write_posescript

    n_poses, frames = (10_000, 20) if args.quick else (100_000, 200)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        fx = write_posescript(tmp / "ps_src", n_poses=n_poses, frames_per_seq=500)
        print(f"PoseScript/AMASS fixture: {n_poses} poses in {time.perf_counter() - t:.0f} s")
        for captions in ("human", "all"):
            res = _run(
                "posescript",
                posescript_dir=str(fx["posescript"]),
                amass_dir=str(fx["amass"]),
                out=str(tmp / f"ps_{captions}"),
                captions=captions,
            )
            rows.append({"importer": f"posescript --captions {captions}", "inputs": f"{n_poses} poses", **res})
        t = time.perf_counter()
        sequences = {"train": ["seq_a_00"], "validation": ["seq_b_00"], "test": ["seq_c_00"]}
        write_3dpw(tmp / "pw_src", sequences, frames=frames, people=2, size=(1080, 1920))
        print(f"3DPW fixture: 3 x {frames} frames of 1080 x 1920 in {time.perf_counter() - t:.0f} s")
        res = _run("3dpw", root=str(tmp / "pw_src"), out=str(tmp / "pw"))
        rows.append({"importer": "3dpw --stride 1", "inputs": f"{3 * frames} frames x 2 people", **res})
    print()
    print_table(rows, ["importer", "inputs", "rows", "seconds", "rows_per_s", "peak_rss_mb"])
    write_json("bench_import", {"quick": args.quick, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
