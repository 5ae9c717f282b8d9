"""poserft.model.text_tower: MiniLM word knowledge in prompt slots (issue 14)."""

import pytest
import torch

from poserft.common.config import ConfigError, ModelConfig, validate_config
from poserft.common.schemas import POSE_RESPONSE, TEXT_TOKEN
from poserft.model.checkpoint import init_policy, load_policy, save_policy
from poserft.model.policy import apply_training_switches
from poserft.model.text_tower import pooled_word_embeddings, user_text

PROMPT = "Generate the 3D body pose described here: standing like a flamingo, on one leg."


@pytest.fixture(scope="module")
def tower_policy(tiny_data):
    return init_policy("tiny", tiny_data, seed=0, text_tower="minilm-wordemb", text_tokens=3)


def test_pooled_word_embeddings_know_words():
    v = pooled_word_embeddings(["Flamingo", "flamingo", "salute", "", "a military salute"])
    assert v.shape == (5, 384)
    assert torch.equal(v[0], v[1])  # the WordPiece side lower-cases
    assert not v[3].any()  # no pieces, no signal
    cos = torch.nn.functional.cosine_similarity
    assert cos(v[2], v[4], dim=0) > cos(v[0], v[2], dim=0)


def test_user_text_strips_the_chat_frame():
    assert user_text("USER:   raise both arms\nASSISTANT:") == "raise both arms"


def test_prompt_gets_text_slots_and_the_tower_changes_the_embeddings(tower_policy):
    p = tower_policy
    ids = p.encode_prompt(PROMPT)
    assert ids.count(p.text_token_id) == 3
    other = p.encode_prompt("Generate the 3D body pose described here: lying face down on the floor.")
    inp = p.build_inputs([ids, other, ids], [[], [], []])
    assert inp.text_rows == [0, 1, 2] and inp.text_feats.shape == (3, 384)
    assert torch.equal(inp.text_feats[0], inp.text_feats[2]) and not torch.equal(inp.text_feats[0], inp.text_feats[1])
    emb = p.embed(inp)
    slots = ids.index(p.text_token_id)
    token_row = p.lm.get_input_embeddings().weight[p.text_token_id]
    assert not torch.allclose(emb[0, slots], token_row)  # filled by text_in, not the token's own row
    assert not torch.allclose(emb[0, slots], emb[1, slots])


def test_slot_count_mismatch_is_a_clear_error(tower_policy):
    p = tower_policy
    ids = p.encode_prompt(f"a person saying {TEXT_TOKEN} hello")  # the user typed the slot token
    with pytest.raises(ValueError, match="<text> slots, expected 3"):
        p.embed(p.build_inputs([ids], [[]]))


def test_round_trip_and_training_switch(tower_policy, tmp_path):
    p = tower_policy
    save_policy(p, tmp_path / "ckpt")
    q = load_policy(tmp_path / "ckpt")
    assert q.meta["text_tower"] == {"type": "minilm-wordemb", "tokens": 3}
    resp = p.encode_response(POSE_RESPONSE)
    a, b = p(p.build_inputs([p.encode_prompt(PROMPT)], [resp])), q(q.build_inputs([q.encode_prompt(PROMPT)], [resp]))
    assert torch.allclose(a["mu"], b["mu"], atol=1e-5)
    assert all(30522 not in v.shape for v in q.state_dict().values())  # MiniLM's table is not saved
    apply_training_switches(q, ModelConfig(train={"text_in": 0.0}))
    assert "text_in" in q.switches["freeze"] and not any(x.requires_grad for x in q.text_in.parameters())


def test_without_a_tower_nothing_changes(tiny_data):
    p = init_policy("tiny", tiny_data, seed=0)
    assert TEXT_TOKEN not in p.tokenizer.get_vocab() and p.text_tokens == 0
    assert p.build_inputs([p.encode_prompt(PROMPT)], [[]]).text_feats is None
    assert not list(p.text_in.parameters())


def test_unknown_tower_is_refused(tiny_data):
    with pytest.raises(ConfigError, match="text_tower"):
        validate_config({"text_tower": "bert"}, ModelConfig)
    with pytest.raises(ValueError, match="unknown text tower 'bert'"):
        init_policy("tiny", tiny_data, text_tower="bert")


