"""`data.sources`: imported and synthetic folders mixed by weight (poserft.data.mixture)."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from poserft.common.config import ConfigError, load_config
from poserft.data.dataset import DatasetError, build_dataset, load_split
from poserft.data.importers import import_3dpw, import_posescript
from poserft.data.mixture import load_mixture, load_pose_only, mixture_counts
from tests.import_fixtures import write_3dpw, write_posescript


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    build_dataset(root / "synth", seed=0, train_poses=20, val_poses=3, test_poses=3, image_size=16, progress=False)
    fx = write_posescript(root / "src", n_poses=40)
    import_posescript(fx["posescript"], fx["amass"], root / "ps", captions="human", progress=False)
    write_3dpw(root / "pw_src", frames=3, people=1, size=(64, 96))
    import_3dpw(root / "pw_src", root / "pw", image_size=16, progress=False)
    return root


def test_one_folder_is_load_split(folders):
    for data in (folders / "synth", str(folders / "synth"), [{"dir": str(folders / "synth")}]):
        assert load_mixture(data, "train").equals(load_split(folders / "synth", "train"))


def test_weights_set_the_shares_of_the_train_rows(folders):
    sources = [{"dir": str(folders / "synth"), "weight": 1.0}, {"dir": str(folders / "ps"), "weight": 3.0}]
    table = load_mixture(sources, "train", seed=1)
    n_synth, n_ps = load_split(folders / "synth", "train").num_rows, load_split(folders / "ps", "train").num_rows
    assert table.num_rows == n_synth + n_ps  # as many rows as the folders together
    ids = table["id"].to_pylist()
    from_ps = sum(i.startswith("ps:") for i in ids)
    assert from_ps == round(0.75 * table.num_rows) and len(set(ids)) == len(ids)
    assert any(i.endswith("#2") for i in ids if i.startswith("ps:"))  # oversampled: repeats get their own ids
    assert all(i.split(":", 1)[0] in ("synth", "ps") for i in ids)
    assert load_mixture(sources, "train", seed=1).equals(table)  # seeded
    assert not load_mixture(sources, "train", seed=2).equals(table)


def test_val_is_every_folders_rows_and_tasks_missing_in_a_folder_are_skipped(folders):
    sources = [{"dir": str(folders / "pw")}, {"dir": str(folders / "ps")}]
    val = load_mixture(sources, "val")
    assert val.num_rows == load_split(folders / "pw", "val").num_rows + load_split(folders / "ps", "val").num_rows
    text = load_mixture(sources, "train", task="text2pose")  # 3DPW has none: the PoseScript rows only
    assert text.num_rows == load_split(folders / "ps", "train", task="text2pose").num_rows
    assert pc.all(pc.starts_with(text["id"], "ps:")).as_py()
    with pytest.raises(DatasetError, match="no folder of data.sources has rows of task 'text2pose'"):
        load_mixture(
            [{"dir": str(folders / "pw"), "name": "a"}, {"dir": str(folders / "pw"), "name": "b"}],
            "train",
            task="text2pose",
        )


def test_pose_only_poses(folders):
    assert load_pose_only([{"dir": str(folders / "ps")}]) is None  # not asked for
    extra = load_pose_only([{"dir": str(folders / "ps"), "pose_only": True}, {"dir": str(folders / "synth")}])
    assert extra.num_rows == 20 and set(np.asarray(extra["pose_id"]) % 2) == {1}  # odd ids have no human caption
    with pytest.raises(DatasetError, match="marked pose_only but has no pose_only.parquet"):
        load_pose_only([{"dir": str(folders / "synth"), "pose_only": True}])


def test_counts_and_bad_sources():
    assert mixture_counts([10, 30], [1, 1]) == [20, 20]
    assert mixture_counts([5, 5, 5], [1, 1, 1e-9]) == [8, 7, 1]  # largest remainder first; every folder keeps a row
    with pytest.raises(DatasetError, match="two folders are named 'x'"):
        load_mixture([{"dir": "a/x"}, {"dir": "b/x"}], "train")
    with pytest.raises(DatasetError, match="weight is -1.0"):
        load_mixture([{"dir": "a", "weight": -1}, {"dir": "b"}], "train")


def test_config_sources(folders):
    cfg = load_config(None, [f"data.sources=[{{dir: {folders / 'ps'}, weight: 2}}, {{dir: {folders / 'pw'}}}]"])
    assert cfg.data.dir == str(folders / "ps") and [s.weight for s in cfg.data.sources] == [2.0, 1.0]
    assert (
        load_config(None, ["data.dir=elsewhere", f"data.sources=[{{dir: {folders / 'ps'}}}]"]).data.dir == "elsewhere"
    )
    with pytest.raises(ConfigError, match="weight"):
        load_config(None, [f"data.sources=[{{dir: {folders / 'ps'}, weight: 0}}]"])
    with pytest.raises(ConfigError, match="wieght"):
        load_config(None, [f"data.sources=[{{dir: {folders / 'ps'}, wieght: 1}}]"])
