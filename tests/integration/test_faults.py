"""Integration: faults injected into real training runs on real Ray (HF rollout engine).

- a rollout worker killed while it generates its shard of a batch: the shard's prompts are
  re-queued, the step trains on the other shard, a new worker takes over;
- a reward worker killed while training runs: the pool restarts it and re-sends its rows;
- the learner killed in the middle of a step: the run stops, a new controller resumes from the
  last checkpoint and continues with the same data order and policy version sequence as an
  uninterrupted run.

In every case the ledger must show each step once, no task id twice, and exactly the prompts
of the seeded data order (with the killed rollout worker: together with those still queued):
nothing lost, nothing trained twice.
"""

import json
import time

import psutil
import pyarrow as pa
import pytest
import ray
from ray.exceptions import RayError

from poserft.cluster.controller import controller_actor_class, prompt_order
from poserft.common.config import load_config
from poserft.data.dataset import load_split

STEPS, PROMPTS = 6, 4


def _config(tiny_data, **extra):
    sets = [
        f"data.dir={tiny_data}",
        f"rl.steps={STEPS}",
        f"rl.prompts_per_step={PROMPTS}",
        "rl.group_size=2",
        "rl.tasks=[image2pose]",
        "rl.max_staleness=0",
        "rl.checkpoint_every=2",
        "rl.sampling.max_tokens=24",
        "rl.rollout.engine=hf",
        "rl.rollout.num_workers=2",
        "rl.rollout.num_cpus=0.5",
        "rl.learner.num_cpus=0.5",
        "rl.reward.num_cpus=0.25",
        "rewards.num_workers=1",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return load_config(None, sets)


def _data_order(cfg) -> list[str]:
    """The seeded prompt order the controller walks (sorted ids, permuted by rl.seed)."""
    table = load_split(cfg.data.dir, "train")
    table = table.filter(pa.compute.is_in(table["task"], pa.array(list(cfg.rl.tasks))))
    return prompt_order(table["id"].to_pylist(), cfg.rl.seed)


def _read(path):
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _check_ledger(run_dir, cfg, partial=False):
    """`partial`: a rollout worker failed. Its shard's prompts were re-queued and that step trained
    on the other shards, so steps may hold fewer than PROMPTS ids; what was trained plus what is
    still queued (final checkpoint) must then be exactly the data order read so far."""
    ledger = _read(run_dir / "ledger.jsonl")
    assert [e["step"] for e in ledger] == list(range(1, STEPS + 1)), "each step exactly once"
    ids = [t for e in ledger for t in e["task_ids"]]
    assert len(ids) == len(set(ids)), "a task id was trained twice"
    if partial:
        state = json.loads((run_dir / "checkpoints" / "latest" / "poserft.json").read_text())["controller"]
        assert all(0 < len(e["task_ids"]) <= PROMPTS for e in ledger)
        assert not set(ids) & set(state["requeue"]), "a re-queued task id was trained already"
        assert set(ids) | set(state["requeue"]) == set(_data_order(cfg)[: state["cursor"]]), (
            "a prompt of the data order was lost"
        )
    else:
        assert len(ids) == STEPS * PROMPTS
        assert set(ids) == set(_data_order(cfg)[: STEPS * PROMPTS]), "a prompt of the data order was lost"
    versions = [m["version"] for m in _read(run_dir / "metrics.jsonl")]
    assert versions == list(range(1, STEPS + 1))
    return ledger


def _start(cfg, sft, run_dir):
    ctl = controller_actor_class().remote(cfg, sft, str(run_dir))
    return ctl, ctl.run.remote()


def _our_processes():
    """Processes of this test's Ray cluster (children of its raylet), not of any other on the machine."""
    node = ray._private.worker._global_node
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return raylet.children(recursive=True)


def _kill_running(task: str, timeout=300) -> None:
    """SIGKILL the actor process while it executes `task` (Ray titles it `ray::Class.method`), as a
    crash or an OOM kill would."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in _our_processes():
            try:
                if " ".join(p.cmdline()).startswith(f"ray::{task}"):
                    p.kill()
                    return
            except psutil.Error:
                continue
        time.sleep(0.02)
    raise TimeoutError(f"no process ran {task} within {timeout} s")


def _stop(ctl):
    try:
        ray.get(ctl.shutdown.remote(), timeout=60)
    except RayError:
        pass
    ray.kill(ctl)


def _train_killing(task: str, tiny_data, tiny_sft, run_dir):
    """A run in which the process executing `task` is killed once; returns (cfg, result)."""
    cfg = _config(tiny_data)
    ctl, done = _start(cfg, tiny_sft, run_dir)
    _kill_running(task)
    result = ray.get(done, timeout=900)
    _stop(ctl)
    return cfg, result


def test_rollout_worker_killed_mid_generation(ray_local, tiny_data, tiny_sft, tmp_path):
    run_dir = tmp_path / "run"
    cfg, result = _train_killing("RolloutWorkerCore.generate", tiny_data, tiny_sft, run_dir)
    assert result["steps"] == STEPS
    # each batch is split over both workers: the killed worker's shard is re-queued, the step goes on with the other
    assert result["worker_failures"] >= 1 and result["requeued_prompts"] >= PROMPTS // 2
    ledger = _check_ledger(run_dir, cfg, partial=True)
    assert any(len(e["task_ids"]) < PROMPTS for e in ledger), "no step trained on the surviving shard alone"


def test_reward_worker_killed_during_training(ray_local, tiny_data, tiny_sft, tmp_path):
    run_dir = tmp_path / "run"
    cfg, result = _train_killing("RewardWorker.score", tiny_data, tiny_sft, run_dir)
    assert result["steps"] == STEPS
    _check_ledger(run_dir, cfg)


def test_learner_killed_mid_step_then_resumed(ray_local, tiny_data, tiny_sft, tmp_path):
    cfg = _config(tiny_data)
    reference = tmp_path / "reference"
    ctl, done = _start(cfg, tiny_sft, reference)
    ray.get(done, timeout=900)
    _stop(ctl)

    run_dir = tmp_path / "killed"
    ctl, done = _start(cfg, tiny_sft, run_dir)
    deadline = time.time() + 600
    while (
        not (run_dir / "checkpoints" / "latest" / "poserft.json").is_file() or len(_read(run_dir / "ledger.jsonl")) < 3
    ):
        assert time.time() < deadline, "the run did not reach step 3"
        time.sleep(0.2)
    _kill_running("LearnerCore.train_step")  # step 4 (or later) is in the learner's hands
    with pytest.raises(RayError):
        ray.get(done, timeout=600)
    _stop(ctl)
    killed_at = len(_read(run_dir / "ledger.jsonl"))
    assert killed_at < STEPS

    ctl, done = _start(cfg, tiny_sft, run_dir)  # same run dir: resumes from checkpoints/latest
    result = ray.get(done, timeout=900)
    _stop(ctl)
    assert result["steps"] == STEPS
    ledger = _check_ledger(run_dir, cfg)
    ref = _read(reference / "ledger.jsonl")
    assert [e["task_ids"] for e in ledger] == [e["task_ids"] for e in ref], (
        "resumed data order differs from the uninterrupted run"
    )
    assert [e["version"] for e in ledger] == [e["version"] for e in ref]
