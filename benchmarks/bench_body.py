"""FK throughput (poses/s) for both body backends and captioner throughput (captions/s).

python benchmarks/bench_body.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, timeit, write_json  # noqa: E402
from poserft.common.body import BodyModel  # noqa: E402
from poserft.data.captioner import Captioner  # noqa: E402
from poserft.data.pose_prior import PosePrior  # noqa: E402
from tests.synthetic_smpl import write_synthetic_smpl  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes, shorter timing")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench_body.json)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sizes = [1, 16, 256, 4096] if args.quick else [1, 4, 16, 64, 256, 1024, 4096]
    min_s = 0.2 if args.quick else 1.0

    poses = torch.from_numpy(PosePrior(0).sample(max(sizes))).float()
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_smpl(Path(tmp))
        backends = {"builtin": BodyModel(), "smplx (synthetic SMPL file)": BodyModel(smpl_dir=tmp)}
        rows = []
        for n in sizes:
            row = {"batch": n}
            for name, body in backends.items():
                with torch.no_grad():
                    sec = timeit(lambda: body.forward_kinematics(poses[:n]), min_seconds=min_s)
                row[f"{name} poses/s"] = n / sec
            rows.append(row)
    cols = ["batch"] + [f"{b} poses/s" for b in backends]
    print(f"Forward kinematics (float32, CPU, torch threads = {torch.get_num_threads()})")
    print_table(rows, cols)
    for r in rows:
        r["builtin/smplx ratio"] = r[cols[1]] / r[cols[2]]

    joints = BodyModel().joints_from_axis_angle(poses[:2048].double().numpy())
    cap = Captioner(0)
    n_cap = 512 if args.quick else 2048
    sec = timeit(lambda: cap.caption(joints[:n_cap], ids=list(range(n_cap))), min_seconds=min_s, min_repeats=2)
    cap_row = {"captions": n_cap, "captions/s": n_cap / sec}
    print("\nCaptioner")
    print_table([cap_row], ["captions", "captions/s"])
    write_json("bench_body", {"fk": rows, "captioner": cap_row, "quick": args.quick}, args.out)


if __name__ == "__main__":
    main()
