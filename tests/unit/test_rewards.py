import numpy as np
import pyarrow as pa
import pytest
import torch

from poserft.common.body import BodyModel
from poserft.common.rotations import axis_angle_to_rot6d
from poserft.common.schemas import POSE_RESPONSE
from poserft.reward_service.retriever import Retriever, RetrieverConfig
from poserft.reward_service.rewards import (
    RewardScorer,
    RewardSettings,
    TextEmbedder,
    format_reward,
    joint_reward,
    text_similarity,
)


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder()


def _pose(seed, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 24, 3, generator=g, dtype=torch.float64) * scale


def test_format_reward_hand_values():
    texts = [
        POSE_RESPONSE,
        "The SMPL pose of this person is <POSE> .",
        "The SMPL pose of this person is <POSE><POSE>.",
        "The SMPL pose of this person is.",
        "pose <POSE>",
        "The person stands with the arms raised.",
        "The person has <POSE> arms.",
    ]
    tasks = ["text2pose", "image2pose", "text2pose", "image2pose", "text2pose", "pose2text", "pose2text"]
    assert format_reward(texts, tasks).tolist() == [1, 1, 0, 0, 0, 1, 0]


def test_joint_reward_identical_pose_is_max_and_decreases():
    body = BodyModel()
    aa = _pose(0)
    target = body.forward_kinematics(aa)
    six = axis_angle_to_rot6d(aa).reshape(1, 144)
    assert joint_reward(body, six, target)[0] == pytest.approx(1.0, abs=1e-6)
    # A known error: translate every non-root joint by 10 cm -> err = 0.1 * 23/24 m.
    shifted = target.clone()
    shifted[:, 1:, 0] += 0.1
    expected = 1 / (1 + (0.1 * 23 / 24) / 0.1)
    assert joint_reward(body, six, shifted, tau_m=0.1)[0] == pytest.approx(expected, rel=1e-5)
    far = body.forward_kinematics(_pose(1, scale=1.0))
    assert joint_reward(body, six, far)[0] < joint_reward(body, six, target)[0]


def test_text_similarity_identical_is_one(embedder):
    s = text_similarity(embedder, ["the left knee is bent", "a cat"], ["the left knee is bent", "the arms are raised"])
    assert s[0] == pytest.approx(1.0, abs=1e-5) and s[1] < 0.5


def _batch(rows):
    return pa.Table.from_pylist(rows)


def _row(
    task, text=POSE_RESPONSE, pose=None, has_pose=True, target=None, caption="the left knee is bent.", ref=POSE_RESPONSE
):
    return {
        "task": task,
        "text": text,
        "has_pose": has_pose,
        "pose": pose,
        "caption": caption,
        "reference_text": ref,
        "target_joints": target,
    }


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, embedder):
    folder = tmp_path_factory.mktemp("retr")
    torch.manual_seed(0)
    Retriever(RetrieverConfig()).save(folder)
    return RewardScorer(RewardSettings(retriever_dir=str(folder)), text_embedder=embedder)


def test_scorer_components_and_total(scorer):
    body = BodyModel()
    aa = _pose(3)
    six = axis_angle_to_rot6d(aa).reshape(144).tolist()
    target = body.forward_kinematics(aa).reshape(72).tolist()
    out = scorer.score(
        _batch(
            [
                _row("image2pose", pose=six, target=target),
                _row("text2pose", pose=six, target=target),
                _row("text2pose", text="no pose here", pose=None, has_pose=False, target=target),
                _row(
                    "pose2text",
                    text="The left knee is bent.",
                    pose=None,
                    has_pose=False,
                    target=target,
                    ref="the left knee is bent.",
                ),
            ]
        )
    ).to_pydict()
    assert out["reward_joint"][0] == pytest.approx(1.0, abs=1e-5)
    assert out["reward_format"][:4] == [1.0, 1.0, 0.0, 1.0]
    assert out["reward_joint"][1] is None and out["reward_semantic"][0] is None  # not this task's reward
    assert out["reward_semantic"][2] == -1.0  # no pose: the floor, not an error
    retr = scorer.retriever
    expected = float((retr.embed_text(["the left knee is bent."]) * retr.embed_pose(torch.tensor([six]))).sum())
    assert out["reward_semantic"][1] == pytest.approx(expected, abs=1e-5)
    w = scorer.settings.weights["image2pose"]
    assert out["reward_total"][0] == pytest.approx(
        w["format"] + w["text_similarity"] * out["reward_text_similarity"][0] + w["joint"] * 1.0, abs=1e-5
    )
    assert out["reward_error"] == [None] * 4


def test_nan_pose_is_rejected_per_row(scorer):
    six = [0.0] * 144
    six[5] = float("nan")
    ok = axis_angle_to_rot6d(_pose(4)).reshape(144).tolist()
    target = [0.0] * 72
    out = scorer.score(
        _batch(
            [
                _row("image2pose", pose=six, target=target),
                _row("image2pose", pose=ok, target=target),
                _row("image2pose", pose=ok[:10], target=target),
                _row("dance", pose=ok, target=target),
            ]
        )
    ).to_pydict()
    assert "NaN" in out["reward_error"][0] and out["reward_total"][0] is None and out["reward_joint"][0] is None
    assert out["reward_error"][1] is None and out["reward_total"][1] is not None
    assert "144" in out["reward_error"][2]
    assert "unknown task" in out["reward_error"][3]


