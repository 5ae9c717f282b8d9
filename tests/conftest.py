import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_INTEGRATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration") + os.sep


def pytest_collection_modifyitems(config, items):
    """The folder decides the marker: everything under tests/integration/ starts real Ray, vLLM,
    gRPC, Prometheus or a training run and is marked `integration`; tests/unit/ is not."""
    for item in items:
        if str(item.path).startswith(_INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray cluster, started on first use and shared by later modules."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return ray


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic benchmark (built once per test session)."""
    from poserft.data.dataset import build_dataset

    out = tmp_path_factory.mktemp("data") / "synth"
    build_dataset(out, seed=0, train_poses=1500, val_poses=96, test_poses=96, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_data, tmp_path_factory):
    """A freshly initialised tiny policy checkpoint."""
    from poserft.model.checkpoint import init_policy, save_policy

    out = tmp_path_factory.mktemp("ckpt") / "init"
    save_policy(init_policy("tiny", tiny_data, seed=0), out)
    return out


@pytest.fixture(scope="session")
def tiny_sft(tiny_data, tiny_ckpt, tmp_path_factory):
    """The tiny policy after a short SFT: enough to answer pose tasks with the template."""
    from poserft.common.config import SFTConfig
    from poserft.learner.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    settings = SFTConfig(
        align_steps=40, steps=150, batch_size=16, val_every=150, ckpt_every=150, warmup_steps=10, lr=2e-3, val_rows=32
    )
    return run_sft(tiny_ckpt, tiny_data, out, settings, progress=False)["policy"]
