"""Integration: the controller on a 3-node Ray cluster (one machine, `ray.cluster_utils.Cluster`).

Each role is pinned to a node by a custom resource; rollout workers are scaled 1 -> 3 -> 1 while
training runs with max_staleness 1. The rollout engine here is the HF reference engine, so the
test runs in about a minute; the vLLM path has its own tests (test_rollout_vllm.py)."""

import json
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from poserft.cluster.controller import CONTROLLER_NAME, NAMESPACE, controller_actor_class
from poserft.cluster.jobs import scale_rollout_workers
from poserft.common.config import load_config

STEPS, PROMPTS, STALENESS = 8, 4, 1


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head_node": 1}})
    c.add_node(num_cpus=1, resources={"learner_node": 1})
    c.add_node(num_cpus=3, resources={"rollout_node": 3})
    c.add_node(num_cpus=1, resources={"reward_node": 1})
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=True)
    yield c
    ray.shutdown()
    c.shutdown()


def _wait_step(ctl, step, timeout=900):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = ray.get(ctl.get_status.remote())
        if st["step"] >= step or st["state"] in ("finished", "stopped"):
            return st
        time.sleep(0.5)
    raise TimeoutError(f"controller did not reach step {step}")


def test_roles_scaling_ledger_versions_staleness(cluster, tiny_data, tiny_sft, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.dir={tiny_data}",
            f"rl.steps={STEPS}",
            f"rl.prompts_per_step={PROMPTS}",
            "rl.group_size=3",
            "rl.tasks=[image2pose]",
            f"rl.max_staleness={STALENESS}",
            "rl.checkpoint_every=4",
            "rl.sampling.max_tokens=16",
            "rl.rollout.engine=hf",
            "rl.rollout.num_workers=1",
            "rl.rollout.num_cpus=1",
            "rl.rollout.resources={rollout_node: 1}",
            "rl.learner.num_cpus=0.5",
            "rl.learner.world_size=2",
            "rl.learner.resources={learner_node: 1}",  # 2 DDP ranks (gloo)
            "rl.reward.num_cpus=0.5",
            "rl.reward.resources={reward_node: 1}",
            "rewards.num_workers=1",
        ],
    )
    run_dir = tmp_path / "run"
    ctl = (
        controller_actor_class().options(name=CONTROLLER_NAME, namespace=NAMESPACE).remote(cfg, tiny_sft, str(run_dir))
    )
    done = ctl.run.remote()
    _wait_step(ctl, 2)
    assert scale_rollout_workers(3)["target_workers"] == 3  # the Python API behind `poserft scale`
    _wait_step(ctl, 5)
    scale_rollout_workers(1)
    result = ray.get(done, timeout=600)
    assert result["steps"] == STEPS and result["version"] == STEPS

    # Each role ran on the node that declares its resource.
    from ray.util.state import list_actors

    node_res = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
    seen, learners = {}, 0
    for a in list_actors(limit=1000):
        seen.setdefault(a.class_name, set()).add(next(k for k in node_res[a.node_id] if k.endswith("_node")))
        learners += a.class_name == "LearnerCore"
    assert seen["LearnerCore"] == {"learner_node"} and learners == 2  # both ranks on the learner node
    assert seen["RolloutWorkerCore"] == {"rollout_node"}
    assert seen["RewardWorker"] == {"reward_node"}

    metrics = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(m["workers"] for m in metrics) == 3 and metrics[-1]["workers"] == 1
    assert [m["version"] for m in metrics] == list(range(1, STEPS + 1))  # versions only increase
    assert max(m["staleness"] for m in metrics) <= STALENESS

    ledger = [json.loads(ln) for ln in (run_dir / "ledger.jsonl").read_text().splitlines()]
    ids = [t for e in ledger for t in e["task_ids"]]
    assert len(ledger) == STEPS and len(ids) == STEPS * PROMPTS
    assert len(set(ids)) == len(ids), "a task id was trained twice"
    dropped = result["dropped_stale_groups"]
    assert result["requeued_prompts"] >= dropped  # dropped prompts went back to the queue, none lost
    assert (run_dir / "checkpoints" / "latest" / "learner_state.pt").is_file()
    ray.get(ctl.shutdown.remote())
    ray.kill(ctl)
