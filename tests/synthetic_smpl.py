"""Write a synthetic SMPL model pickle (no licensed data) whose rest joints equal the
built-in skeleton: one-hot joint regressor, one-hot skinning, zero blend shapes."""

import pickle
from pathlib import Path

import numpy as np

from poserft.common.body import PARENTS, neutral_rest_joints

NUM_VERTS = 6890  # smplx selects extra joints by vertex index, so keep SMPL's vertex count


def write_synthetic_smpl(folder: Path, gender: str = "NEUTRAL", pelvis_height: float = 0.95) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rest = neutral_rest_joints() + np.array([0.0, pelvis_height, 0.0])  # smplx need not start at 0
    verts = np.repeat(rest[:1], NUM_VERTS, axis=0) + rng.normal(scale=0.01, size=(NUM_VERTS, 3))
    verts[:24] = rest
    regressor = np.zeros((24, NUM_VERTS))
    regressor[np.arange(24), np.arange(24)] = 1.0
    weights = np.zeros((NUM_VERTS, 24))
    weights[:24, :24] = np.eye(24)
    weights[24:, 0] = 1.0
    kintree = np.array([[2**32 - 1 if p < 0 else p for p in PARENTS], list(range(24))], dtype=np.int64)
    data = {
        "v_template": verts,
        "shapedirs": np.zeros((NUM_VERTS, 3, 10)),
        "posedirs": np.zeros((NUM_VERTS, 3, 207)),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": np.array([[0, 1, 2], [1, 2, 3]], dtype=np.int64),
    }
    path = folder / f"SMPL_{gender}.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path
