"""`poserft plan` and the plan preflight of `train` / `submit`, as a user runs them (subprocess)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

FULL_7B_FP32 = """\
model:
  preset: llava-7b
  lora: {enabled: false}
rl:
  beta: 0.01
  micro_batch_size: 1
  rollout: {num_workers: 1, tensor_parallel_size: 2, num_gpus: 2}
  learner: {num_gpus: 1}
"""


def _poserft(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "poserft.cli", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_plan_accepts_every_shipped_config(path):
    res = _poserft("plan", "--config", str(path))
    assert res.returncode == 0, res.stderr
    assert "every role fits" in res.stdout and "learner" in res.stdout and "rollout worker" in res.stdout


def test_plan_refuses_a_full_7b_fp32_fine_tune(tmp_path):
    cfg = tmp_path / "full7b.yaml"
    cfg.write_text(FULL_7B_FP32)
    res = _poserft("plan", "--config", str(cfg))
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poserft: error: the learner needs about")
    total = float(err[0].split("needs about ")[1].split(" GB")[0])
    assert 130 < total < 160  # 28 weights + 28 gradients + 57 AdamW + 28 reference + activations
    assert "has 80.0 GB" in err[0] and "model.lora" in err[0]


def test_plan_refuses_a_rollout_share_that_leaves_no_room_for_the_prefill_copy(tmp_path):
    cfg = tmp_path / "share.yaml"
    cfg.write_text(
        "model: {preset: llava-7b, lora: {enabled: true}}\nrl:\n  micro_batch_size: 1\n  learner: {num_gpus: 1}\n"
        "  rollout: {tensor_parallel_size: 2, num_gpus: 2, gpu_memory_utilization: 0.95}\n"
    )
    res = _poserft("plan", "--config", str(cfg))
    assert res.returncode == 2 and "rollout worker" in res.stderr and "gpu_memory_utilization" in res.stderr


def test_train_and_submit_run_the_plan_first(tmp_path):
    cfg = tmp_path / "full7b.yaml"
    cfg.write_text(FULL_7B_FP32)
    sub = _poserft("submit", "--address", "http://127.0.0.1:1", "--config", str(cfg), "--init", str(tmp_path))
    assert sub.returncode == 2 and "the learner needs about" in sub.stderr, sub.stderr
    assert len(sub.stderr.strip().splitlines()) == 1
