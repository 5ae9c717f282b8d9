"""`rl.sampling.pose_temperature` T: the rollout pose is drawn from N(mu, (T sigma)^2) and the
learner scores poses under the same Gaussian."""

import math

import numpy as np
import pytest
import torch

from poserft.common.config import ConfigError, RLConfig, load_config
from poserft.data.dataset import load_split
from poserft.learner.learner import LearnerCore
from poserft.model.policy import gaussian_log_prob
from poserft.rollout_workers.worker import RolloutWorkerCore


def _rollout(ckpt, data, temperature):
    w = RolloutWorkerCore(
        str(ckpt), engine="hf", sampling={"max_tokens": 12, "seed": 0, "pose_temperature": temperature}, threads=1
    )
    return w.generate(load_split(data, "train", task="text2pose").slice(0, 2), 3).to_pylist()


def test_worker_samples_the_tempered_gaussian_and_records_its_log_prob(tiny_data, tiny_sft):
    plain, cold = _rollout(tiny_sft, tiny_data, 1.0), _rollout(tiny_sft, tiny_data, 0.25)
    checked = 0
    for a, b in zip(plain, cold):
        assert a["response_tokens"] == b["response_tokens"]  # the text does not depend on T
        if not b["has_pose"] or b["pose"] is None:
            continue
        mu, pose_a, pose_b = (np.array(x) for x in (a["mu"], a["pose"], b["pose"]))
        np.testing.assert_allclose(pose_b - mu, 0.25 * (pose_a - mu), atol=1e-6)  # same noise, a quarter of the std
        np.testing.assert_allclose(b["log_std"], np.array(a["log_std"]) + math.log(0.25), atol=1e-6)
        want = gaussian_log_prob(torch.tensor(b["pose"]), torch.tensor(b["mu"]), torch.tensor(b["log_std"]))
        assert b["pose_logprob"] == pytest.approx(float(want), abs=1e-3)
        checked += 1
    assert checked, "the tiny SFT policy should emit <POSE> for some text2pose samples"


def test_learner_uses_the_same_temperature(tiny_sft):
    learner = LearnerCore(str(tiny_sft), RLConfig(beta_c=0, sampling={"pose_temperature": 0.5}), threads=1)
    out = {"mu": torch.zeros(2, 144), "log_std": torch.full((2, 144), -1.0)}
    assert torch.allclose(learner._tempered(out)["log_std"], torch.full((2, 144), -1.0 + math.log(0.5)))
    assert learner._tempered(out)["mu"] is out["mu"]


def test_temperature_must_be_in_0_1():
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="rl.sampling.pose_temperature"):
            load_config(None, [f"rl.sampling.pose_temperature={bad}"])