def test_missing_column_and_bad_weights(scorer, embedder):
    with pytest.raises(ValueError, match="missing columns"):
        scorer.score(pa.table({"task": ["text2pose"]}))
    with pytest.raises(ValueError, match="unknown components"):
        RewardScorer(RewardSettings(weights={"text2pose": {"fromat": 1.0}}), text_embedder=embedder)


def test_semantic_without_retriever_is_an_error_not_zero(embedder):
    s = RewardScorer(RewardSettings(), text_embedder=embedder)
    out = s.score(_batch([_row("text2pose", pose=[1.0, 0, 0, 0, 1, 0] * 24, target=[0.0] * 72)])).to_pydict()
    assert "retriever" in out["reward_error"][0] and out["reward_total"][0] is None


def _turned_about_vertical(aa: torch.Tensor, angle: float) -> torch.Tensor:
    """The pose with its global orientation turned by `angle` about the vertical (y) axis."""
    from poserft.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    c, s = torch.cos(torch.tensor(angle)), torch.sin(torch.tensor(angle))
    turn = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=aa.dtype)
    out = aa.clone()
    out[:, 0] = matrix_to_axis_angle(turn @ axis_angle_to_matrix(aa[:, 0]))
    return out


def test_text2pose_joint_term_ignores_the_facing_direction(embedder, scorer):
    """A text2pose joint term (rewards.weights.text2pose.joint) is yaw-aligned: the same pose
    facing another way scores 1, while image2pose keeps its root alignment and a tilted pose
    scores below 1 for both."""
    body = BodyModel()
    aa = _pose(5)
    target = body.forward_kinematics(aa).reshape(72).tolist()
    turned = axis_angle_to_rot6d(_turned_about_vertical(aa, 2.0)).reshape(144).tolist()
    tilted = aa.clone()
    tilted[:, 0, 0] += 1.0  # about the x axis: leaning, not turning
    tilted6 = axis_angle_to_rot6d(tilted).reshape(144).tolist()
    weights = {"text2pose": {"format": 1.0, "semantic": 1.0, "joint": 0.5}, "image2pose": {"joint": 1.0}}
    s = RewardScorer(
        RewardSettings(weights=weights, retriever_dir=scorer.settings.retriever_dir), text_embedder=embedder
    )
    rows = [
        _row("text2pose", pose=turned, target=target),
        _row("image2pose", pose=turned, target=target),
        _row("text2pose", pose=tilted6, target=target),
    ]
    out = s.score(_batch(rows)).to_pydict()
    assert out["reward_joint"][0] == pytest.approx(1.0, abs=1e-5)
    assert out["reward_joint"][1] < 0.9 and out["reward_joint"][2] < 0.9
    assert out["reward_total"][0] == pytest.approx(1.0 + out["reward_semantic"][0] + 0.5, abs=1e-5)


def test_semantic_text_target_judges_against_the_target_pose_description(embedder, scorer):
    """With rewards.semantic_text: target, a text2pose pose is compared with the captioner's
    description of the row's target pose, whatever the prompt said; a row without target joints
    keeps its prompt's description, and the same target always gets the same description."""
    body = BodyModel()
    aa, other = _pose(7), _pose(8)
    six = axis_angle_to_rot6d(aa).reshape(144).tolist()
    target = body.forward_kinematics(aa).reshape(72).tolist()
    s = RewardScorer(
        RewardSettings(retriever_dir=scorer.settings.retriever_dir, semantic_text="target"), text_embedder=embedder
    )
    rows = [
        _row("text2pose", pose=six, target=target, caption="a person lunging."),
        _row("text2pose", pose=six, target=target, caption="someone sitting cross-legged."),
        _row("text2pose", pose=six, target=None, caption="a person lunging."),
    ]
    out = s.score(_batch(rows)).to_pydict()
    assert out["reward_error"] == [None] * 3
    retr = scorer.retriever
    pose = torch.tensor([six])
    described = s.target_captions(np.asarray(target).reshape(1, 24, 3))[0]
    assert described != "a person lunging." and len(described.split()) > 12
    by_target = float((retr.embed_text([described]) * retr.embed_pose(pose)).sum())
    by_prompt = float((retr.embed_text(["a person lunging."]) * retr.embed_pose(pose)).sum())
    assert out["reward_semantic"][0] == pytest.approx(by_target, abs=1e-5)
    assert out["reward_semantic"][1] == pytest.approx(by_target, abs=1e-5)  # the prompt does not matter
    assert out["reward_semantic"][2] == pytest.approx(by_prompt, abs=1e-5)
    assert by_target != pytest.approx(by_prompt, abs=1e-4)
    # The same target gets the same description again; another target gets another one.
    other_joints = body.forward_kinematics(other).reshape(1, 24, 3).numpy()
    again = s.target_captions(np.concatenate([np.asarray(target).reshape(1, 24, 3), other_joints]))
    assert again[0] == described and again[1] != described
    # The prompt's description stays the default.
    assert scorer.settings.semantic_text == "prompt"
    with pytest.raises(ValueError, match="semantic_text"):
        RewardScorer(RewardSettings(semantic_text="caption"), text_embedder=embedder)
