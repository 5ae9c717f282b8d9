"""`poserft data import jsonl`: the documented one-object-per-line format (docs/datasets.md).

Checked with numbers: each pose form (SMPL axis-angle, SMPL-X body + global orientation, joints)
survives (PA-MPJPE < 1e-3 mm against the FK of the original), joints are turned into a pose
whose FK reproduces them, a standing pose stays upright, images become square PNGs of the asked
size, ids, splits and prompts are kept, and 360 malformed lines each give a one-line
ImportInputError naming the file and line.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from poserft.common.body import JOINT, BodyModel
from poserft.common.metrics import mpjpe, pa_mpjpe
from poserft.data.dataset import load_card, load_split
from poserft.data.importers import ImportInputError, import_jsonl
from poserft.data.importers.jsonl import default_split, joints_to_pose
from tests.import_fixtures import smpl_poses


def _write(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonl")
    poses = smpl_poses(12, seed=5)
    joints = BodyModel().joints_from_axis_angle(poses)
    (root / "imgs").mkdir()
    Image.new("RGB", (40, 80), (200, 10, 10)).save(root / "imgs" / "tall.png")
    Image.new("RGB", (90, 30), (10, 200, 10)).save(root / "imgs" / "wide.jpg")
    lines = []
    for i in range(12):
        split = ("train", "val", "test")[i % 3]
        pose = [
            {"smpl_pose": poses[i].reshape(-1).tolist()},
            {"smplx_body_pose": poses[i, 1:22].reshape(-1).tolist(), "global_orient": poses[i, 0].tolist()},
            {"joints": (joints[i] + [0.3, 1.0, -2.0]).tolist()},  # anywhere in space: the root is taken out
        ][i % 3]
        task = ("text2pose", "pose2text", "image2pose")[i % 3] if i < 9 else "text2pose"
        line = {"id": f"mine-{i}", "task": task, "split": split, **pose}
        if task == "image2pose":
            line["image"] = ("tall.png", "wide.jpg")[i % 2]
        else:
            line["caption"] = f"caption   of pose {i}"
        if i == 4:
            line["prompt"] = "<pose>\nWhat pose is this?"
        lines.append(line)
    _write(root / "mine.jsonl", lines)
    card = import_jsonl(
        root / "mine.jsonl",
        root / "out",
        images=root / "imgs",
        image_size=32,
        licence="CC-BY-4.0 (mine)",
        progress=False,
    )
    return {"root": root, "poses": poses, "joints": joints, "lines": lines, "card": card}


def _by_id(out):
    return {r["id"]: r for s in ("train", "val", "test") for r in load_split(out, s).to_pylist()}


def test_each_pose_form_survives(data):
    rows, body = _by_id(data["root"] / "out"), BodyModel()
    for i, line in enumerate(data["lines"]):
        row = rows[line["id"]]
        original = data["poses"][i].copy()
        if "smplx_body_pose" in line:
            original[22:] = 0.0  # SMPL-X has no SMPL hand joints: zero rotations
        got = np.asarray(row["target_joints"], dtype=np.float64).reshape(1, 24, 3)
        want = body.joints_from_axis_angle(original[None])
        assert float(pa_mpjpe(torch.from_numpy(got), torch.from_numpy(want))) < 1e-3, line["id"]
        assert float(mpjpe(torch.from_numpy(got), torch.from_numpy(want))) < 1e-3, line[
            "id"
        ]  # same frame, no rotation needed
        if "smpl_pose" in line:
            assert np.abs(np.asarray(row["target_pose"]) - original.reshape(-1)).max() < 1e-6
    assert (
        data["card"]["source"]["joints_fit"]["joint_lines"] == 4
        and data["card"]["source"]["joints_fit"]["max_mm"] < 1e-3
    )


def test_joints_to_pose_with_other_proportions():
    body = BodyModel()
    joints = body.joints_from_axis_angle(smpl_poses(50, seed=9))
    stretched = joints * np.array([1.1, 0.9, 1.05])  # other proportions: directions change a little, lengths a lot
    pose = joints_to_pose(stretched, body.rest_joints.numpy())
    fk = body.joints_from_axis_angle(pose)
    from poserft.common.body import PARENTS

    kids = np.arange(1, 24)
    want = stretched[:, kids] - stretched[:, [PARENTS[k] for k in kids]]
    got = fk[:, kids] - fk[:, [PARENTS[k] for k in kids]]
    cos = (want * got).sum(-1) / np.linalg.norm(want, axis=-1) / np.linalg.norm(got, axis=-1)
    best_fit = np.isin(kids, [1, 2, 3, 12, 13, 14])  # children of the pelvis and spine3: one rotation for three bones
    assert cos[:, ~best_fit].min() > 1 - 1e-9
    assert cos[:, best_fit].min() > 0.99


def test_standing_joints_stand_upright(tmp_path):
    rest = BodyModel().rest_joints.numpy()
    _write(
        tmp_path / "s.jsonl",
        [{"id": "t", "task": "text2pose", "caption": "standing", "joints": rest.tolist(), "split": "train"}],
    )
    import_jsonl(tmp_path / "s.jsonl", tmp_path / "out", progress=False)
    joints = np.asarray(load_split(tmp_path / "out", "train")["target_joints"][0].as_py()).reshape(24, 3)
    up = joints[JOINT["head"]] - joints[JOINT["pelvis"]]
    assert up[1] > 0.5 and np.abs(up[[0, 2]]).max() < 1e-6
    assert (
        np.abs(np.asarray(load_split(tmp_path / "out", "train")["target_pose"][0].as_py())).max() < 1e-6
    )  # the rest pose


def test_rows_images_splits_prompts(data):
    rows = _by_id(data["root"] / "out")
    assert set(rows) == {ln["id"] for ln in data["lines"]}
    for i, line in enumerate(data["lines"]):
        row = rows[line["id"]]
        assert row["split"] == line["split"] and row["task"] == line["task"]
        assert row["pose_id"] == i + 1  # the line number
        if line["task"] == "image2pose":
            img = Image.open(io.BytesIO(row["image"]))
            assert img.format == "PNG" and img.size == (32, 32)
            pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
            colour = 0 if line["image"] == "tall.png" else 1
            assert pixels[16, 16, colour] > 150  # the picture, centred
            corner = pixels[16, 0] if line["image"] == "tall.png" else pixels[0, 16]
            assert corner.max() < 30  # padded to a square with black
            assert row["prompt"].startswith("<image>")
        else:
            assert row["caption"] == f"caption of pose {i}" and row["image"] is None
    assert rows["mine-4"]["prompt"] == "<pose>\nWhat pose is this?"
    assert rows["mine-1"]["reference_text"] == "caption of pose 1"
    card = load_card(data["root"] / "out")
    assert card["licence"] == "CC-BY-4.0 (mine)" and card["counts"]["train"]["text2pose"] == 4


def test_default_split_and_determinism(data, tmp_path):
    lines = [{"id": f"p{i}", "task": "text2pose", "caption": "x", "smpl_pose": [0.0] * 72} for i in range(400)]
    _write(tmp_path / "a.jsonl", lines)
    card = import_jsonl(tmp_path / "a.jsonl", tmp_path / "out", progress=False)
    counts = {s: card["splits"][s]["rows"] for s in ("train", "val", "test")}
    assert counts == {s: sum(default_split(f"p{i}") == s for i in range(400)) for s in counts}
    assert 330 < counts["train"] < 390 and counts["val"] > 5 and counts["test"] > 5
    import_jsonl(tmp_path / "a.jsonl", tmp_path / "again", progress=False)
    for name in ("train.parquet", "val.parquet", "test.parquet", "dataset_card.json"):
        assert (tmp_path / "again" / name).read_bytes().replace(b"again", b"out") == (
            tmp_path / "out" / name
        ).read_bytes()


# ---- fuzz -------------------------------------------------------------------------------------

GOOD = {"id": "g", "task": "text2pose", "caption": "a pose", "smpl_pose": [0.1] * 72, "split": "train"}
GOOD_IMAGE = {"id": "i", "task": "image2pose", "image": "ok.png", "smpl_pose": [0.0] * 72, "split": "val"}


def _bad_lines():
    """Malformed lines, each with what the error must say; every one sits on line 2 of a file."""
    bad = []
    for raw in ["{", "[1, 2]", '"text"', "17", "null", '{"id": "x",}', "\xff\xfe", "[" * 3000 + "]" * 3000]:
        bad.append((raw, ""))
    bad += [({**GOOD, key: 1}, key) for key in ("pose", "ID", "smpl", "frame", "caption_2", "weight")]
    for key in ("id", "task", "caption"):
        for value in (None, 3, "", "   ", [], {"a": 1}):
            line = {**GOOD, key: value}
            if value is None:
                del line[key]
            bad.append((line, key if key != "task" else "task"))
    bad += [({**GOOD, "task": t}, "task") for t in ("Text2Pose", "pose", "image-to-pose")]
    bad += [({**GOOD, "split": s}, "split") for s in ("training", "", None, 1, "TEST")]
    bad += [({**GOOD, "prompt": p}, "prompt") for p in ("", 5, "show <image> please", "a <pose> b")]
    bad += [({**GOOD, "task": "pose2text", "prompt": "Describe it."}, "<pose>")]
    bad += [({**GOOD_IMAGE, "prompt": "What is it?"}, "<image>")]
    bad += [({**GOOD, "image": "ok.png"}, "image")]
    bad += [({k: v for k, v in GOOD_IMAGE.items() if k != "image"}, "image")]
    bad += [
        ({**GOOD_IMAGE, "image": p}, "image")
        for p in ("/etc/passwd", "../ok.png", "missing.png", "broken.png", "empty.png")
    ]
    for n in (0, 3, 71, 73, 144):
        bad.append(({**GOOD, "smpl_pose": [0.0] * n}, "smpl_pose"))
    for v in ("NaN", "Infinity", "-Infinity"):
        bad.append((json.dumps(GOOD).replace("[0.1, ", f"[{v}, ", 1), "smpl_pose"))
    for v in ("1", None, True, [1], {}):
        bad.append(({**GOOD, "smpl_pose": [v] + [0.0] * 71}, "smpl_pose"))
    bad.append(({**GOOD, "smpl_pose": "0 " * 72}, "smpl_pose"))
    no_pose = {k: v for k, v in GOOD.items() if k != "smpl_pose"}
    bad += [(no_pose, "pose field"), ({**GOOD, "joints": [[0.0] * 3] * 24}, "pose field")]
    bad += [
        ({**no_pose, "smplx_body_pose": [0.0] * 63}, "global_orient"),
        ({**GOOD, "global_orient": [0.0] * 3}, "global_orient"),
    ]
    bad += [
        ({**no_pose, "smplx_body_pose": [0.0] * n, "global_orient": [0.0] * 3}, "smplx_body_pose")
        for n in (0, 62, 66, 69)
    ]
    bad += [
        ({**no_pose, "smplx_body_pose": [0.0] * 63, "global_orient": g}, "global_orient")
        for g in ([0.0] * 2, [0.0] * 4, "x", [None] * 3)
    ]
    bad += [
        ({**no_pose, "joints": j}, "joints")
        for j in ([[0.0] * 3] * 23, [[0.0] * 2] * 24, [0.0] * 71, [[0.0] * 3] * 25, "joints")
    ]
    bad += [({**GOOD, "id": "first"}, "appears on an earlier line")]
    return bad


BAD = _bad_lines()
CASES = 360


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzjsonl")
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "ok.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.mark.parametrize("case", range(CASES))
def test_fuzz_malformed_lines_give_one_line_errors(case, fuzz_base, tmp_path):
    rng = np.random.default_rng(case)
    line, mentioned = BAD[case % len(BAD)]
    first = {**GOOD, "id": "first"}
    if case >= len(BAD):  # later rounds: the bad line among good ones, or in a file with blank lines
        filler = [{**GOOD, "id": f"f{k}"} for k in range(int(rng.integers(1, 5)))]
        lines, line_no = ([first, line, *filler], 2) if rng.random() < 0.5 else ([first, "", line], 3)
    else:
        lines, line_no = [first, line], 2
    src = tmp_path / "src"
    shutil.copytree(fuzz_base, src)
    path = src / "data.jsonl"
    if isinstance(line, str):
        path.write_bytes(
            "".join(json.dumps(x) + "\n" if isinstance(x, dict) else x + "\n" for x in lines).encode(
                "utf-8", "surrogateescape"
            )
        )
    else:
        _write(path, lines)
    with pytest.raises(ImportInputError) as info:
        import_jsonl(path, tmp_path / "out", progress=False)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, (line, message)
    assert f"data.jsonl:{line_no}" in message and mentioned in message, (line, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_fuzz_has_enough_cases():
    assert CASES >= 300 and len(BAD) <= CASES


@pytest.mark.parametrize("kw", [{"file": "missing.jsonl"}, {"images": "missing"}, {"image_size": 8}, {"file": "empty"}])
def test_bad_arguments(tmp_path, kw):
    (tmp_path / "empty").write_text("\n\n")
    args = {"file": tmp_path / "empty", "out": tmp_path / "out", "progress": False, **kw}
    if isinstance(args["file"], str):
        args["file"] = tmp_path / args["file"]
    with pytest.raises(ImportInputError, match="--file|--images|--image-size|no rows"):
        import_jsonl(**args)
