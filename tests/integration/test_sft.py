"""SFT: resume reaches the same parameters; checkpoints fail clearly when incomplete."""

import shutil

import pytest
import torch

from poserft.common.config import SFTConfig
from poserft.learner.sft import batch_indices, run_sft
from poserft.model.checkpoint import CheckpointError, init_policy, load_policy

SETTINGS = SFTConfig(
    align_steps=2, steps=6, batch_size=4, val_every=100, ckpt_every=100, warmup_steps=2, val_rows=8, threads=1
)


def test_resume_gives_the_same_parameters(tiny_data, tiny_ckpt, tmp_path):
    full = run_sft(tiny_ckpt, tiny_data, tmp_path / "full", SETTINGS, progress=False)
    part = run_sft(tiny_ckpt, tiny_data, tmp_path / "part", SETTINGS, progress=False, stop_after=3)
    assert part["stopped"] and part["step"] == 3
    resumed = run_sft(tiny_ckpt, tiny_data, tmp_path / "part", SETTINGS, progress=False)
    assert (
        resumed["step"] == full["step"] == SETTINGS.align_steps + SETTINGS.steps
    )  # the stop at 3 fell in the SFT phase
    a = load_policy(full["policy"]).state_dict()
    b = load_policy(resumed["policy"]).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_grouped_weighted_batches(tiny_data, tiny_ckpt, tmp_path):
    grouped = SETTINGS.model_copy(update={"group_by_length": True, "task_weights": {"text2pose": 2.0}})
    full = run_sft(tiny_ckpt, tiny_data, tmp_path / "full", grouped, progress=False)
    run_sft(tiny_ckpt, tiny_data, tmp_path / "part", grouped, progress=False, stop_after=5)
    resumed = run_sft(tiny_ckpt, tiny_data, tmp_path / "part", grouped, progress=False)
    a, b = load_policy(full["policy"]).state_dict(), load_policy(resumed["policy"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = load_policy(run_sft(tiny_ckpt, tiny_data, tmp_path / "plain", SETTINGS, progress=False)["policy"])
    assert not all(torch.equal(a[k], v) for k, v in plain.state_dict().items())  # another batch order
    with pytest.raises(ValueError, match="other settings.*group_by_length"):
        run_sft(tiny_ckpt, tiny_data, tmp_path / "part", SETTINGS, progress=False)


def test_data_position_is_a_function_of_step():
    assert (batch_indices(10, 4, 0, 2) == batch_indices(10, 4, 0, 2)).all()
    seen = [int(i) for s in range(5) for i in batch_indices(10, 4, 0, s)]
    assert sorted(seen[:10]) == list(range(10))  # the first epoch visits every row once


def test_resume_with_other_settings_is_refused(tiny_data, tiny_ckpt, tmp_path):
    run_sft(tiny_ckpt, tiny_data, tmp_path / "r", SETTINGS, progress=False, stop_after=1)
    with pytest.raises(ValueError, match="other settings.*lr"):
        run_sft(tiny_ckpt, tiny_data, tmp_path / "r", SETTINGS.model_copy(update={"lr": 0.5}), progress=False)


def test_missing_checkpoint_file_is_named(tiny_ckpt, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ckpt, broken)
    (broken / "pose_head.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing pose_head.safetensors"):
        load_policy(broken)


def test_unknown_preset_lists_known(tiny_data):
    with pytest.raises(ValueError, match="known presets: tiny, base"):
        init_policy("huge", tiny_data)


def test_joint_term_only_on_the_named_tasks(tiny_data, tiny_ckpt):
    """sft.pose_joint_tasks: the FK joint term is added on the named tasks' rows only (the demo
    keeps image2pose rotation-only, so RL's joint reward has something to add)."""
    from poserft.data.dataset import load_split
    from poserft.learner.sft import make_examples, sft_loss

    policy = load_policy(tiny_ckpt)
    ex = make_examples(policy, load_split(tiny_data, "train"))
    image = [i for i, t in enumerate(ex.tasks) if t == "image2pose"][:4]
    text = [i for i, t in enumerate(ex.tasks) if t == "text2pose"][:4]
    torch.manual_seed(0)

    def loss(idx, weight, tasks):
        with torch.no_grad():
            return sft_loss(policy, ex, idx, 1.0, 0.05, weight, 0.5, tasks)

    rotation_only = loss(image, 0.0, ("text2pose",))[0]
    assert torch.equal(loss(image, 1.0, ("text2pose",))[0], rotation_only)  # image rows: no joint term
    with_joints, stats = loss(image, 1.0, ("text2pose", "image2pose"))
    assert with_joints > rotation_only and stats["joint_m"] > 0
    assert loss(text, 1.0, ("text2pose",))[0] > loss(text, 0.0, ("text2pose",))[0]
    # a mixed batch: the term is the text rows' error counted over the whole batch
    mixed, stats = loss(image + text, 1.0, ("text2pose",))
    text_only = loss(text, 1.0, ("text2pose",))[1]["joint_m"]
    assert abs(stats["joint_m"] - text_only) < 1e-6
    assert abs(mixed - loss(image + text, 0.0, ("text2pose",))[0] - text_only * len(text) / 8) < 1e-5
