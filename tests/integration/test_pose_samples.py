"""Several pose samples per text response (`rl.sampling.pose_samples` K), the head-only pose
gradient (`model.train.pose_loss: head`) and the Procrustes-aligned joint reward (with its
root-aligned share)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from poserft.common.body import BodyModel
from poserft.common.config import ConfigError, ModelConfig, RLConfig, load_config
from poserft.common.rotations import axis_angle_to_matrix, axis_angle_to_rot6d, matrix_to_rot6d
from poserft.common.schemas import POSE_RESPONSE, ROLLOUT_RECORD_SCHEMA, response_rows
from poserft.data.dataset import load_split
from poserft.learner.hygrpo import HyGRPOBatch, hygrpo_loss
from poserft.learner.learner import LearnerCore, add_advantages
from poserft.model.policy import gaussian_log_prob
from poserft.reward_service.rewards import joint_reward
from poserft.rollout_workers.worker import RolloutWorkerCore


def _rollout(ckpt, data, k: int) -> pa.Table:
    w = RolloutWorkerCore(str(ckpt), engine="hf", sampling={"max_tokens": 12, "seed": 0, "pose_samples": k}, threads=1)
    return w.generate(load_split(data, "train", task="image2pose").slice(0, 2), 3, seed=5)


def test_worker_draws_k_poses_for_each_valid_response(tiny_data, tiny_sft):
    one, four = _rollout(tiny_sft, tiny_data, 1), _rollout(tiny_sft, tiny_data, 4)
    assert four.schema == ROLLOUT_RECORD_SCHEMA
    untimed = lambda t: t.drop_columns(["generation_seconds"]).to_pylist()  # noqa: E731
    assert untimed(response_rows(four)) == untimed(one)  # sample 0 is the K = 1 rollout
    by_response: dict = {}
    for r in four.to_pylist():
        by_response.setdefault((r["task_id"], r["sample_index"]), []).append(r)
    assert len(by_response) == one.num_rows == 6
    valid = 0
    for rows in by_response.values():
        first = rows[0]
        if first["pose"] is None:
            assert len(rows) == 1 and first["pose_sample_index"] == 0
            continue
        valid += 1
        assert [r["pose_sample_index"] for r in rows] == [0, 1, 2, 3]
        assert all(r["response_tokens"] == first["response_tokens"] and r["mu"] == first["mu"] for r in rows)
        poses = np.array([r["pose"] for r in rows])
        assert len({tuple(p) for p in poses.round(6)}) == 4, "each pose sample needs its own noise"
        for r in rows:
            want = gaussian_log_prob(torch.tensor(r["pose"]), torch.tensor(r["mu"]), torch.tensor(r["log_std"]))
            assert r["pose_logprob"] == pytest.approx(float(want), abs=1e-3)
    assert valid, "the tiny SFT policy should emit <POSE> for image2pose prompts"


def _scored(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "group_id": g,
                "sample_index": s,
                "pose_sample_index": k,
                "task": "image2pose",
                "has_pose": h,
                "reward_total": t,
                "reward_joint": j,
            }
            for g, s, k, h, t, j in rows
        ]
    )


def test_advantages_use_response_means_for_tokens_and_every_pose_for_the_gaussian():
    # group a: 3 responses; responses 0 and 1 have two pose samples each, response 2 has no pose
    rows = [
        ("a", 0, 0, True, 1.5, 0.5),
        ("a", 0, 1, True, 1.9, 0.9),
        ("a", 1, 0, True, 1.2, 0.2),
        ("a", 1, 1, True, 1.4, 0.4),
        ("a", 2, 0, False, 0.0, 0.0),
        ("b", 0, 0, True, 1.0, 0.3),
        ("b", 1, 0, True, 1.0, 0.3),
    ]
    out = add_advantages(_scored(rows))
    resp_mean = np.array([1.7, 1.3, 0.0])
    f_ref = (resp_mean - resp_mean.mean()) / (resp_mean.std() + 1e-6)
    np.testing.assert_allclose(out["advantage_discrete"].to_numpy()[:5], f_ref[[0, 0, 1, 1, 2]], atol=1e-5)
    s = np.array([0.5, 0.9, 0.2, 0.4])  # the valid poses of group a
    np.testing.assert_allclose(out["advantage_continuous"].to_numpy()[:4], (s - s.mean()) / (s.std() + 1e-6), atol=1e-5)
    assert out["advantage_continuous"].to_numpy()[4] == 0.0  # no pose
    assert out["advantage_discrete"].to_numpy()[5:].tolist() == [0.0, 0.0]  # equal rewards: no gradient
    assert out["advantage_continuous"].to_numpy()[5:].tolist() == [0.0, 0.0]


def test_pose_part_may_have_more_rows_than_sequences():
    """Each sequence's pose rows index its head output: two copies of every pose give the same
    loss and the same gradient as one."""
    torch.manual_seed(0)
    b, t, d = 3, 5, 144
    logp, mu, log_std = torch.randn(b, t), torch.randn(b, d, requires_grad=True), torch.full((b, d), -1.0)
    pose = mu.detach() + 0.3 * torch.randn(b, d)
    common = dict(
        logp=logp, old_logp=logp, mask=torch.ones(b, t, dtype=torch.bool), adv_discrete=torch.tensor([1.0, -1.0, 0.0])
    )

    def loss(idx):
        batch = HyGRPOBatch(
            **common,
            pose=pose[idx],
            mu=mu[idx],
            log_std=log_std[idx],
            old_pose_logp=gaussian_log_prob(pose, mu, log_std).detach()[idx] - 0.05,
            valid=torch.ones(len(idx), dtype=torch.bool),
            adv_continuous=torch.tensor([0.5, -1.0, 0.7])[idx],
        )
        value, _ = hygrpo_loss(batch)
        (grad,) = torch.autograd.grad(value, mu)
        return float(value.detach()), grad

    once, twice = loss(torch.arange(b)), loss(torch.arange(b).repeat_interleave(2))
    assert twice[0] == pytest.approx(once[0], rel=1e-6)
    torch.testing.assert_close(twice[1], once[1])
    with pytest.raises(ValueError, match="adv_continuous must have shape"):
        hygrpo_loss(
            HyGRPOBatch(
                **common,
                pose=pose,
                mu=mu,
                log_std=log_std,
                old_pose_logp=torch.zeros(b),
                valid=torch.ones(b, dtype=torch.bool),
                adv_continuous=torch.zeros(b + 1),
            )
        )


def _pose_only_batch(policy, version: int) -> pa.Table:
    """Every response has the same total reward (no token gradient) but its poses differ in reward."""
    rng = np.random.default_rng(0)
    ids, resp = (
        policy.encode_prompt("Create the SMPL pose that matches this text. The left knee is bent."),
        policy.encode_response(POSE_RESPONSE),
    )
    rows = []
    for i in range(4):
        for k in range(3):
            rows.append(
                {
                    "task_id": "t0",
                    "group_id": f"t0@v{version}",
                    "sample_index": i,
                    "pose_sample_index": k,
                    "policy_version": version,
                    "worker_id": "w",
                    "prompt_tokens": ids,
                    "response_tokens": resp,
                    "token_logprobs": [-1.0] * len(resp),
                    "text": POSE_RESPONSE,
                    "has_pose": True,
                    "pose": (np.tile([1.0, 0, 0, 0, 1, 0], 24) + 0.1 * rng.normal(size=144)).tolist(),
                    "pose_logprob": -150.0,
                    "error": None,
                    "reward_format": 1.0,
                    "reward_semantic": float(rng.random()),
                    "reward_joint": None,
                    "reward_total": 2.0,
                    "task": "text2pose",
                    "image": None,
                    "target_pose": [0.0] * 72,
                }
            )
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("trunk", [True, False])
def test_pose_loss_trains_the_trunk_only_when_asked(tiny_sft, trunk):
    model = ModelConfig(train={"pose_loss": "all" if trunk else "head"})
    learner = LearnerCore(str(tiny_sft), RLConfig(lr=0.01, beta_c=0.0, updates_per_batch=1), threads=1, model=model)
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    metrics = learner.train_step(_pose_only_batch(learner.policy, learner.version))
    assert metrics["rows"] == 12 and metrics["responses"] == 4 and metrics["pose_valid_frac"] == 1.0
    after = learner.policy.state_dict()
    moved = {part for k in before if not torch.equal(before[k], after[k]) for part in [k.split(".")[0]]}
    assert "head" in moved
    assert ("lm" in moved) == trunk, f"parts moved: {sorted(moved)}"


def test_procrustes_joint_reward_ignores_the_global_orientation():
    body = BodyModel()
    aa = torch.zeros(2, 24, 3, dtype=torch.float64)
    aa[:, 18] = torch.tensor([0.0, 0.0, 1.2])  # a bent elbow
    target = body.forward_kinematics(axis_angle_to_rot6d(aa).reshape(2, 144))
    turned = axis_angle_to_rot6d(aa).reshape(2, 24, 6).clone()
    turned[:, 0] = matrix_to_rot6d(
        axis_angle_to_matrix(torch.tensor([[0.0, 2.0, 0.0], [0.9, 0.0, 0.0]], dtype=torch.float64))
    )
    turned = turned.reshape(2, 144)
    assert np.allclose(joint_reward(body, turned, target, align="procrustes"), 1.0, atol=1e-5)
    assert (joint_reward(body, turned, target, align="root") < 0.9).all()
    with pytest.raises(ValueError, match="alignment must be one of"):
        joint_reward(body, turned, target, align="pelvis")


def _umeyama_error(pred: np.ndarray, target: np.ndarray) -> float:
    """Reference: mean joint error after the best similarity transform (numpy, written here)."""
    p, t = pred - pred.mean(0), target - target.mean(0)
    u, s, vt = np.linalg.svd(t.T @ p)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot, scale = u @ d @ vt, (s * np.diag(d)).sum() / (p**2).sum()
    return float(np.linalg.norm(scale * p @ rot.T - t, axis=1).mean())


@pytest.mark.parametrize("share", [0.0, 0.17, 0.5, 1.0])
def test_joint_root_share_mixes_the_two_errors(share):
    body, g = BodyModel(), torch.Generator().manual_seed(3)
    aa = 0.4 * torch.randn(4, 24, 3, generator=g, dtype=torch.float64)
    target = body.forward_kinematics(axis_angle_to_rot6d(aa).reshape(4, 144))
    pred6 = axis_angle_to_rot6d(aa + 0.3 * torch.randn(4, 24, 3, generator=g, dtype=torch.float64)).reshape(4, 144)
    pred = body.forward_kinematics(pred6).numpy()
    tau = 0.1
    expected = []
    for pj, tj in zip(pred, target.numpy()):
        root = np.linalg.norm((pj - pj[0]) - (tj - tj[0]), axis=1).mean()
        err = (1 - share) * _umeyama_error(pj, tj) + share * root
        expected.append(1 / (1 + err / tau))
    got = joint_reward(body, pred6, target, tau, align="procrustes", root_share=share)
    assert np.allclose(got, expected, rtol=1e-5)
    if share == 1.0:
        assert np.allclose(got, joint_reward(body, pred6, target, tau, align="root"), rtol=1e-6)
    with pytest.raises(ValueError, match="root_share must be in"):
        joint_reward(body, pred6, target, tau, align="procrustes", root_share=1.5)


def test_reward_settings_from_config_carry_every_joint_option():
    from poserft.reward_service.rewards import RewardSettings

    cfg = load_config(
        None, ["rewards.joint_align=procrustes", "rewards.joint_root_share=0.25", "rewards.joint_tau_m=0.2"]
    )
    s = RewardSettings.from_config(cfg, retriever_dir="elsewhere")
    assert (s.joint_align, s.joint_root_share, s.joint_tau_m, s.retriever_dir) == ("procrustes", 0.25, 0.2, "elsewhere")
    for bad in ("-0.1", "1.5", "half"):
        with pytest.raises(ConfigError, match="rewards.joint_root_share"):
            load_config(None, [f"rewards.joint_root_share={bad}"])


def test_pose_samples_and_alignment_are_validated():
    assert (
        load_config(None, ["rl.sampling.pose_samples=16", "rewards.joint_align=procrustes"]).rl.sampling.pose_samples
        == 16
    )
    for bad in ("0", "-1", "2000", "many"):
        with pytest.raises(ConfigError, match="rl.sampling.pose_samples"):
            load_config(None, [f"rl.sampling.pose_samples={bad}"])
    with pytest.raises(ConfigError, match="rewards.joint_align"):
        load_config(None, ["rewards.joint_align=pelvis"])
