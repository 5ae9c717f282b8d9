"""poserft.data.registers_rich: the richer caption registers (`data.caption_registers: rich`, the demo's)."""

import inspect

import numpy as np
import pytest

from poserft.common.body import BodyModel
from poserft.data.captioner import Captioner
from poserft.data.dataset import build_dataset
from poserft.data.everyday_phrases import EVERYDAY_NAMES
from poserft.data.pose_prior import CANONICAL_POSES, PosePrior
from poserft.data.registers_rich import body_orientation, nearest_parts, with_rich_registers
from poserft.describe_eval import BLIND_SET, DEV_SET, load_descriptions


def test_build_dataset_uses_them_only_when_asked():
    assert inspect.signature(build_dataset).parameters["caption_registers"].default == "none"


def test_canonical_parts_are_named_after_their_pose():
    parts = nearest_parts(np.stack([CANONICAL_POSES[n] for n in ("squatting", "arms_up", "waving", "t_pose")]))
    assert parts["legs"][:2] == ["squatting", "standing"]  # the T-pose's legs are plain standing
    assert parts["left_arm"][1] == parts["right_arm"][1] == "arms_up"
    assert parts["right_arm"][2] == "waving"


def test_lying_bodies_are_named_from_the_joints():
    names = ("lying_on_back", "lying_on_side", "plank", "standing", "bending_forward", "squatting", "sitting_legs_out")
    joints = BodyModel().joints_from_axis_angle(np.stack([CANONICAL_POSES[n] for n in names]))
    assert body_orientation(joints) == ["up", "side", "down", None, None, None, None]


# Our pose names that people also wrote, word for word (registers_rich's docstring): allowed.
SHARED_NAMES = {"tree pose", "a handstand", "a lunge", "a bow", "lying on the side", "on hands and knees"}


@pytest.mark.parametrize("everyday", [False, True])
def test_deterministic_varied_and_never_a_dev_description(everyday):
    poses = PosePrior(5).sample(1500)
    joints = BodyModel().joints_from_axis_angle(poses)
    ids = list(range(2000, 3500))
    captions = Captioner(5).caption(joints, ids=ids)
    a = with_rich_registers(captions, poses, joints, ids, seed=5, everyday=everyday)
    assert a == with_rich_registers(captions, poses, joints, ids, seed=5, everyday=everyday)
    kept = sum(x == c for x, c in zip(a, captions))
    short = sum(len(x.split()) <= 12 for x in a)
    assert 0.2 <= kept / len(a) <= 0.6 and short / len(a) > 0.3
    dev = {d.lower().rstrip(".!") for path in (DEV_SET, BLIND_SET) for d in load_descriptions(path).descriptions}
    assert not [x for x in a if x.lower().rstrip(".") in dev - SHARED_NAMES]
    names = {p.lower() for v in EVERYDAY_NAMES.values() for p in v}
    used = sum(x.lower().rstrip(".") in names or any(x.lower().endswith(" " + n) for n in names) for x in a)
    assert (used > 30) if everyday else (used == 0)


def test_everyday_phrases_cover_every_canonical_pose_and_no_dev_description():
    assert set(EVERYDAY_NAMES) == set(CANONICAL_POSES)
    assert all(len(v) >= 6 and all(isinstance(p, str) and p.strip() for p in v) for v in EVERYDAY_NAMES.values())
    dev = {d.lower().strip(" .!") for path in (DEV_SET, BLIND_SET) for d in load_descriptions(path).descriptions}
    assert not [p for v in EVERYDAY_NAMES.values() for p in v if p.lower().strip(" .") in dev]
