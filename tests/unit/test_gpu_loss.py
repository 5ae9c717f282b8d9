"""The HyGRPO loss keeps every tensor on its inputs' device (finding 2 of docs/gpu.md).

The `meta` device runs tensor ops without storage: a tensor created on the CPU inside the loss
(the old empty-V summary did) meets the meta tensors in `torch.stack` and raises, as it would
against CUDA tensors on a GPU learner."""

import pytest
import torch

from poserft.common.schemas import POSE_DIM
from poserft.learner.hygrpo import HyGRPOBatch, hygrpo_terms

SETTINGS = {"clip_eps": 0.2, "clip_eps_pose": 0.2, "lambda_c": 1.0, "beta": 0.01, "beta_c": 0.01}


def _batch(device: str, dtype: torch.dtype, n_valid: int) -> HyGRPOBatch:
    b, t, p = 4, 6, 5
    f = {"device": device, "dtype": dtype}
    return HyGRPOBatch(
        logp=torch.zeros(b, t, **f),
        old_logp=torch.zeros(b, t, **f),
        mask=torch.ones(b, t, dtype=torch.bool, device=device),
        adv_discrete=torch.zeros(b, **f),
        ref_logp=torch.zeros(b, t, **f),
        token_entropy=torch.zeros(b, t, **f),
        pose=torch.zeros(p, POSE_DIM, **f),
        mu=torch.zeros(p, POSE_DIM, **f),
        log_std=torch.zeros(p, POSE_DIM, **f),
        old_pose_logp=torch.zeros(p, **f),
        valid=torch.arange(p, device=device) < n_valid,
        adv_continuous=torch.zeros(p, **f),
        ref_mu=torch.zeros(p, POSE_DIM, **f),
        ref_log_std=torch.zeros(p, POSE_DIM, **f),
    )


@pytest.mark.parametrize("n_valid", [0, 3], ids=["no valid pose", "some valid poses"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("continuous", [True, False], ids=["hygrpo", "grpo"])
def test_loss_stays_on_the_input_device(n_valid, dtype, continuous):
    loss, stats = hygrpo_terms(_batch("meta", dtype, n_valid), continuous=continuous, **SETTINGS)
    assert loss.device.type == "meta"
    off = {k: v.device.type for k, v in stats.items() if v.device.type != "meta"}
    assert not off, f"stats created off the input device: {off}"
    stacked = torch.stack(
        [v.detach().double().reshape(()) for v in stats.values()]
    )  # what hygrpo_loss does before .cpu()
    assert stacked.shape == (len(stats),) and ("adv_continuous_mean" in stats) == continuous


def test_empty_pose_summary_is_zero_on_cpu():
    from poserft.learner.hygrpo import hygrpo_loss

    _, stats = hygrpo_loss(_batch("cpu", torch.float32, 0), continuous=True, **SETTINGS)
    assert stats["adv_continuous_mean"] == stats["adv_continuous_std"] == stats["adv_continuous_absmax"] == 0.0
    assert stats["pose_valid_frac"] == 0.0
