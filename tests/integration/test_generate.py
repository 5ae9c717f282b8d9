"""`poserft generate` as a subprocess on the tiny SFT checkpoint: the four files per pose, read back
(BVH by the independent `bvh` parser, its joints against the project's FK), samples, batch mode,
and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from poserft.common.body import JOINT_NAMES, BodyModel
from poserft.data.dataset import load_split
from tests.unit.test_exports import bvh_world_positions

PROMPT = "a person squatting with arms forward"
FILES = ["pose.bvh", "pose.json", "pose.npz", "pose.png"]  # response.txt: beside them, or above the samples


def poserft(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "poserft", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def _check_pose_folder(folder):
    assert sorted(p.name for p in folder.iterdir() if p.name != "response.txt") == FILES
    with np.load(folder / "pose.npz") as z:
        aa, joints, mu, std = z["axis_angle"], z["joints_m"], z["mu"], z["std"]
    assert aa.shape == (72,) and joints.shape == (24, 3) and mu.shape == (144,) and (std > 0).all()
    fk = BodyModel().joints_from_axis_angle(aa.reshape(1, 24, 3))[0]
    assert np.abs(joints - fk).max() < 1e-9
    doc = json.loads((folder / "pose.json").read_text())
    assert np.allclose(doc["axis_angle"], aa) and np.allclose(doc["std"], std)
    pos = bvh_world_positions((folder / "pose.bvh").read_text())
    err = max(np.linalg.norm(pos[n] - fk[j]) for j, n in enumerate(JOINT_NAMES))
    assert err < 1e-3, f"BVH joints {err * 1000:.3f} mm from FK"
    assert (folder / "pose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return aa


def test_generate_text_writes_four_files(tiny_sft, tmp_path):
    out = tmp_path / "one"
    res = poserft("generate", "--ckpt", tiny_sft, "--text", PROMPT, "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    response = (out / "response.txt").read_text().strip()
    assert response and response in res.stdout
    assert "<POSE>" in response, "the SFT'd tiny policy answers with the pose template"
    _check_pose_folder(out)


def test_generate_samples_and_batch(tiny_sft, tiny_data, tmp_path):
    out = tmp_path / "samples"
    res = poserft("generate", "--ckpt", tiny_sft, "--text", PROMPT, "--samples", 3, "--seed", 1, "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    poses = [_check_pose_folder(out / f"sample_{k:02d}") for k in range(3)]
    assert (out / "response.txt").is_file()
    assert len({p.tobytes() for p in poses}) == 3

    test = load_split(tiny_data, "test")
    image = test.filter(pa.compute.equal(test["task"], "image2pose"))["image"].to_pylist()[0]
    (tmp_path / "person.png").write_bytes(image)
    np.savez(tmp_path / "input_pose.npz", axis_angle=np.asarray(test["target_pose"].to_pylist()[0]))
    lines = [{"text": PROMPT}, {"image": "person.png"}, {"pose": "input_pose.npz"}, {"text": "someone kneeling"}]
    (tmp_path / "batch.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "batch"
    res = poserft("generate", "--ckpt", tiny_sft, "--batch", tmp_path / "batch.jsonl", "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["0000", "0001", "0002", "0003"]
    assert (out / "0002" / "response.txt").read_text().strip()  # pose2text: text only
    with_pose = [k for k in (0, 1, 3) if (out / f"{k:04d}" / "pose.npz").exists()]
    assert len(with_pose) >= 2
    for k in with_pose:
        _check_pose_folder(out / f"{k:04d}")
    # the batch answers the first line as the single run does
    assert (out / "0000" / "response.txt").read_text() == (tmp_path / "samples" / "response.txt").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--text", ""], "non-empty string"),
        (["--image", "/nonexistent.png"], "does not exist"),
        (["--pose", "batch.jsonl"], "must be .npz, .npy or .json"),
        (["--text", "x", "--samples", "-2"], "samples must be"),
        (["--batch", "batch.jsonl"], "batch.jsonl:2"),
    ],
)
def test_generate_bad_input_is_one_line(tiny_sft, tmp_path, args, message):
    (tmp_path / "batch.jsonl").write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    argv = [sys.executable, "-m", "poserft", "generate", "--ckpt", str(tiny_sft), *args, "--out", str(tmp_path / "o")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("poserft: error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr[-2000:]