def test_user_text_keeps_only_the_description_of_a_template():
    from poserft.data.dataset import PROMPTS

    for template in PROMPTS["text2pose"]:
        assert user_text(f"USER: {template.format(caption='Squatting.')}\nASSISTANT:") == "Squatting."
    assert user_text("USER: make me a pose of someone bowing\nASSISTANT:") == "make me a pose of someone bowing"


def test_head_skip_feeds_the_description_to_the_head(tiny_data, tmp_path):
    from poserft.model.generation import pose_from_response
    from poserft.model.policy import chat_prompt

    p = init_policy("tiny", tiny_data, seed=0, text_tower="minilm-wordemb", text_tokens=3, text_head_skip=True)
    assert p.text_head_skip and p.meta["text_tower"]["head_skip"] is True
    resp = p.encode_response(POSE_RESPONSE)
    a, b = p.encode_prompt(PROMPT), p.encode_prompt("Generate the 3D body pose described here: lying face down.")
    bare = [p.tokenizer.bos_token_id] + p.tokenizer.encode(
        chat_prompt("squat", p.image_tokens), add_special_tokens=False
    )
    inp = p.build_inputs([a, bare, b], [resp] * 3)
    assert inp.text_rows == [0, 2]
    hidden = torch.randn(1, p.lm.config.hidden_size).expand(3, -1)  # the same <POSE> state for every row
    mu, log_std = p.pose_params(hidden, inp)
    assert not torch.allclose(mu[0], mu[2])  # only the description differs
    assert torch.allclose(mu[1], p.head(hidden[1:2])[0])  # no <text> slots, no skip
    skip = p.text_in(inp.text_feats).reshape(2, 3, -1).mean(1)
    assert torch.allclose(mu[2], p.head(hidden[2:3] + skip[1:2])[0][0], atol=1e-6)  # text_rows order
    out = p(inp)
    assert torch.allclose(out["mu"], p.pose_params(out["hidden_pose"], inp)[0])
    mu_g, _, _ = pose_from_response(p, [a, bare, b], [resp] * 3)
    assert torch.allclose(mu_g, out["mu"], atol=1e-5)
    p.zero_grad()
    p(inp, detach_pose_hidden=True)["mu"].sum().backward()
    assert all(x.grad is None for x in p.text_in.parameters())  # detach stops the skip too
    save_policy(p, tmp_path / "ckpt")
    q = load_policy(tmp_path / "ckpt")
    assert q.text_head_skip and q.meta["text_tower"]["head_skip"] is True
    assert torch.allclose(q(q.build_inputs([a, bare, b], [resp] * 3))["mu"], out["mu"], atol=1e-5)


def test_head_skip_off_leaves_the_head_input_alone(tower_policy):
    p = tower_policy
    assert "head_skip" not in p.meta["text_tower"] and not p.text_head_skip
    resp = p.encode_response(POSE_RESPONSE)
    other = p.encode_prompt("Generate the 3D body pose described here: lying face down.")
    inp = p.build_inputs([p.encode_prompt(PROMPT), other], [resp] * 2)
    out = p(inp)
    assert torch.equal(out["mu"], p.head(out["hidden_pose"].float())[0])  # exactly the head on h_pose
    hidden = torch.randn(1, p.lm.config.hidden_size).expand(2, -1)
    mu, _ = p.pose_params(hidden, inp)
    assert torch.equal(mu[0], mu[1])


def test_head_skip_config_and_the_demo_refuses_a_mismatched_init(tower_policy, tmp_path):
    from poserft.demo import check_init_matches

    save_policy(tower_policy, tmp_path / "init")  # a tower, no head skip
    check_init_matches(tmp_path / "init", validate_config({"text_tower": "minilm-wordemb"}, ModelConfig), tmp_path)
    asks_skip = validate_config({"text_tower": "minilm-wordemb", "text_head_skip": True}, ModelConfig)
    with pytest.raises(ValueError, match="head skip False.*head skip True.*delete"):
        check_init_matches(tmp_path / "init", asks_skip, tmp_path)
