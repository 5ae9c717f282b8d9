"""Integration: the controller's Prometheus exporter, scraped by a REAL Prometheus server.

A short real training run (HF engine, tiny policy, local Ray) exports metrics on a free port of
127.0.0.1; a `prometheus` process (the Debian package, installed by `make test`) scrapes it every
second. Afterwards every panel query of deploy/grafana/poserft.json, with its dashboard variables
filled in, must return data from Prometheus's HTTP API, and a few values must equal what the run
itself reports."""

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import ray

from poserft.cluster.controller import CONTROLLER_NAME, NAMESPACE, controller_actor_class
from poserft.cluster.metrics import HOST_ENV
from poserft.common.config import load_config
from poserft.report import write_report

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "poserft.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
JOB = "poserft-controller"  # the job the dashboard's `job` variable selects by default
STEPS, PROMPTS, GROUP = 4, 2, 3
INSTALL_HINT = (
    "install the Debian package `prometheus` (`make test` does it: apt-get install -y "
    "--no-install-recommends prometheus, with sudo when not root)"
)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"the `{name}` binary is not on PATH; this test needs the real Prometheus server: {INSTALL_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _wait(what: str, predicate, timeout_s: float, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.5)
    tail = "\n".join(log.read_text().splitlines()[-20:]) if log and log.is_file() else ""
    raise TimeoutError(f"gave up waiting for {what}\n{tail}")


class Prometheus:
    """A prometheus server process scraping one target every second."""

    def __init__(self, workdir: Path, target: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n"
        )
        cmd = [
            _binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.started = time.time()
        _wait("prometheus to be ready", self._ready, 60, self.log)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
        return _get(self.url + "/-/ready", timeout=2).strip() != b""

    def query(self, expr: str) -> list[dict]:
        body = json.loads(_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"))
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr} should give one series, got {result}"
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            out += [(p["title"], t["expr"]) for t in p.get("targets", [])]
    return out


def _fill(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable syntaxes ($var, ${var}, ${var:fmt}, [[var]]) -> concrete values."""

    def sub(m):
        name = next(g for g in m.groups() if g)
        assert name in variables, f"dashboard variable ${name} has no test value"
        return variables[name]

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, expr)
    assert "$" not in out, out
    return out


def test_dashboard_and_scrape_config_are_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    checked = subprocess.run(
        [_binary("promtool"), "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
def controller(ray_local, tiny_data, tiny_sft, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.dir={tiny_data}",
            f"rl.steps={STEPS}",
            f"rl.prompts_per_step={PROMPTS}",
            f"rl.group_size={GROUP}",
            "rl.tasks=[image2pose]",
            "rl.max_staleness=1",
            "rl.checkpoint_every=100",
            "rl.sampling.max_tokens=16",
            "rl.rollout.engine=hf",
            "rl.rollout.num_workers=1",
            "rl.rollout.num_cpus=1",
            "rl.learner.num_cpus=1",
            "rl.reward.num_cpus=0.5",
            "rewards.num_workers=1",
            "rl.metrics_port=0",
        ],
    )
    opts = {"name": CONTROLLER_NAME, "namespace": NAMESPACE, "runtime_env": {"env_vars": {HOST_ENV: "127.0.0.1"}}}
    ctl = controller_actor_class().options(**opts).remote(cfg, tiny_sft, str(tmp_path / "run"))
    yield ctl, tmp_path / "run"
    ray.get(ctl.shutdown.remote())
    ray.kill(ctl)


@pytest.fixture
def prometheus_for(tmp_path):
    servers = []

    def start(target: str) -> Prometheus:
        (tmp_path / "prom").mkdir()
        servers.append(Prometheus(tmp_path / "prom", target))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def test_every_dashboard_query_has_data_from_a_real_prometheus(controller, prometheus_for):
    ctl, run_dir = controller
    port = ray.get(ctl.get_status.remote())["metrics_port"]
    assert isinstance(port, int) and port > 0, "rl.metrics_port=0 should bind a free port and report it"
    assert b"poserft_rollout_samples_total" in _get(f"http://127.0.0.1:{port}/metrics")
    prom = prometheus_for(f"127.0.0.1:{port}")
    _wait("the first scrape", lambda: prom.query(f'up{{job="{JOB}"}} == 1'), 60, prom.log)

    result = ray.get(ctl.run.remote(), timeout=1200)
    assert result["steps"] == STEPS
    finished = time.time()
    # Every update of the run is visible once a scrape newer than the run's end is stored.
    _wait(
        "a scrape after the run ended",
        lambda: prom.query(f'timestamp(poserft_learner_steps_total{{job="{JOB}"}}) > {finished}'),
        60,
        prom.log,
    )

    # 1. Each panel query of the dashboard returns data (a window covering the whole run).
    window = f"{math.ceil(time.time() - prom.started) + 30}s"
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v["current"]["value"] for v in dashboard["templating"]["list"]}
    assert variables["job"] == JOB
    variables["__rate_interval"] = window
    exprs = _panel_exprs(dashboard)
    assert len(exprs) >= 15
    empty, nan_only = [], []
    for title, expr in exprs:
        series = prom.query(_fill(expr, variables))
        if not series:
            empty.append(f"{title}: {expr}")
        elif not any(math.isfinite(float(s["value"][1])) for s in series):
            nan_only.append(f"{title}: {expr}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    assert not nan_only, "panel queries with only NaN values:\n" + "\n".join(nan_only)

    # 2. Values agree with what the run reports.
    sel = f'{{job="{JOB}"}}'
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ledger = [json.loads(ln) for ln in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert prom.value(f"poserft_rollout_samples_total{sel}") == result["samples"] == STEPS * PROMPTS * GROUP
    assert prom.value(f"poserft_rollout_tokens_total{sel}") == result["tokens"] > 0
    assert (
        prom.value(f"poserft_rollout_groups_total{sel}") == sum(len(e["task_ids"]) for e in ledger) == STEPS * PROMPTS
    )
    assert prom.value(f"poserft_learner_steps_total{sel}") == STEPS
    assert prom.value(f"poserft_weight_sync_seconds_count{sel}") == STEPS
    assert prom.value(f"poserft_weight_sync_seconds_sum{sel}") == pytest.approx(sum(ln["sync_s"] for ln in lines))
    assert prom.value(f"poserft_controller_dropped_stale_groups_total{sel}") == result["dropped_stale_groups"]
    versions = {s["metric"]["worker"]: float(s["value"][1]) for s in prom.query(f"poserft_policy_version{sel}")}
    assert versions == {"learner": STEPS, "rollout-0": STEPS}
    assert prom.value(f"poserft_rollout_workers{sel}") == 1
    assert prom.value(f'poserft_reward_mean{{job="{JOB}",component="total",task="image2pose"}}') == pytest.approx(
        lines[-1]["reward_total"], abs=1e-5
    )
    components = {s["metric"]["component"] for s in prom.query(f"poserft_reward_component_seconds_count{sel} > 0")}
    assert components == {
        "format",
        "text_similarity",
        "joint",
    }  # the components image2pose uses (every one is exported from the start at 0)

    # 3. `poserft report` on this real run: no warnings, every image it links exists.
    warnings = []
    md = write_report(run_dir, warn=warnings.append).read_text()
    assert warnings == []
    assert re.search(r"\| final policy version \| 4 \|", md)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "report/examples_image2pose.png" in images and len(images) >= 5
    assert all((run_dir / ref).is_file() for ref in images)
