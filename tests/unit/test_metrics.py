import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from poserft.common.metrics import mpjpe, pa_mpjpe, r_precision, retrieval_recalls


def _joints(n, seed=0):
    return np.random.default_rng(seed).normal(scale=0.3, size=(n, 24, 3))


def _pa_reference(pred, target):
    """Independent float64 reference: centre, orthogonal Procrustes via numpy SVD, reflection fix."""
    out = []
    for p, t in zip(pred, target):
        p = p - p[0]
        t = t - t[0]
        pc, tc = p - p.mean(0), t - t.mean(0)
        u, s, vt = np.linalg.svd(pc.T @ tc)  # maps p onto t: R = V U^T
        r = vt.T @ u.T
        if np.linalg.det(r) < 0:
            vt[-1] *= -1
            s[-1] *= -1
            r = vt.T @ u.T
        scale = s.sum() / (pc**2).sum()
        aligned = scale * pc @ r.T + t.mean(0)
        out.append(np.linalg.norm(aligned - t, axis=1).mean() * 1000)
    return np.array(out)


def test_mpjpe_simple_values():
    t = np.zeros((1, 24, 3))
    p = t.copy()
    p[0, 1:, 0] = 0.1  # every non-root joint 10 cm off
    assert np.isclose(mpjpe(p, t).item(), 100.0 * 23 / 24)
    shifted = t + np.array([5.0, 1.0, -2.0])  # global translation is removed by root alignment
    assert mpjpe(shifted, t).item() == pytest.approx(0.0, abs=1e-9)


def test_pa_mpjpe_of_similar_copy_is_zero():
    t = _joints(50, seed=1)
    rot = Rotation.random(50, random_state=2).as_matrix()
    scale = np.random.default_rng(3).uniform(0.5, 2.0, size=(50, 1, 1))
    p = scale * np.einsum("nij,nkj->nki", rot, t) + np.random.default_rng(4).normal(size=(50, 1, 3))
    assert pa_mpjpe(p, t).max().item() < 1e-6
    assert mpjpe(p, t).min().item() > 1.0  # but the plain error is not zero


def test_pa_mpjpe_matches_float64_reference_on_random_data():
    p, t = _joints(200, seed=5), _joints(200, seed=6)
    ours = pa_mpjpe(p, t).numpy()
    assert np.abs(ours - _pa_reference(p, t)).max() < 1e-9
    assert (ours <= mpjpe(p, t).numpy() + 1e-9).all()


def test_pa_never_reflects():
    t = _joints(20, seed=7)
    mirrored = t * np.array([-1.0, 1.0, 1.0])  # a reflection cannot be undone by a rotation
    assert pa_mpjpe(mirrored, t).min().item() > 1.0


def test_float32_and_torch_inputs():
    t = torch.from_numpy(_joints(4, seed=8)).float()
    assert pa_mpjpe(t, t).max().item() < 1e-3


@pytest.mark.parametrize(
    "pred,target,msg",
    [
        (np.zeros((2, 24, 3)), np.zeros((3, 24, 3)), "same shape"),
        (np.zeros((2, 24)), np.zeros((2, 24)), r"pred must have shape"),
        (np.full((2, 24, 3), np.nan), np.zeros((2, 24, 3)), "pred contains"),
        (np.zeros((2, 24, 3)), np.full((2, 24, 3), np.inf), "target contains"),
    ],
)
def test_pose_metric_bad_input(pred, target, msg):
    with pytest.raises(ValueError, match=msg):
        pa_mpjpe(pred, target)


def test_retrieval_perfect_and_hand_computed():
    e = np.eye(8)
    r = retrieval_recalls(e, e)
    assert r["recall_at_1_t2p"] == 100 and r["mrecall"] == 100
    # text i matches pose i only for i < 4; the others point at pose (i+1) % 8 first.
    t = np.eye(8)
    p = np.eye(8)
    for i in range(4, 8):
        t[i] = 0.9 * np.eye(8)[(i + 1) % 8] + 0.1 * np.eye(8)[i]
    r = retrieval_recalls(t, p, ks=(1, 5))
    assert r["recall_at_1_t2p"] == 50.0
    assert r["recall_at_5_t2p"] == 100.0


def test_ties_count_against_the_query():
    z = np.ones((10, 4))
    r = retrieval_recalls(z, z, ks=(1, 10))
    assert r["recall_at_1_t2p"] == 0.0 and r["recall_at_10_t2p"] == 100.0


def test_random_embeddings_give_chance_level():
    rng = np.random.default_rng(0)
    t, p = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    r = retrieval_recalls(t, p, ks=(10,))
    assert abs(r["recall_at_10_t2p"] - 0.5) < 0.5
    rp = r_precision(t, p, pool=32)
    assert abs(rp["r_precision_t2p"] - 100 / 32) < 2.0
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    assert r_precision(unit, unit, pool=32)["r_precision_t2p"] == 100.0


def test_retrieval_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        retrieval_recalls(np.zeros((3, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="at least pool=32"):
        r_precision(np.eye(8), np.eye(8))
