import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poserft.common.schemas import TASK_RECORD_SCHEMA, TASKS
from poserft.data.dataset import DatasetError, build_dataset, load_split


def test_build_is_byte_identical_and_complete(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    card_a = build_dataset(a, seed=3, train_poses=120, val_poses=20, test_poses=20, progress=False)
    build_dataset(b, seed=3, train_poses=120, val_poses=20, test_poses=20, progress=False)
    for split in ("train", "val", "test"):
        assert (a / f"{split}.parquet").read_bytes() == (b / f"{split}.parquet").read_bytes()
    assert (a / "dataset_card.json").read_bytes() == (b / "dataset_card.json").read_bytes()
    assert card_a["captions"]["distinct"] > 100 and card_a["captions"]["mean_words"] > 10

    train = load_split(a, "train")
    assert train.schema == TASK_RECORD_SCHEMA
    assert sorted(set(train["task"].to_pylist())) == sorted(TASKS)
    assert train.num_rows == 3 * 120
    images = load_split(a, "train", task="image2pose")["image"].to_pylist()
    assert all(im is not None and im[:8] == b"\x89PNG\r\n\x1a\n" for im in images)
    assert load_split(a, "train", task="text2pose")["image"].null_count == 120

    # Split by pose: no pose id in two splits.
    ids = {s: set(load_split(a, s)["pose_id"].to_pylist()) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    other = build_dataset(tmp_path / "c", seed=4, train_poses=120, val_poses=20, test_poses=20, progress=False)
    assert other["splits"]["train"]["sha256"] != card_a["splits"]["train"]["sha256"]


def test_cli_rejects_unwritable_out_before_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "poserft", "data", "build", "--out", str(locked / "x"), "--quiet"]
    if os.geteuid() == 0:  # root writes anywhere: use a path under a regular file instead
        (tmp_path / "file").write_text("x")
        cmd[cmd.index("--out") + 1] = str(tmp_path / "file" / "x")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert "--out" in res.stderr and ("not writable" in res.stderr or "not a folder" in res.stderr)


def test_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="train.parquet is missing"):
        load_split(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        load_split(tmp_path, "dev")
    (tmp_path / "train.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DatasetError, match="not readable Parquet"):
        load_split(tmp_path, "train")
    pq.write_table(pa.table({"id": ["x"], "task": ["text2pose"]}), tmp_path / "val.parquet")
    with pytest.raises(DatasetError, match="missing columns"):
        load_split(tmp_path, "val")


def test_card_is_json_with_generator_settings(tmp_path):
    build_dataset(tmp_path, seed=0, train_poses=30, val_poses=5, test_poses=5, progress=False)
    card = json.loads((tmp_path / "dataset_card.json").read_text())
    assert card["generator"]["seed"] == 0 and card["generator"]["train_poses"] == 30
    assert {"distinct", "mean_words", "test_poses_sharing_a_caption"} <= set(card["captions"])
