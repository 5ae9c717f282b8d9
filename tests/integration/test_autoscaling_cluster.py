"""Integration: `rl.rollout.autoscale` against Ray's real autoscaler, on one machine.

The cluster is Ray's fake multi-node provider (what `ray.cluster_utils.AutoscalingCluster` starts):
a head started with `ray start --head --autoscaling-config`, whose autoscaler launches a
"node" (its own raylet) whenever a placement group or a `request_resources` call cannot be
satisfied, and removes it after `idle_timeout_minutes` without work. `AutoscalingCluster` itself
is not used: it runs `ray stop --force` (every Ray process of the user on the machine, other
test runs' clusters included) and reads an `example.yaml` that the installed wheel does not ship.
The head here runs in its own process group, with its own temp dir and free ports, like
test_submit's; its config is complete, and shutting it down kills only this cluster's
processes, by pid.

The head has no `rollout_node`; only the `rollout` node type (min 0, max 2, 1 CPU each) has it,
and rollout workers ask for it. The run (HF engine, tiny checkpoint, max_staleness 1, a learner
slow against generation) starts with 2 rollout workers:
1. their placement groups cannot be placed, the autoscaler adds two rollout nodes, training runs;
2. the workers sit idle behind the staleness bound: the policy shrinks the pool to 1 (reason
   idle_behind_staleness_bound), the request to the autoscaler drops and it removes the idle node;
3. `poserft scale` (its Python API) asks for 2 again: the new worker's group is pending demand, a
   node is added, and the worker trains there;
4. the run is stopped; the ledger shows every step once, no prompt trained twice and none lost
   (trained, or back in the queue of the final checkpoint).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pytest
import ray

from poserft.cluster.controller import CONTROLLER_NAME, NAMESPACE, controller_actor_class, prompt_order
from poserft.cluster.jobs import scale_rollout_workers
from poserft.common.config import load_config
from poserft.data.dataset import load_split

RAY_CLI = Path(sys.executable).parent / "ray"
ROLLOUT_TYPE = "rollout"
IDLE_TIMEOUT_MIN = 0.05  # 3 s without work and a rollout node goes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _autoscaler_config(gcs_address: str) -> dict:
    """A complete fake-multinode cluster config (the monitor reads it as is)."""
    return {
        "cluster_name": "poserft-autoscale-test",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "launch_multiple": True,
        },
        "auth": {"ssh_user": "nobody"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 3}, "node_config": {}, "max_workers": 0},
            ROLLOUT_TYPE: {
                "resources": {"CPU": 1, "rollout_node": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process of this cluster: Ray names its session folder under temp_dir in their
    command lines (raylets, GCS, agents, workers), and the monitor's nodes inherit it."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture(scope="module")
def autoscaling_cluster():
    if ray.is_initialized():
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="ras_", dir="/tmp")  # short: Ray's unix sockets live under it
    port = _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    config = Path(tmp) / "autoscaler.json"
    config.write_text(json.dumps(_autoscaler_config(address)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        AUTOSCALER_METRIC_PORT=str(_free_port()),
        HF_HUB_OFFLINE="1",
        RAY_AUTH_MODE="disabled",  # `ray start` turns token auth on when ~/.ray/auth_token exists
        PATH=f"{RAY_CLI.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    head = subprocess.Popen(
        [
            str(RAY_CLI),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--autoscaling-config={config}",
            "--num-cpus=3",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",  # the head's job and state modules run even without the UI
            f"--dashboard-agent-listen-port={_free_port()}",
            "--disable-usage-stats",
            f"--temp-dir={tmp}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start --head exited with {head.returncode}: {head.stdout.read()[-2000:]}")
            try:
                ray.init(
                    address=address, logging_level="ERROR", log_to_driver=False
                )  # every node's log monitor reads the one session folder
                break
            except (ConnectionError, RuntimeError):
                if time.time() > deadline:
                    pytest.fail("the autoscaling head did not come up within 120 s")
                time.sleep(2)
        yield tmp
    finally:
        ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        for p in _cluster_processes(tmp):  # nodes the autoscaler started, left behind by the head
            try:
                p.kill()
            except psutil.Error:
                pass


def _rollout_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive") and (n.get("Resources") or {}).get("rollout_node"))


def _wait(what: str, predicate, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"gave up waiting for {what}")


def test_autoscaler_adds_and_removes_rollout_nodes_for_the_controller(
    autoscaling_cluster, tiny_data, tiny_ckpt, tmp_path
):
    assert _rollout_nodes() == 0  # the head declares no rollout_node
    cfg = load_config(
        None,
        [
            f"data.dir={tiny_data}",
            "rl.steps=200",  # stopped by the test
            "rl.prompts_per_step=4",
            "rl.group_size=2",
            "rl.tasks=[image2pose]",
            "rl.max_staleness=1",
            "rl.checkpoint_every=1000",
            "rl.updates_per_batch=4",  # the learner is slow against generation: workers idle behind the bound
            "rl.micro_batch_size=2",
            "rl.sampling.max_tokens=8",
            "rl.rollout.engine=hf",
            "rl.rollout.num_workers=2",
            "rl.rollout.num_cpus=1",
            "rl.rollout.resources={rollout_node: 1}",
            "rl.rollout.autoscale.enabled=true",
            "rl.rollout.autoscale.min_workers=1",
            "rl.rollout.autoscale.max_workers=2",
            "rl.rollout.autoscale.window_steps=2",
            "rl.rollout.autoscale.cooldown_steps=1",
            "rl.learner.num_cpus=1",
            "rl.reward.num_cpus=0.5",
            "rewards.num_workers=1",
            "rl.placement_timeout_s=300",
        ],
    )
    run_dir = tmp_path / "run"
    ctl = (
        controller_actor_class().options(name=CONTROLLER_NAME, namespace=NAMESPACE).remote(cfg, tiny_ckpt, str(run_dir))
    )
    done = ctl.run.remote()
    status = lambda: ray.get(ctl.get_status.remote())  # noqa: E731
    try:
        # 1. two pending groups -> the autoscaler adds two rollout nodes; training starts on them
        _wait("two rollout nodes", lambda: _rollout_nodes() == 2, 240)
        _wait("the first steps", lambda: status()["step"] >= 2, 300)
        # 2. the policy shrinks the pool; the request drops; the idle node is removed
        _wait("a shrink to 1 worker", lambda: status()["target_workers"] == 1, 300)
        _wait("the idle rollout node removed", lambda: _rollout_nodes() == 1, 180)
        shrunk_at = status()["step"]
        # 3. `poserft scale` asks for 2: pending demand, a node is added, the worker trains there
        assert scale_rollout_workers(2)["target_workers"] == 2
        _wait("a rollout node added for the scale", lambda: _rollout_nodes() == 2, 240)
        _wait("2 workers again", lambda: status()["workers"] == 2, 240)
        joined_at = status()["step"]
        _wait("steps on the grown pool", lambda: status()["step"] >= joined_at + 3, 300)
    finally:
        ray.get(ctl.request_stop.remote())
        result = ray.get(done, timeout=600)
        ray.get(ctl.shutdown.remote())
        ray.kill(ctl)

    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = result["steps"]
    assert [m["step"] for m in lines] == list(range(1, steps + 1)) and steps > joined_at
    shrinks = [m for m in lines if m.get("autoscale_direction") == "down"]
    assert shrinks and shrinks[0]["autoscale_reason"] == "idle_behind_staleness_bound"
    assert shrinks[0]["step"] <= shrunk_at
    assert any(m["workers"] == 2 for m in lines if m["step"] > joined_at), "no step ran on the pool grown again"
    # every rollout worker that trained ran on a rollout node
    import pyarrow.parquet as pq

    used = {
        w
        for m in lines
        for w in pq.read_table(run_dir / "rollouts" / f"step_{m['step']:05d}.parquet")["worker_id"].to_pylist()
    }
    assert {"rollout-0", "rollout-1", "rollout-2"} <= used  # the third worker is the one the scale added

    # the ledger: each step once, no task id twice, nothing lost
    ledger = [json.loads(ln) for ln in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ledger] == list(range(1, steps + 1))
    ids = [t for e in ledger for t in e["task_ids"]]
    assert len(ids) == len(set(ids)), "a task id was trained twice"
    state = json.loads((run_dir / "checkpoints" / "latest" / "poserft.json").read_text())["controller"]
    assert not set(ids) & set(state["requeue"]), "a re-queued task id was trained already"
    table = load_split(cfg.data.dir, "train")
    table = table.filter(pa.compute.is_in(table["task"], pa.array(list(cfg.rl.tasks))))
    order = prompt_order(table["id"].to_pylist(), cfg.rl.seed)
    assert set(ids) | set(state["requeue"]) == set(order[: state["cursor"]]), "a prompt of the data order was lost"
