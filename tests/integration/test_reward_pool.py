"""Integration: the reward pool on a real local Ray cluster, with a worker killed mid-batch."""

import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from poserft.common.body import BodyModel
from poserft.common.rotations import axis_angle_to_rot6d
from poserft.common.schemas import POSE_RESPONSE
from poserft.reward_service.pool import RewardPool
from poserft.reward_service.rewards import RewardScorer, RewardSettings

SETTINGS = RewardSettings(
    weights={
        "image2pose": {"format": 1.0, "text_similarity": 0.5, "joint": 1.0},
        "pose2text": {"format": 1.0, "text_similarity": 1.0},
    }
)


def _rows(n):
    body = BodyModel()
    g = torch.Generator().manual_seed(0)
    aa = torch.randn(n, 24, 3, generator=g, dtype=torch.float64) * 0.4
    target = body.forward_kinematics(torch.randn(n, 24, 3, generator=g, dtype=torch.float64) * 0.4)
    six = axis_angle_to_rot6d(aa).reshape(n, 144)
    rows = []
    for i in range(n):
        task = "image2pose" if i % 3 else "pose2text"
        rows.append(
            {
                "id": f"r{i}",
                "task": task,
                "text": POSE_RESPONSE if task == "image2pose" else f"The person bends joint {i}.",
                "has_pose": task == "image2pose",
                "pose": six[i].tolist() if task == "image2pose" else None,
                "caption": "c",
                "reference_text": POSE_RESPONSE if task == "image2pose" else "The person bends a knee.",
                "target_joints": target[i].reshape(72).tolist(),
            }
        )
    return pa.Table.from_pylist(rows)


def test_pool_scores_like_in_process(ray_local):
    table = _rows(40)
    pool = RewardPool(SETTINGS, num_workers=2, batch_size=8, num_cpus=0.5)
    try:
        out = pool.score(table)
    finally:
        pool.shutdown()
    ref = RewardScorer(SETTINGS).score(table)
    assert out["id"].to_pylist() == table["id"].to_pylist()
    assert np.allclose(out["reward_total"].to_numpy(), ref["reward_total"].to_numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="empty batch"):
        RewardPool.score(pool, table.slice(0, 0))


def test_killed_worker_mid_batch_every_row_scored_once(ray_local):
    table = _rows(64)
    pool = RewardPool(SETTINGS, num_workers=2, batch_size=8, num_cpus=0.5, timeout_s=60)
    victim = pool.worker_info[0]["pid"]

    def kill_soon():
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        out = pool.score(table, delay_s=0.5)  # 8 chunks x 0.5 s over 2 workers: the kill lands mid-batch
    finally:
        killer.join()
    assert pool.stats.worker_failures >= 1 and pool.stats.retries >= 1
    ids = out["id"].to_pylist()
    assert ids == table["id"].to_pylist() and len(set(ids)) == len(ids)
    assert out["reward_error"].null_count == out.num_rows
    ref = RewardScorer(SETTINGS).score(table)
    assert np.allclose(out["reward_total"].to_numpy(), ref["reward_total"].to_numpy(), atol=1e-5)
    # The killed worker was restarted by Ray and takes work again.
    info = pool.wait_ready()[0]
    assert info["pid"] != victim
    pool.score(table.slice(0, 8))
    pool.shutdown()


def test_timeout_kills_restarts_and_marks_rows(ray_local):
    table = _rows(8)
    pool = RewardPool(SETTINGS, num_workers=1, batch_size=8, num_cpus=0.5, timeout_s=1.0, max_attempts=2)
    try:
        out = pool.score(table, delay_s=3.0)
    finally:
        pool.shutdown()
    assert pool.stats.timeouts == 2
    errors = out["reward_error"].to_pylist()
    assert all(e and "timed out" in e for e in errors) and out["reward_total"].null_count == 8
