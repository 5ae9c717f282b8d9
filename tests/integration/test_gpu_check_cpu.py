"""benchmarks/gpu_check.py --cpu runs every step and passes, so the GPU check cannot rot."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_mode_passes(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--work-dir", str(tmp_path)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = res.stdout.split("check                       result")[1]
    for step in (
        "learner step",
        "hygrpo loss, no valid pose",
        "process group of one",
        "checkpoint round trip",
        "weight publish",
        "weight broadcast",
        "poserft plan, all configs",
    ):
        assert f"{step}" in table
    assert "FAIL" not in table and "10/10 passed on cpu" in res.stdout
