"""Colocation (`rl.rollout.colocate`): rollout engines sleep while the learner trains and wake
before the new weights land. On CPU nothing is released, but the phase protocol is the same
code that runs on GPUs; a sleeping worker refuses to generate."""

import json

import pytest
import ray

from poserft.cluster.controller import controller_actor_class
from poserft.common.config import load_config
from poserft.data.dataset import load_split
from poserft.rollout_workers.worker import RolloutWorkerCore


def test_a_sleeping_worker_refuses_work_until_woken(tiny_data, tiny_sft):
    w = RolloutWorkerCore(str(tiny_sft), engine="hf", sampling={"max_tokens": 8, "seed": 0}, threads=1)
    table = load_split(tiny_data, "train", task="text2pose").slice(0, 1)
    assert w.sleep() == {"worker_id": "rollout-0", "released": False}  # CPU: nothing to release
    with pytest.raises(RuntimeError, match="asleep"):
        w.generate(table, 2)
    w.wake_up()
    assert w.generate(table, 2).num_rows == 2


def test_colocated_training_sleeps_and_wakes_each_step(ray_local, tiny_data, tiny_sft, tmp_path):
    cfg = load_config(
        None,
        [
            f"data.dir={tiny_data}",
            "rl.steps=3",
            "rl.prompts_per_step=4",
            "rl.group_size=2",
            "rl.tasks=[image2pose]",
            "rl.sampling.max_tokens=16",
            "rl.rollout.engine=hf",
            "rl.rollout.num_workers=2",
            "rl.rollout.colocate=true",
            "rl.rollout.num_cpus=0.5",
            "rl.learner.num_cpus=0.5",
            "rl.reward.num_cpus=0.25",
            "rewards.num_workers=1",
        ],
    )
    ctl = controller_actor_class().remote(cfg, tiny_sft, str(tmp_path / "run"))
    result = ray.get(ctl.run.remote(), timeout=900)
    ray.get(ctl.shutdown.remote())
    ray.kill(ctl)
    assert result["steps"] == 3
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("sleep_s" in ln and "wake_s" in ln for ln in lines)
    ids = [t for ln in (tmp_path / "run" / "ledger.jsonl").read_text().splitlines() for t in json.loads(ln)["task_ids"]]
    assert len(ids) == len(set(ids)) == 12
