"""`poserft eval --descriptions`: the CLI on a tiny SFT checkpoint, and its errors."""

import json
import subprocess
import sys

import pytest

from poserft.common.config import EvalConfig, RetrieverTrainConfig
from poserft.describe_eval import DEV_SET, load_descriptions


def _poserft(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "poserft.cli", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def evaluator(tiny_data, tmp_path_factory):
    from poserft.reward_service.retriever_train import train_retriever

    out = tmp_path_factory.mktemp("evaluator")
    train_retriever(
        tiny_data,
        out,
        RetrieverTrainConfig(seed=2, half=1, epochs=1, batch_size=128, caption_variants=1, threads=1),
        progress=False,
    )
    return out


def test_eval_reports_descriptions_beside_the_synthetic_metrics(tiny_data, tiny_sft, evaluator, tmp_path):
    lines = DEV_SET.read_text().splitlines()
    subset = tmp_path / "some.jsonl"
    subset.write_text("\n".join(lines[:20]) + "\n")
    ds = load_descriptions(subset)
    out = tmp_path / "eval"
    proc = _poserft("eval", "--ckpt", tiny_sft, "--data", tiny_data, "--evaluator", evaluator, "--limit", 8,
                    "--max-new-tokens", 24, "--descriptions", subset, "--out", out, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "eval.json").read_text())
    d = res["descriptions"]
    assert {"image2pose", "text2pose", "pose2text"} <= set(res)
    assert d["n"] == 20 and d["poses"] == len(ds.pose_ids) and d["file"] == str(subset)
    assert d["chance_top1"] == pytest.approx(100 / len(ds.pose_ids))
    assert 0 <= d["top1"] <= d["top3"] <= 100
    assert d["yaw_mpjpe_mm"] > 0 and d["pa_mpjpe_mm"] > 0 and d["baseline_mean_pose_yaw_mpjpe_mm"] > 0
    assert d["baseline"] == "mean of the file's poses"
    assert len(d["per_description"]) == 20
    assert {row["pose_id"] for row in d["per_description"]} == set(ds.pose_ids)
    assert all(row["nearest_pose_id"] in ds.pose_ids for row in d["per_description"])
    table = (out / "eval.md").read_text()
    assert "descriptions top-1 (%)" in table and "text2pose R@10 t2p (%)" in table
    assert "descriptions top-1" in proc.stdout


def test_bad_descriptions_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"description": "a squat", "pose_id": "squat", "target_pose": [0.0] * 72}) + "\n{}\n")
    proc = _poserft(
        "eval", "--ckpt", "/no/such", "--data", "/no/data", "--evaluator", "/no/ev", "--descriptions", bad, cwd=tmp_path
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "bad.jsonl, line 2: missing key 'description'" in err[0]


def test_the_dev_set_is_the_default():
    from poserft.cli import _descriptions_file

    assert EvalConfig().descriptions == str(DEV_SET)
    assert _descriptions_file(None) == str(DEV_SET)
    assert _descriptions_file("none") is None
