"""Integration: `poserft submit` against a real local Ray head (`ray start --head`).

The head runs in its own process group with its own temp dir and ports, so it is torn down
without touching any other Ray cluster on the machine. The job is `poserft train` on the tiny
SFT checkpoint with the HF engine for two steps; the test waits for it through `poserft
status`, reads its output through `poserft logs` and checks the run directory it wrote.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml


RAY_CLI = Path(sys.executable).parent / "ray"  # the venv's script: CI does not put .venv/bin on PATH
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poserft(*args, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "poserft", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture
def ray_head():
    tmp = tempfile.mkdtemp(prefix="rh_", dir="/tmp")  # short: Ray's unix sockets live under it
    gcs, dash, agent = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{RAY_CLI.parent}{os.pathsep}{env.get('PATH', '')}"  # as on a node with the env activated: jobs run `python`
    proc = subprocess.Popen(
        [str(RAY_CLI), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
         "--num-cpus=4", "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={tmp}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start --head exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        if _poserft("status", "--address", address, timeout=60).returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the Ray head's job server did not come up within 120 s")
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_submit_status_logs(ray_head, tiny_data, tiny_sft, tmp_path):
    cfg = yaml.safe_load((REPO / "configs" / "tiny-cpu.yaml").read_text())
    cfg["data"]["dir"] = str(tiny_data)
    cfg["rl"].update(steps=2, prompts_per_step=4, group_size=2, checkpoint_every=1)
    cfg["rl"]["sampling"]["max_tokens"] = 16
    cfg["rl"]["rollout"].update(engine="hf", num_workers=1)
    cfg["rewards"]["retriever_dir"] = None
    cfg["rl"]["tasks"] = ["image2pose"]
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"

    sub = _poserft("submit", "--address", ray_head, "--config", str(config), "--init", str(tiny_sft), "--run-dir", str(run_dir), timeout=420)
    assert sub.returncode == 0, sub.stderr
    job = re.search(r"submitted (\S+);", sub.stdout).group(1)

    deadline, status = time.time() + 900, ""
    while time.time() < deadline:
        st = _poserft("status", job, "--address", ray_head)
        assert st.returncode == 0, st.stderr
        status = st.stdout.split()[1]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(3)
    logs = _poserft("logs", job, "--address", ray_head)
    assert logs.returncode == 0, logs.stderr
    assert status == "SUCCEEDED", f"job ended {status}:\n{logs.stdout[-3000:]}"
    assert "step 2/2" in logs.stdout  # the controller's per-step line reached the job log
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2]
    assert (run_dir / "checkpoints" / "latest" / "poserft.json").is_file()

    listed = _poserft("status", "--address", ray_head)
    assert job in listed.stdout
