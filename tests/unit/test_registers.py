"""poserft.data.registers: the opt-in everyday caption registers (off by default)."""

import inspect

import numpy as np
import pytest

from poserft.common.body import BodyModel
from poserft.data.captioner import Captioner
from poserft.data.dataset import build_dataset
from poserft.data.pose_prior import CANONICAL_POSES, PosePrior
from poserft.data.registers import NAMES, nearest_named, with_registers
from poserft.describe_eval import BLIND_SET, DEV_SET, load_descriptions


def test_off_by_default():
    assert inspect.signature(build_dataset).parameters["caption_registers"].default == "none"


def test_canonical_poses_get_their_own_name():
    body = BodyModel()
    names = list(NAMES)
    joints = body.joints_from_axis_angle(np.stack([CANONICAL_POSES[n] for n in names]))
    assert nearest_named(joints) == names


def test_registers_are_deterministic_and_keep_most_paragraphs():
    joints = BodyModel().joints_from_axis_angle(PosePrior(3).sample(300))
    ids = list(range(1000, 1300))
    captions = Captioner(3).caption(joints, ids=ids)
    a = with_registers(captions, joints, ids, seed=3)
    assert a == with_registers(captions, joints, ids, seed=3)
    kept = sum(x == c for x, c in zip(a, captions))
    named = sum(x.rstrip(".").lower() in {p.lower() for ps in NAMES.values() for p in ps} for x in a)
    assert 0.5 <= kept / len(a) <= 0.9 and named > 0
    dev = {d.lower().rstrip(".!") for path in (DEV_SET, BLIND_SET) for d in load_descriptions(path).descriptions}
    assert not [x for x in a if x.lower().rstrip(".") in dev]


def test_rich_registers_add_train_rows_only(tmp_path):
    from poserft.data.dataset import DatasetError, load_card, load_split

    kw = dict(seed=4, train_poses=120, val_poses=10, test_poses=10, progress=False)
    build_dataset(tmp_path / "none", **kw)
    build_dataset(tmp_path / "rich", caption_registers="rich", **kw)
    assert load_card(tmp_path / "rich")["generator"]["caption_registers"] == "rich"
    for split in ("val", "test"):
        assert load_split(tmp_path / "none", split).equals(load_split(tmp_path / "rich", split))
    base, rich = load_split(tmp_path / "none", "train"), load_split(tmp_path / "rich", "train")
    assert rich.slice(0, base.num_rows).equals(base)  # every paragraph row is kept
    extra = rich.slice(base.num_rows)
    assert 60 <= extra.num_rows <= 240 and set(extra["task"].to_pylist()) == {"text2pose"}
    assert all(i.split("-")[-1] in ("r1", "r2") for i in extra["id"].to_pylist())
    assert len(set(rich["id"].to_pylist())) == rich.num_rows
    captions = extra["caption"].to_pylist()
    assert sum(len(c.split()) < 15 for c in captions) > len(captions) / 3  # short registers, not paragraphs
    build_dataset(tmp_path / "everyday", caption_registers="everyday", **kw)
    assert load_card(tmp_path / "everyday")["generator"]["caption_registers"] == "everyday"
    every = load_split(tmp_path / "everyday", "train")
    assert every.slice(0, base.num_rows).equals(base) and every["id"].to_pylist() == rich["id"].to_pylist()
    assert every["caption"].to_pylist() != rich["caption"].to_pylist()  # other names, same rows
    with pytest.raises(DatasetError, match="caption_registers is 'fancy'"):
        build_dataset(tmp_path / "bad", caption_registers="fancy", **kw)
