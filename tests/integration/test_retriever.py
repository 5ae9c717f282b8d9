import json

import pytest
import torch
from safetensors.torch import load_file

from poserft.common.config import RetrieverTrainConfig
from poserft.common.rotations import axis_angle_to_matrix
from poserft.reward_service.retriever import Retriever, RetrieverConfig, clause_ngrams, pose_features
from poserft.reward_service.retriever_train import evaluate_retriever, train_retriever

SETTINGS = RetrieverTrainConfig(seed=1, half=0, epochs=2, batch_size=128, caption_variants=2, threads=1)


def test_clauses_keep_side_order():
    a = clause_ngrams("The left hand is higher than the right hand.")
    b = clause_ngrams("The right hand is higher than the left hand.")
    assert sorted(a[0]) != sorted(b[0])  # bigrams tell the mirror apart


def test_pose_features_ignore_yaw():
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(4, 24, 3, generator=g, dtype=torch.float64) * 0.3
    turned = pose.clone()
    yaw = torch.tensor([0.0, 1.3, 0.0], dtype=torch.float64)
    rot = axis_angle_to_matrix(yaw) @ axis_angle_to_matrix(pose[:, 0])
    from poserft.common.rotations import matrix_to_axis_angle

    turned[:, 0] = matrix_to_axis_angle(rot)
    assert torch.allclose(pose_features(pose), pose_features(turned), atol=1e-5)


def test_train_resume_and_eval(tiny_data, tmp_path):
    full = train_retriever(tiny_data, tmp_path / "full", SETTINGS, progress=False)
    assert len(full["history"]) == 2
    train_retriever(tiny_data, tmp_path / "part", SETTINGS.model_copy(update={"epochs": 1}), progress=False)
    # Same settings but more epochs are refused: the schedule depends on them.
    with pytest.raises(ValueError, match="other settings.*epochs"):
        train_retriever(tiny_data, tmp_path / "part", SETTINGS, progress=False)
    a = load_file(str(tmp_path / "full" / "retriever.safetensors"))
    again = train_retriever(tiny_data, tmp_path / "full", SETTINGS, progress=False)  # resumes at the end: no change
    b = load_file(str(tmp_path / "full" / "retriever.safetensors"))
    assert again["history"] == full["history"] and all(torch.equal(a[k], b[k]) for k in a)
    m = evaluate_retriever(tiny_data, tmp_path / "full", tmp_path / "eval.json")
    assert {"recall_at_10_t2p", "recall_at_10_p2t", "mrecall", "r_precision_t2p"} <= set(m)
    assert json.loads((tmp_path / "eval.json").read_text())["pairs"] == 96


def test_missing_checkpoint_file(tmp_path):
    Retriever(RetrieverConfig()).save(tmp_path)
    (tmp_path / "retriever.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing retriever.json"):
        Retriever.load(tmp_path)


def test_word_embedding_clauses(tmp_path):
    """transformer-wordemb: each clause also carries its MiniLM WordPiece ids; the frozen table is
    looked up, not saved, and a word the n-gram buckets never saw still moves the embedding."""
    cfg = RetrieverConfig(text_encoder="transformer-wordemb")
    torch.manual_seed(0)
    model = Retriever(cfg).eval()
    ids = model.text_inputs(["Standing like a flamingo, arms out.", "Squatting."])
    assert ids.shape[-1] == cfg.max_ngrams + cfg.max_pieces
    assert (ids[0, :2, cfg.max_ngrams :] != 0).any(-1).all()  # both clauses have word pieces
    assert (ids[1, 1:] == 0).all()  # one clause, the rest padding
    model.save(tmp_path)
    assert not any("word_table" in k for k in load_file(str(tmp_path / "retriever.safetensors")))
    again = Retriever.load(tmp_path)
    texts = ["like a flamingo", "like a scarecrow"]
    assert torch.allclose(model.embed_text(texts), again.embed_text(texts))
    # The same hashed n-grams with the word pieces zeroed: only the MiniLM part differs.
    x = model.text_inputs(texts)
    no_words = x.clone()
    no_words[..., cfg.max_ngrams :] = 0
    with torch.no_grad():
        assert not torch.allclose(model.embed_text_inputs(x), model.embed_text_inputs(no_words))
