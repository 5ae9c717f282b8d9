"""`rl.anchor`: the supervised pose term mixed into the RL updates (poserft.learner.anchor)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from poserft.common.config import ConfigError, ModelConfig, RLConfig, load_config
from poserft.learner.learner import LearnerCore
from tests.integration.test_pose_samples import _pose_only_batch


def _flat_batch(policy, version: int) -> pa.Table:
    """`_pose_only_batch` with one semantic reward for all: every advantage is 0, so only the
    anchor (or a KL term) can move the weights."""
    table = _pose_only_batch(policy, version)
    return table.set_column(
        table.schema.get_field_index("reward_semantic"), "reward_semantic", pa.array([0.5] * table.num_rows)
    )


def _learner(tiny_sft, tiny_data, weight: float, lr: float = 1e-4) -> LearnerCore:
    settings = RLConfig(lr=lr, beta_c=0.0, updates_per_batch=1, anchor={"weight": weight, "rows": 16})
    model = ModelConfig(train={"pose_loss": "head"})
    return LearnerCore(str(tiny_sft), settings, threads=1, model=model, anchor_data=str(tiny_data) if weight else None)


def test_an_update_lowers_the_joint_error_of_its_anchor_rows(tiny_sft, tiny_data):
    """On a batch without advantages the update is the anchor's alone: a small step down its
    gradient lowers the error of the rows it drew (16 of the tiny set's text2pose rows)."""
    learner = _learner(tiny_sft, tiny_data, 1.0)
    anchor = learner.anchor
    assert set(anchor.ex.tasks) == {"text2pose"}
    rows = anchor.draw(learner.version, 0, 0)
    with torch.no_grad():
        before = float(anchor.loss(learner.policy, rows, detach_hidden=True))
    weights = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    metrics = learner.train_step(_flat_batch(learner.policy, learner.version))
    assert metrics["anchor_joint_m"] == pytest.approx(before, rel=1e-4)
    with torch.no_grad():
        after = float(anchor.loss(learner.policy, rows, detach_hidden=True))
    assert after < before, f"the anchor should lower the joint error of its rows: {before:.5f} -> {after:.5f}"
    moved = {k.split(".")[0] for k, v in learner.policy.state_dict().items() if not torch.equal(v, weights[k])}
    assert moved == {"head"}, f"with model.train.pose_loss head only the head learns from the anchor: {moved}"


def test_without_the_anchor_a_flat_batch_moves_nothing(tiny_sft, tiny_data):
    learner = _learner(tiny_sft, tiny_data, 0.0)
    assert learner.anchor is None
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    metrics = learner.train_step(_flat_batch(learner.policy, learner.version))
    assert "anchor_joint_m" not in metrics
    assert all(torch.equal(before[k], v) for k, v in learner.policy.state_dict().items())


def test_rows_are_drawn_by_step_update_and_rank(tiny_sft, tiny_data):
    anchor = _learner(tiny_sft, tiny_data, 1.0).anchor
    assert np.array_equal(anchor.draw(3, 0, 0), anchor.draw(3, 0, 0))  # a resumed run draws the same rows
    assert not np.array_equal(anchor.draw(3, 0, 0), anchor.draw(4, 0, 0))
    assert not np.array_equal(anchor.draw(3, 0, 0), anchor.draw(3, 1, 0))
    assert not np.array_equal(anchor.draw(3, 0, 0), anchor.draw(3, 0, 1))
    assert len(set(anchor.draw(3, 0, 0).tolist())) == 16


def test_anchor_settings_are_checked(tiny_sft):
    with pytest.raises(ConfigError, match="rl.anchor.tasks"):
        load_config(None, ["rl.anchor.tasks=[]"])
    with pytest.raises(ConfigError, match="rl.anchor.weight"):
        load_config(None, ["rl.anchor.weight=-1"])
    with pytest.raises(ValueError, match="needs the training data"):
        LearnerCore(str(tiny_sft), RLConfig(beta_c=0.0, anchor={"weight": 1.0}), threads=1)


def test_word_path_rows_skip_the_lm_and_give_the_same_means(tiny_data, tmp_path):
    """With the head's word path a text2pose row's pose mean comes from its description's words
    alone, so the anchor reads it without running the LM: the same numbers as the full forward."""
    from poserft.learner.sft import add_words_path, batch_inputs
    from poserft.model.checkpoint import init_policy, save_policy

    tower = init_policy("tiny", tiny_data, seed=0, text_tower="minilm-wordemb", text_tokens=2, text_head_skip=True)
    learner = _learner(save_policy(tower, tmp_path / "init"), tiny_data, 1.0)
    policy, anchor = learner.policy, learner.anchor
    rows = anchor.draw(0, 0, 0)

    def full():
        return policy(batch_inputs(policy, anchor.ex, rows))["mu"]

    with torch.no_grad():  # without the path the LM's hidden state matters: the full forward
        assert torch.allclose(anchor.pose_means(policy, rows, detach_hidden=True), full(), atol=1e-5)
        add_words_path(policy, 16)
        fast = anchor.pose_means(policy, rows, detach_hidden=True)
        assert torch.allclose(fast, full(), atol=1e-5)
        policy.head.words[3].bias.add_(1.0)  # the fast path reads the path's weights
        assert not torch.allclose(anchor.pose_means(policy, rows, detach_hidden=True), fast, atol=1e-3)


def test_max_words_keeps_the_short_descriptions_only(tiny_sft, tiny_data):
    """rl.anchor.max_words: the anchor reads the text2pose rows RL skips under
    rl.text2pose_min_words (descriptions of at most that many words); with none such, it is off."""
    from poserft.data.mixture import load_mixture
    from poserft.learner.anchor import NoShortRows, PoseAnchor
    from poserft.model.checkpoint import load_policy

    policy = load_policy(tiny_sft)
    words = [len(c.split()) for c in load_mixture(str(tiny_data), "train", task="text2pose")["caption"].to_pylist()]
    bound = sorted(words)[len(words) // 2]  # about half the rows
    short = PoseAnchor(policy, str(tiny_data), ["text2pose"], 8, 0, max_words=bound)
    assert len(short.ex) == sum(w <= bound for w in words) < len(words)
    with pytest.raises(NoShortRows, match="has a description of at most"):
        PoseAnchor(policy, str(tiny_data), ["text2pose"], 8, 0, max_words=min(words) - 1)
    # ... which the learner takes as "nothing to hold": the anchor is off, the run goes on
    settings = RLConfig(beta_c=0.0, anchor={"weight": 1.0, "max_words": min(words) - 1})
    assert LearnerCore(str(tiny_sft), settings, threads=1, anchor_data=str(tiny_data)).anchor is None


def test_reference_target_holds_the_rows_where_sft_left_them(tiny_sft, tiny_data):
    """rl.anchor.target reference: the rows are held to the frozen SFT policy's pose means, not to
    the data. At the start the policy is the reference, so the term is 0 and a flat batch moves
    nothing; once the head has drifted, an update brings the rows' poses back toward it."""
    settings = RLConfig(
        lr=1e-4, beta_c=0.0, updates_per_batch=1, anchor={"weight": 1.0, "rows": 16, "target": "reference"}
    )
    learner = LearnerCore(
        str(tiny_sft), settings, threads=1, model=ModelConfig(train={"pose_loss": "head"}), anchor_data=str(tiny_data)
    )
    assert learner.ref is not None, "the reference target needs the frozen reference even with beta_c 0"
    anchor, rows = learner.anchor, learner.anchor.draw(learner.version, 0, 0)
    with torch.no_grad():
        assert float(anchor.loss(learner.policy, rows, detach_hidden=True, reference=learner.ref)) == pytest.approx(
            0, abs=1e-6
        )
        to_data = float(anchor.loss(learner.policy, rows, detach_hidden=True))
    assert to_data > 1e-3, "the SFT's poses are not the data's, so the two targets must differ"
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    learner.train_step(_flat_batch(learner.policy, learner.version))
    assert all(torch.equal(before[k], v) for k, v in learner.policy.state_dict().items()), "nothing to hold yet"

    rows = anchor.draw(learner.version, 0, 0)  # the next step's rows
    with torch.no_grad():  # the head drifts (as RL's updates on other rows move it)
        learner.policy.head.mean[-1].bias.add_(0.05)
        drifted = float(anchor.loss(learner.policy, rows, detach_hidden=True, reference=learner.ref))
    assert drifted > 1e-3
    metrics = learner.train_step(_flat_batch(learner.policy, learner.version))
    assert metrics["anchor_joint_m"] == pytest.approx(drifted, rel=1e-4)
    with torch.no_grad():
        after = float(anchor.loss(learner.policy, rows, detach_hidden=True, reference=learner.ref))
    assert after < drifted, f"the update should bring the rows back toward the reference: {drifted:.5f} -> {after:.5f}"
