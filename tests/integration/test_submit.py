"""Integration: `poserft submit` against a real local Ray head (`ray start --head`).

The head runs in its own process group with its own temp dir and ports, so it is torn down
without touching any other Ray cluster on the machine (ports picked free, never 6379/8265). The
job is `poserft train` on the tiny checkpoint with the HF engine for five steps, submitted from a
checkout-like folder whose config says `data/synth` (a folder Ray does not upload); the test
follows it through `poserft status` and `poserft logs --follow`, scales it through the same
dashboard address, and checks the run directory it wrote. A second job fails on purpose, for
`status`'s failure reason.
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


def _poserft(*args, timeout=120, cwd=REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "poserft", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def ray_head():
    tmp = tempfile.mkdtemp(prefix="rh_", dir="/tmp")  # short: Ray's unix sockets live under it
    gcs, dash, agent = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = (
        f"{RAY_CLI.parent}{os.pathsep}{env.get('PATH', '')}"  # as on a node with the env activated: jobs run `python`
    )
    proc = subprocess.Popen(
        [
            str(RAY_CLI),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",
            "--num-cpus=4",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={tmp}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
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


STEPS = 100_000  # the test stops the job once the scale has taken effect


def _job_config(project: Path, steps: int) -> Path:
    """The demo config with a tiny run, its data at the relative `data/synth` of a project folder."""
    cfg = yaml.safe_load((REPO / "configs" / "tiny-cpu.yaml").read_text())
    cfg["data"]["dir"] = "data/synth"
    cfg["rl"].update(steps=steps, prompts_per_step=4, group_size=2, checkpoint_every=10)
    cfg["rl"]["sampling"]["max_tokens"] = 16
    cfg["rl"]["rollout"].update(engine="hf", num_workers=1)
    cfg["rewards"]["retriever_dir"] = None
    cfg["rl"]["tasks"] = ["image2pose"]
    config = project / "configs" / "job.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg))
    return config


def _wait(address: str, job: str, until, timeout_s: float = 900) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        st = _poserft("status", job, "--address", address)
        assert st.returncode == 0, st.stderr
        if until(st.stdout):
            return st.stdout
        time.sleep(2)
    pytest.fail(f"job {job} did not reach the expected state in {timeout_s:.0f} s: {st.stdout}")


def _ended(out: str) -> bool:
    return out.split()[1] in ("SUCCEEDED", "FAILED", "STOPPED")


@pytest.fixture
def project(tmp_path, tiny_data, tiny_ckpt):
    """A checkout-like folder: data/ and runs/ hold the inputs, and Ray does not upload either."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "synth").symlink_to(tiny_data)
    (proj / "runs" / "sft").mkdir(parents=True)
    (proj / "runs" / "sft" / "policy").symlink_to(tiny_ckpt)  # any complete checkpoint: no SFT needed to test the paths
    return proj


def test_submit_relative_paths_status_follow_scale(ray_head, project):
    """The demo config's relative data/synth (in data/, excluded from the upload) used to fail the
    job with `dataset folder data/synth does not exist`; submit now passes the path the job can
    use and warns that it is not uploaded. `scale` takes the same dashboard address while the job
    trains, `status` shows the step, `stop` ends it and `logs --follow` streams to the end."""
    _job_config(project, steps=STEPS)
    sub = _poserft("submit", "--address", ray_head, "--config", "configs/job.yaml", "--init", "runs/sft/policy",
                   "--run-dir", "runs/job", "--working-dir", ".", cwd=project, timeout=420)  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    warnings = sub.stderr.strip().splitlines()
    assert any(w.startswith("poserft: warning: data.dir data/synth is in data/") for w in warnings), sub.stderr
    assert any(w.startswith("poserft: warning: --init runs/sft/policy is in runs/") for w in warnings), sub.stderr
    job = re.search(r"submitted (\S+);", sub.stdout).group(1)

    metrics, deadline = project / "runs" / "job" / "metrics.jsonl", time.time() + 900
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:  # steps are short
        time.sleep(0.5)
    assert metrics.is_file(), _poserft("logs", job, "--address", ray_head).stdout[-3000:]
    scaled = _poserft("scale", "--rollout-workers", "2", "--address", ray_head, timeout=300)
    assert scaled.returncode == 0, scaled.stderr
    assert "target 2" in scaled.stdout
    while time.time() < deadline:  # the new worker joins between steps
        if any(json.loads(ln)["workers"] == 2 for ln in metrics.read_text().splitlines()[:-1]):
            break
        time.sleep(1)
    running = _poserft("status", job, "--address", ray_head).stdout
    assert running.split()[1] == "RUNNING" and re.search(rf"step \d+/{STEPS}", running), running

    stop = _poserft("stop", job, "--address", ray_head)
    assert stop.returncode == 0 and "stopping" in stop.stdout, stop.stderr
    follow = _poserft("logs", job, "--follow", "--address", ray_head, timeout=900)  # returns when the job ends
    assert follow.returncode == 0, follow.stderr
    assert re.search(rf"step \d+/{STEPS}", follow.stdout), follow.stdout[-3000:]
    final = _wait(ray_head, job, _ended, timeout_s=120)
    assert final.split()[1] in ("STOPPED", "SUCCEEDED"), final
    run_dir = project / "runs" / "job"
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert [ln["step"] for ln in lines] == list(range(1, len(lines) + 1)) and len(lines) < STEPS
    assert max(ln["workers"] for ln in lines) == 2  # the scale reached the controller
    assert (run_dir / "config.yaml").is_file() and (run_dir / "command.txt").is_file()
    assert job in _poserft("status", "--address", ray_head).stdout


def test_failed_job_reason_unknown_job_and_scale_without_a_run(ray_head, project):
    _job_config(project, steps=1)
    sub = _poserft("submit", "--address", ray_head, "--config", "configs/job.yaml", "--init", "runs/nope",
                   "--run-dir", "runs/failed", cwd=project, timeout=420)  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    assert "--init runs/nope is in runs/" in sub.stderr and "does not exist on this machine" in sub.stderr
    assert "Uploading package" not in sub.stderr  # Ray's INFO lines stay out of the user's terminal
    job = re.search(r"submitted (\S+);", sub.stdout).group(1)
    out = _wait(ray_head, job, _ended, timeout_s=300)
    assert out.split()[1] == "FAILED"
    reason = [ln for ln in out.splitlines() if ln.startswith("reason: ")]
    assert reason and "--init" in reason[0] and "runs/nope" in reason[0], out  # the preflight's line, not just FAILED

    for args in (["status", "raysubmit_nope"], ["logs", "raysubmit_nope"]):
        res = _poserft(*args, "--address", ray_head)
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
        assert "no job 'raysubmit_nope'" in res.stderr
    res = _poserft("scale", "--rollout-workers", "2", "--address", ray_head, timeout=300)
    assert res.returncode == 2, res.stderr  # the dashboard address is accepted; no training job runs
    assert len(res.stderr.strip().splitlines()) == 1 and "no running poserft controller" in res.stderr
