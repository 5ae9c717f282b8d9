"""configs/8xh100.yaml placed on a Ray cluster whose nodes declare GPUs they do not have (fake
GPU resources), laid out like deploy/k8s/raycluster.yaml: one learner pod (8 GPUs), three
rollout pods (2 GPUs each), one reward pod (1 GPU). Every placement group must be placed, the
reward workers must land on the reward pod (not take a rollout pod), and a role that holds GPUs
it cannot use must fail at start in one line (findings 1, 3 and 4 of docs/gpu.md)."""

from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from poserft.cluster import placement
from poserft.common.config import load_config

CFG = load_config(Path(__file__).resolve().parents[2] / "configs" / "8xh100.yaml")


@pytest.fixture(scope="module")
def fake_gpu_cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 16, "num_gpus": 8, "resources": {"learner_node": 1}}
    )
    for _ in range(3):
        cluster.add_node(num_cpus=12, num_gpus=2, resources={"rollout_node": 1})
    cluster.add_node(num_cpus=12, num_gpus=1, resources={"reward_node": 1})
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@ray.remote(num_cpus=0)
class Probe:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def device(self, role: str) -> str:
        from poserft.common.device import role_device

        return str(role_device(role))


def _node_with(resource: str) -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource)}


def test_8xh100_roles_all_placed_and_rewards_off_the_rollout_pods(fake_gpu_cluster):
    s = CFG.rl
    lr_, r, rw = s.learner, s.rollout, s.reward
    groups = []
    opts, pg = placement.placed_group_options(
        "learner", lr_.world_size, lr_.num_cpus, lr_.num_gpus, lr_.resources, timeout_s=60
    )
    groups.append(pg)
    learners = [Probe.options(**o).remote() for o in opts]
    # the reward pool starts before the rollout workers (as in the controller's setup)
    reward_opts = {"num_cpus": rw.num_cpus, "num_gpus": rw.num_gpus, "resources": rw.resources}
    rewards = [Probe.options(**reward_opts).remote() for _ in range(CFG.rewards.num_workers)]
    reward_nodes = set(ray.get([a.node.remote() for a in rewards], timeout=60))
    rollouts = []
    for _ in range(r.num_workers):
        o, pg = placement.placed_options("rollout worker", r.num_cpus, r.num_gpus, r.resources, timeout_s=20)
        groups.append(pg)
        rollouts.append(Probe.options(**o).remote())
    rollout_nodes = set(ray.get([a.node.remote() for a in rollouts], timeout=60))
    assert set(ray.get([a.node.remote() for a in learners], timeout=60)) == _node_with("learner_node")
    assert reward_nodes == _node_with("reward_node")
    assert rollout_nodes == _node_with("rollout_node") and len(rollout_nodes) == 3  # one TP-2 worker per rollout pod
    assert not reward_nodes & rollout_nodes
    for pg in groups:
        placement.release(pg)
    for a in learners + rewards + rollouts:
        ray.kill(a)


def test_a_role_with_gpus_but_no_usable_cuda_fails_in_one_line(fake_gpu_cluster):
    probe = Probe.options(num_gpus=1, resources={"reward_node": 0.1}).remote()  # a fake GPU: CUDA cannot work here
    with pytest.raises(ray.exceptions.RayTaskError) as err:
        ray.get(probe.device.remote("learner"), timeout=60)
    line = [ln for ln in str(err.value).splitlines() if "CudaUnusable" in ln][-1]
    assert (
        "learner: placed with 1 GPU(s) but CUDA is unusable" in line
        and "NVIDIA driver" in line
        and "built for CUDA" in line
    )
    assert ray.get(Probe.options(resources={"reward_node": 0.1}).remote().device.remote("learner"), timeout=60) == "cpu"


def test_a_group_that_waits_prints_progress_then_names_the_key(fake_gpu_cluster, capsys):
    held = [placement.placed_options("rollout worker", 1, 2, {"rollout_node": 1}, timeout_s=20)[1] for _ in range(3)]
    pg = ray.util.placement_group(
        [{"CPU": 1.0, "GPU": 2.0, "rollout_node": 1.0}]
    )  # a fourth worker: every rollout pod is taken
    assert not placement.wait_placed(pg, "rollout worker", {"GPU": 2.0}, timeout_s=2.5, every_s=1.0)
    out = capsys.readouterr().out
    assert "rollout worker: waiting for room for {'GPU': 2.0} on one node, 1 s of 2 s" in out
    with pytest.raises(TimeoutError, match="rl.placement_timeout_s"):
        placement.placed_options("rollout worker", 1, 2, {"rollout_node": 1}, timeout_s=1.0)
    for g in [*held, pg]:
        placement.release(g)
