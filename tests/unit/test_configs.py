"""The shipped configs validate, and their roles ask for the resources described."""

from pathlib import Path

import pytest

from poserft.cluster import placement
from poserft.cluster.placement import bundle
from poserft.common.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.rl.steps >= 1


def test_8xh100_places_roles_as_described():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "8xh100.yaml")
    r, lr, rw = cfg.rl.rollout, cfg.rl.learner, cfg.rl.reward
    ranks = placement.group_bundles(lr.world_size, lr.num_cpus, lr.num_gpus, lr.resources)
    assert (
        ranks == [{"CPU": 2.0, "GPU": 1.0, "learner_node": 1.0}] + [{"CPU": 2.0, "GPU": 1.0}] * 7
    )  # 8 DDP ranks, one GPU each
    assert placement.bundles_total(ranks) == {"CPU": 16.0, "GPU": 8.0, "learner_node": 1.0}  # the whole learner node
    assert bundle(r.num_cpus, r.num_gpus, r.resources) == {"CPU": 8.0, "GPU": 2.0, "rollout_node": 1.0}
    assert r.tensor_parallel_size == r.num_gpus == 2
    assert r.num_workers * r.num_gpus + rw.num_gpus * cfg.rewards.num_workers <= 8  # fits one rollout node
    assert bundle(rw.num_cpus, rw.num_gpus, rw.resources)["GPU"] == 0.5


def test_tiny_cpu_is_the_demo_default():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.yaml")
    assert cfg.model.preset == "tiny" and cfg.rl.rollout.engine == "vllm" and cfg.rl.rollout.num_gpus == 0


def test_impossible_request_names_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("rl:\n  rollout:\n    num_gpus: -1\n")
    with pytest.raises(ConfigError, match="rl.rollout.num_gpus"):
        load_config(f)
