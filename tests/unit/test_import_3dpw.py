"""`poserft data import 3dpw` on latin1 pickles (protocol 2) with 3DPW's keys and JPEG frames.

Checked with numbers: the body pose survives (PA-MPJPE to the FK of the world-frame original
< 1e-3 mm), the global orientation is the camera's view turned y-up (an upright person stands
along +y), the crop holds each of the person's keypoints (their colour is found where the crop
geometry puts them), splits follow the folders, `--stride` subsamples, campose_valid false rows
are skipped with their reason, byte-identical output, and 330 malformed inputs each give a
one-line ImportInputError naming the file.
"""

from __future__ import annotations

import io
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from poserft.common.body import JOINT, BodyModel
from poserft.common.metrics import pa_mpjpe
from poserft.data.dataset import load_split
from poserft.data.importers import ImportInputError, import_3dpw
from poserft.data.importers.common import CAMERA_TO_Y_UP, aa_to_matrix
from poserft.data.importers.threedpw import CROP_MARGIN, PERSON_KEYS, SEQUENCE_KEYS
from tests.import_fixtures import COCO18_FROM_SMPL, PERSON_RGB, write_3dpw

SIZE = 96


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw3d")
    info = write_3dpw(root / "src", frames=5, people=2)
    card = import_3dpw(root / "src", root / "out", image_size=SIZE, progress=False)
    return {"root": root, "src": root / "src", "out": root / "out", "info": info, "card": card}


def _rows(fixture):
    for split in ("train", "val", "test"):
        for row in load_split(fixture["out"], split).to_pylist():
            name, person, frame, _ = row["id"].removeprefix("3dpw-").rsplit("-", 3)
            yield split, name, int(person[1:]), int(frame[1:]), row


def test_pose_survives_and_root_is_the_camera_view_y_up(fixture):
    body = BodyModel()
    n = 0
    for _, name, p, i, row in _rows(fixture):
        seq = fixture["info"][name]
        world = seq["poses"][p][i].reshape(1, 24, 3)
        joints = np.asarray(row["target_joints"]).reshape(1, 24, 3)
        assert float(pa_mpjpe(torch.from_numpy(joints), torch.from_numpy(body.joints_from_axis_angle(world)))) < 1e-3
        expected_root = CAMERA_TO_Y_UP @ seq["cams"][i][:3, :3] @ aa_to_matrix(world[:, 0])[0]
        got_root = aa_to_matrix(np.asarray(row["target_pose"], dtype=np.float64).reshape(24, 3)[:1])[0]
        assert np.abs(got_root - expected_root).max() < 1e-5
        n += 1
    assert n == 3 * (5 * 2 - 1)  # three sequences, 5 frames x 2 people, one campose_valid false each


def test_target_pose_seen_from_the_front_matches_the_image(fixture):
    """Rendered from +z (x right, y up), the target joints land where the 2D keypoints are, up to
    scale and shift: the orientation is the camera's view, not mirrored or upside down."""
    for _, name, p, i, row in _rows(fixture):
        kp = fixture["info"][name]["keypoints"][p][i][:2].T  # (18, 2) pixels, y down
        joints = np.asarray(row["target_joints"]).reshape(24, 3)[list(COCO18_FROM_SMPL)]
        front = joints[:, :2] * [1.0, -1.0]  # image axes: x right, y down
        a = np.concatenate([front.reshape(-1, 1), np.tile(np.eye(2), (18, 1))], axis=1)  # kp = s * front + t
        (scale, tx, ty), *_ = np.linalg.lstsq(a, kp.reshape(-1), rcond=None)
        residual = kp - (scale * front + [tx, ty])
        extent = kp.max(0) - kp.min(0)
        assert scale > 0 and np.sqrt((residual**2).mean()) < 0.05 * extent.max(), row["id"]  # weak perspective at 4 m


def test_upright_person_stands_along_y(tmp_path):
    write_3dpw(tmp_path / "src", frames=3, people=1, standing=True, seed=4)
    import_3dpw(tmp_path / "src", tmp_path / "out", progress=False)
    for split in ("train", "val", "test"):
        joints = np.array(load_split(tmp_path / "out", split)["target_joints"].to_pylist()).reshape(-1, 24, 3)
        up = joints[:, JOINT["head"]] - joints[:, JOINT["pelvis"]]
        assert (up[:, 1] > 0.6).all()  # pelvis-to-head 0.7 m; the cameras pitch at most 0.2 rad
        assert (up[:, 1] / np.linalg.norm(up, axis=-1) > np.cos(0.21)).all()


