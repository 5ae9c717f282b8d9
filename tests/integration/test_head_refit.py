"""The head refit after SFT (`sft.head_refit_*`): widening keeps the output, the refit lowers the
pose loss on its rows, the checkpoint records the width, and a finished SFT state takes a refit."""

import numpy as np
import pytest
import torch

from poserft.common.config import SFTConfig
from poserft.data.dataset import load_split
from poserft.learner.sft import head_inputs, make_examples, refit_rows, run_sft, widen_head
from poserft.model.checkpoint import load_policy

SETTINGS = SFTConfig(
    align_steps=2, steps=4, batch_size=4, val_every=100, ckpt_every=100, warmup_steps=2, val_rows=8, threads=1
)


def test_widening_keeps_the_output_and_refuses_to_narrow(tiny_data, tiny_ckpt):
    policy = load_policy(tiny_ckpt).eval()
    ex = make_examples(policy, load_split(tiny_data, "train", "text2pose"))
    rows = np.arange(6)
    x = head_inputs(policy, ex, rows, progress=False)
    # Rows are batched by length, but come back in the order asked for.
    assert torch.allclose(head_inputs(policy, ex, rows[::-1].copy(), progress=False), x.flip(0), atol=1e-5)
    single = torch.cat([head_inputs(policy, ex, rows[i : i + 1], progress=False) for i in range(len(rows))])
    assert torch.allclose(single, x, atol=1e-4)
    before = policy.head(x)[0]
    width = policy.head.mean[0].out_features
    widen_head(policy, 3 * width)
    assert policy.head.mean[0].out_features == 3 * width and policy.meta["head"]["width"] == 3 * width
    assert torch.allclose(policy.head(x)[0], before, atol=1e-6)
    with pytest.raises(ValueError, match="narrower"):
        widen_head(policy, width)


def test_refit_rows_take_every_text_row_and_a_sample_of_images(tiny_data, tiny_ckpt):
    policy = load_policy(tiny_ckpt)
    ex = make_examples(policy, load_split(tiny_data, "train"))
    rows = refit_rows(ex, image_rows=5, seed=0)
    tasks = [ex.tasks[i] for i in rows]
    assert tasks.count("text2pose") == ex.tasks.count("text2pose") and tasks.count("image2pose") == 5
    assert "pose2text" not in tasks
    assert (refit_rows(ex, 5, 0) == rows).all() and not (refit_rows(ex, 5, 1) == rows).all()


def test_refit_after_sft_and_on_a_finished_state(tiny_data, tiny_ckpt, tmp_path):
    plain = run_sft(tiny_ckpt, tiny_data, tmp_path / "sft", SETTINGS, progress=False)
    plain_policy = load_policy(plain["policy"])
    plain_head, plain_rest = (
        plain_policy.head,
        {k: v for k, v in plain_policy.state_dict().items() if not k.startswith("head.")},
    )
    width = plain_head.mean[0].out_features
    refit = SETTINGS.model_copy(
        update={"head_refit_epochs": 3, "head_refit_width": 2 * width, "head_refit_batch_size": 8}
    )
    # The refit settings are not part of the SFT state: the finished state resumes straight into the refit.
    res = run_sft(tiny_ckpt, tiny_data, tmp_path / "sft", refit, progress=False)
    summary = res["head_refit"]
    assert summary["width"] == 2 * width and summary["rows"]["text2pose"] > 0
    assert summary["loss_last_epoch"] < summary["loss_first_epoch"]
    policy = load_policy(res["policy"])  # the checkpoint builds the wide head from its meta
    assert policy.head.mean[0].out_features == 2 * width
    assert policy.meta["head_refit"]["epochs"] == 3
    assert not torch.equal(policy.head.mean[2].weight[:, :width], plain_head.mean[2].weight)  # the head trained
    rest = {k: v for k, v in policy.state_dict().items() if not k.startswith("head.")}
    assert rest.keys() == plain_rest.keys() and all(torch.equal(v, plain_rest[k]) for k, v in rest.items())


def test_word_path_reads_the_description_for_text2pose_only(tiny_data, tmp_path):
    """sft.head_refit_words_width: the refit adds and trains the head's word path; the checkpoint
    rebuilds it; a text2pose row's head input is the path's output for its description, an
    image2pose row's is what it was without the path."""
    from poserft.common.schemas import POSE_RESPONSE
    from poserft.data.dataset import PROMPTS
    from poserft.learner.sft import add_words_path
    from poserft.model.checkpoint import init_policy, save_policy

    with pytest.raises(ValueError, match="needs a text tower"):
        add_words_path(init_policy("tiny", tiny_data, seed=0), 16)
    no_tower = SETTINGS.model_copy(update={"head_refit_epochs": 1, "head_refit_words_width": 16})
    with pytest.raises(ValueError, match="needs a policy with a text tower"):  # before any SFT step
        run_sft(
            save_policy(init_policy("tiny", tiny_data, seed=0), tmp_path / "plain"), tiny_data, tmp_path / "x", no_tower
        )
    assert not (tmp_path / "x" / "state.pt").exists()
    init = save_policy(
        init_policy("tiny", tiny_data, seed=0, text_tower="minilm-wordemb", text_tokens=2, text_head_skip=True),
        tmp_path / "init",
    )
    refit = SETTINGS.model_copy(
        update={
            "head_refit_epochs": 2,
            "head_refit_words_width": 16,
            "head_refit_text_rotation_weight": 0.0,
            "head_refit_batch_size": 8,
        }
    )
    res = run_sft(init, tiny_data, tmp_path / "sft", refit, progress=False)
    assert res["head_refit"]["words_width"] == 16 and res["head_refit"]["text_rotation_weight"] == 0.0
    policy = load_policy(res["policy"]).eval()
    assert policy.meta["head"]["words_width"] == 16 and policy.head.words is not None
    with pytest.raises(ValueError, match="already has a word path"):
        add_words_path(policy, 16)

    image = load_split(tiny_data, "val", "image2pose").slice(0, 1).to_pylist()[0]
    texts = ["standing on one leg, arms out", "lying on the back"]
    prompts = [policy.encode_prompt(PROMPTS["text2pose"][0].format(caption=t)) for t in texts]
    prompts.append(policy.encode_prompt(image["prompt"]))
    answer = policy.encode_response(POSE_RESPONSE)
    inp = policy.build_inputs(prompts, [answer] * 3, [None, None, image["image"]], None)
    with torch.no_grad():
        hidden = policy(inp)["hidden_pose"]
        x = policy.head_input(hidden, inp)
        words = policy.head.words(policy.text_features(prompts[:2]))
        assert torch.allclose(x[:2], words, atol=1e-5)
        assert not torch.allclose(policy.head(x[:1])[0], policy.head(x[1:2])[0], atol=1e-4)
        path, policy.head.words = policy.head.words, None
        without = policy.head_input(hidden, inp)
        policy.head.words = path
    assert torch.allclose(x[2], without[2]) and not torch.allclose(x[0], without[0])