def test_crop_contains_the_persons_keypoints(fixture):
    for _, name, p, i, row in _rows(fixture):
        kp = fixture["info"][name]["keypoints"][p][i]
        x, y = kp[0], kp[1]
        cx, cy = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2
        side = CROP_MARGIN * max(x.max() - x.min(), y.max() - y.min())
        u, v = (x - cx) / side * SIZE + SIZE / 2, (y - cy) / side * SIZE + SIZE / 2
        assert ((u > 2) & (u < SIZE - 2) & (v > 2) & (v < SIZE - 2)).all()
        img = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"), dtype=np.float64)
        assert img.shape == (SIZE, SIZE, 3)
        channel = 0 if PERSON_RGB[p][0] > PERSON_RGB[p][1] else 1
        for uu, vv in zip(u, v):
            patch = img[int(vv) - 2 : int(vv) + 3, int(uu) - 2 : int(uu) + 3]
            assert (patch[..., channel] - patch[..., 2]).max() > 100, (row["id"], uu, vv)


def test_splits_stride_skips_and_card(fixture, tmp_path):
    card = fixture["card"]
    rows = list(_rows(fixture))
    assert {(s, fixture["info"][n]["split"]) for s, n, *_ in rows} == {
        ("train", "train"),
        ("val", "validation"),
        ("test", "test"),
    }
    assert card["skipped"]["by_reason"] == {"campose_valid false": 3}
    assert "courtyard_fixture_00 frame 1 person 0: campose_valid false" in card["skipped"]["rows"]
    assert card["counts"]["train"] == {"text2pose": 0, "image2pose": 9, "pose2text": 0}
    assert card["licence"].startswith("3DPW:") and card["tasks"] == ["image2pose"]
    strided = import_3dpw(fixture["src"], tmp_path / "s2", stride=2, image_size=SIZE, progress=False)
    frames = {int(r["id"].rsplit("-f", 1)[1][:5]) for r in load_split(tmp_path / "s2", "train").to_pylist()}
    assert frames == {0, 2, 4} and strided["counts"]["train"]["image2pose"] == 6
    again = import_3dpw(fixture["src"], tmp_path / "again", image_size=SIZE, progress=False)
    for name in ("train.parquet", "val.parquet", "test.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (fixture["out"] / name).read_bytes()
    assert again["splits"] == card["splits"]


# ---- fuzz -------------------------------------------------------------------------------------

PKL = "sequenceFiles/train/courtyard_fixture_00.pkl"
IMG = "imageFiles/courtyard_fixture_00/image_00002.jpg"
ARRAY_KEYS = {
    "cam_poses": None,
    "cam_intrinsics": None,
    "img_frame_ids": None,
    "poses": 0,
    "betas": 0,
    "trans": 0,
    "poses2d": 0,
    "campose_valid": 0,
}


def _load(src):
    with open(src / PKL, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def _save(src, seq):
    with open(src / PKL, "wb") as fh:
        pickle.dump(seq, fh, protocol=2)


class _Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-poserft-test",))


def _mutations():
    def truncated(src, rng):
        data = (src / PKL).read_bytes()
        (src / PKL).write_bytes(data[: int(rng.integers(0, len(data) - 1))])
        return PKL

    def garbage(src, rng):
        (src / PKL).write_bytes(
            b"\x80\x02" + bytes(rng.integers(0, 256, int(rng.integers(0, 100)), dtype=np.uint8)) + b"\xff"
        )
        return PKL

    def not_a_dict(src, rng):
        _save(src, [[1, 2], "sequence", None, 3.5][int(rng.integers(0, 4))])
        return PKL

    def missing_key(src, rng):
        seq = _load(src)
        keys = [*SEQUENCE_KEYS, *PERSON_KEYS]
        del seq[keys[int(rng.integers(0, len(keys)))]]
        _save(src, seq)
        return PKL

    def wrong_shape(src, rng):
        seq = _load(src)
        key = list(ARRAY_KEYS)[int(rng.integers(0, len(ARRAY_KEYS)))]
        value = seq[key] if ARRAY_KEYS[key] is None else seq[key][0]
        arr = np.asarray(value)
        bad = [
            arr[..., :-1] if arr.ndim > 0 and arr.shape[-1] > 1 else arr[None, None],
            arr[:-1] if arr.ndim > 1 else arr[None, None],
            arr.reshape(-1)[:3] if arr.ndim > 1 else np.zeros((2, 2)),
            "text",
            None,
        ][int(rng.integers(0, 5))]
        if key == "betas" and bad is not None and not isinstance(bad, str):
            bad = np.zeros((2, 2))  # any length of betas is fine; a matrix is not
        if ARRAY_KEYS[key] is None:
            seq[key] = bad
        else:
            seq[key][0] = bad
        _save(src, seq)
        return PKL

    def person_lists_disagree(src, rng):
        seq = _load(src)
        key = PERSON_KEYS[int(rng.integers(0, len(PERSON_KEYS)))]
        seq[key] = seq[key][:1] if rng.random() < 0.5 else seq[key][0]
        if key == "poses" and isinstance(seq[key], list):
            seq["poses"] = []
        _save(src, seq)
        return PKL

    def nan_values(src, rng):
        seq = _load(src)
        key = ["poses", "cam_poses", "cam_intrinsics"][int(rng.integers(0, 3))]
        arr = np.array(seq[key][0] if key == "poses" else seq[key], dtype=np.float64)
        arr.reshape(-1)[int(rng.integers(0, arr.size))] = [np.nan, np.inf][int(rng.integers(0, 2))]
        if key == "poses":
            seq[key][0] = arr
        else:
            seq[key] = arr
        _save(src, seq)
        return PKL

    def bad_sequence_name(src, rng):
        seq = _load(src)
        seq["sequence"] = ["", "../etc", 17, None, ".hidden", "a/b"][int(rng.integers(0, 6))]
        _save(src, seq)
        return PKL

    def foreign_class(src, rng):
        seq = _load(src)
        seq["betas"][0] = _Evil()
        _save(src, seq)
        return PKL

    def image_missing(src, rng):
        (src / IMG).unlink()
        return IMG

    def image_broken(src, rng):
        data = (src / IMG).read_bytes()
        (src / IMG).write_bytes(
            [
                data[: int(rng.integers(0, len(data) // 2))],
                b"not a jpeg",
                bytes(rng.integers(0, 256, 64, dtype=np.uint8)),
            ][int(rng.integers(0, 3))]
        )
        return IMG

    def split_folder_missing(src, rng):
        shutil.rmtree(src / "sequenceFiles" / ["train", "validation", "test"][int(rng.integers(0, 3))])
        return "sequenceFiles/"

    return [
        truncated,
        garbage,
        not_a_dict,
        missing_key,
        wrong_shape,
        person_lists_disagree,
        nan_values,
        bad_sequence_name,
        foreign_class,
        image_missing,
        image_broken,
        split_folder_missing,
    ]


MUTATIONS = _mutations()
CASES = 330


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz3dpw")
    write_3dpw(root, frames=3, people=2, size=(96, 128))
    return root


@pytest.mark.parametrize("case", range(CASES))
def test_fuzz_malformed_inputs_give_one_line_errors(case, fuzz_base, tmp_path):
    rng = np.random.default_rng(case)
    mutate = MUTATIONS[case % len(MUTATIONS)]
    src = tmp_path / "src"
    shutil.copytree(fuzz_base, src)
    mentioned = mutate(src, rng)
    with pytest.raises(ImportInputError) as info:
        import_3dpw(src, tmp_path / "out", progress=False)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, (mutate.__name__, message)
    assert mentioned.rsplit("/", 1)[-1] in message or mentioned in message, (mutate.__name__, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], mutate.__name__


@pytest.mark.parametrize("kw", [{"stride": 0}, {"stride": -2}, {"image_size": 8}, {"root": "missing"}])
def test_bad_arguments(fuzz_base, tmp_path, kw):
    args = {"root": fuzz_base, "out": tmp_path / "out", "progress": False, **kw}
    with pytest.raises(ImportInputError, match="--stride|--image-size|--root"):
        import_3dpw(**args)
