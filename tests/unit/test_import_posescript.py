"""`poserft data import posescript` on PoseScript-shaped JSON and AMASS-style SMPL-H npz files.

Checked with numbers: a pose survives the import (PA-MPJPE to the FK of the original < 1e-3 mm),
a standing pose stands upright along +y and faces +z, splits, ids and caption indices are kept,
uncaptioned poses go to the pose-only file, skipped rows carry their reason, the same inputs give
byte-identical Parquet, and a failed import leaves the output folder as it was. The fuzz test
feeds 340 malformed inputs; each must be a one-line ImportInputError naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from poserft.common.body import JOINT, BodyModel
from poserft.common.metrics import pa_mpjpe
from poserft.data.dataset import load_card, load_split
from poserft.data.importers import ImportInputError, import_posescript
from poserft.data.importers.posescript import MAPPING_FILE
from tests.import_fixtures import to_amass, write_amass_npz, write_posescript

N_POSES = 40


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("posescript")
    fx = write_posescript(root / "src", n_poses=N_POSES, frames_per_seq=10)
    card = import_posescript(fx["posescript"], fx["amass"], root / "out", captions="all", progress=False)
    return {**fx, "root": root, "out": root / "out", "card": card}


def _joints(table) -> np.ndarray:
    return np.array(table["target_joints"].to_pylist()).reshape(-1, 24, 3)


def test_pose_survives_import(fixture):
    body = BodyModel()
    for split in ("train", "val", "test"):
        table = load_split(fixture["out"], split)
        original = body.joints_from_axis_angle(np.stack([fixture["poses"][i] for i in table["pose_id"].to_pylist()]))
        err_mm = pa_mpjpe(torch.from_numpy(_joints(table)), torch.from_numpy(original))
        assert float(err_mm.max()) < 1e-3
        # the stored axis-angle gives the stored joints
        aa = np.array(table["target_pose"].to_pylist()).reshape(-1, 24, 3)
        assert np.abs(body.joints_from_axis_angle(aa) - _joints(table)).max() < 1e-5


def test_standing_pose_is_upright_and_faces_the_viewer(tmp_path):
    fx = write_posescript(tmp_path / "src", n_poses=10)
    standing = np.zeros((3, 24, 3))
    write_amass_npz(fx["amass"] / "Fixture/S000/seq0000000_poses.npz", to_amass(standing, np.random.default_rng(3)))
    import_posescript(fx["posescript"], fx["amass"], tmp_path / "out", captions="auto", progress=False)
    table = load_split(tmp_path / "out", "train")
    joints = _joints(table)[np.isin(table["pose_id"].to_numpy(), [0, 1, 2])]
    assert len(joints) == 18  # 3 poses x 3 auto captions x 2 tasks
    up = joints[:, JOINT["head"]] - joints[:, JOINT["pelvis"]]
    assert (up[:, 1] > 0.5).all() and (np.abs(up[:, [0, 2]]) < 1e-4).all()
    assert (joints[:, JOINT["left_hip"], 0] > 0.05).all()  # the body's left is +x: it faces +z
    assert (joints[:, JOINT["left_foot"], 2] > 0.03).all()  # toes point forward, +z


def test_splits_ids_captions_and_pose_only(fixture):
    card, split_of = fixture["card"], fixture["split_of"]
    for split in ("train", "val", "test"):
        table = load_split(fixture["out"], split)
        assert set(table["pose_id"].to_pylist()) == {i for i, s in split_of.items() if s == split}
        for rid, pid, task in zip(table["id"].to_pylist(), table["pose_id"].to_pylist(), table["task"].to_pylist()):
            assert rid.startswith(f"posescript-{pid:06d}-") and rid.endswith(task)
        human = [c for c, r in zip(table["caption"].to_pylist(), table["id"].to_pylist()) if "-human0-" in r]
        assert all("pose number" in c for c in human)
        assert card["counts"][split]["text2pose"] == card["counts"][split]["pose2text"] == table.num_rows // 2
    n_train = sum(s == "train" for s in split_of.values())
    # every train pose has 3 auto captions, every second one a human caption too
    assert card["counts"]["train"]["text2pose"] == 3 * n_train + sum(
        1 for i, s in split_of.items() if s == "train" and i % 2 == 0
    )
    assert "pose_only" not in card and card["licence"].startswith("PoseScript: CC BY-NC-SA 4.0")


def test_uncaptioned_poses_go_to_pose_only(fixture, tmp_path):
    card = import_posescript(
        fixture["posescript"], fixture["amass"], tmp_path / "human", captions="human", progress=False
    )
    pose_only = pq.read_table(tmp_path / "human" / "pose_only.parquet")
    assert sorted(pose_only["pose_id"].to_pylist()) == [i for i in range(N_POSES) if i % 2 == 1]
    assert card["pose_only"]["rows"] == N_POSES // 2
    assert set(load_split(tmp_path / "human", "train")["pose_id"].to_pylist()) <= {i for i in range(0, N_POSES, 2)}


def test_skipped_rows_are_recorded_with_their_reason(fixture, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(fixture["root"] / "src", src)
    (src / "amass/Fixture/S000/seq0000010_poses.npz").unlink()
    mapping = json.loads((src / "posescript" / MAPPING_FILE).read_text())
    mapping["3"][2] = 500  # beyond the 10 frames of its sequence
    (src / "posescript" / MAPPING_FILE).write_text(json.dumps(mapping))
    card = import_posescript(src / "posescript", src / "amass", tmp_path / "out", progress=False)
    assert card["skipped"]["by_reason"] == {"npz missing": 10, "frame out of range": 1}
    assert "id 12: npz missing (Fixture/S000/seq0000010_poses.npz)" in card["skipped"]["rows"]
    assert "id 3: frame 500 beyond the 10 frames of Fixture/S000/seq0000000_poses.npz" in card["skipped"]["rows"]
    assert not {3, *range(10, 20)} & set(load_split(tmp_path / "out", "train")["pose_id"].to_pylist())


def test_same_inputs_give_identical_files(fixture, tmp_path):
    import_posescript(fixture["posescript"], fixture["amass"], tmp_path / "again", captions="all", progress=False)
    for name in ("train.parquet", "val.parquet", "test.parquet", "dataset_card.json"):
        assert (tmp_path / "again" / name).read_bytes() == (fixture["out"] / name).read_bytes()


def test_failed_import_leaves_the_output_as_it_was(fixture, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(fixture["out"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    src = tmp_path / "src"
    shutil.copytree(fixture["root"] / "src", src)
    (src / "amass/Fixture/S000/seq0000030_poses.npz").write_bytes(b"not a zip")  # the last sequence: rows were written
    with pytest.raises(ImportInputError, match="seq0000030_poses.npz is not a readable npz"):
        import_posescript(src / "posescript", src / "amass", out, captions="all", progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no staging folder left
    assert load_card(out)["splits"]["train"]["rows"] == fixture["card"]["splits"]["train"]["rows"]


def test_staging_folders_of_killed_imports_are_removed(fixture, tmp_path):
    dead = tmp_path / ".out.importing-4194305"  # above Linux's largest pid: no such process
    alive = tmp_path / f".out.importing-{os.getppid()}"  # a running process: perhaps another import
    for d in (dead, alive):
        d.mkdir()
        (d / "train.parquet").write_bytes(b"half")
    import_posescript(fixture["posescript"], fixture["amass"], tmp_path / "out", progress=False)
    assert not dead.exists() and alive.exists()


# ---- fuzz -------------------------------------------------------------------------------------

PS, AM = "posescript", "amass"
NPZ = "amass/Fixture/S000/seq0000000_poses.npz"


def _json_file(i: int) -> str:
    return [
        "ids_2_dataset_sequence_and_frame_index_100k.json",
        "train_ids_100k.json",
        "val_ids_100k.json",
        "test_ids_100k.json",
        "posescript_human_6293.json",
        "posescript_auto_100k.json",
    ][i % 6]


def _mutations():
    """(name, function(src folder, rng) -> file name the error must mention)."""

    def truncate(src, rng, name):
        p = src / PS / name
        data = p.read_bytes()
        p.write_bytes(data[: int(rng.integers(0, len(data) - 1))])
        return name

    def garbage(src, rng, name):
        (src / PS / name).write_bytes(bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8)) + b"\xff{")
        return name

    def wrong_type(src, rng, name):
        choices = [{"a": 1}, "x", 3] if "ids_100k" in name else [None, 3, "x", 1.5, [1, 2]]
        (src / PS / name).write_text(json.dumps(choices[int(rng.integers(0, len(choices)))]))
        return name

    def missing(src, rng, name):
        (src / PS / name).unlink()
        return name

    def bad_mapping_entry(src, rng, _):
        m = json.loads((src / PS / MAPPING_FILE).read_text())
        if rng.random() < 0.2:  # a key that is no pose id
            m[["abc", "-4", "1.5", ""][int(rng.integers(0, 4))]] = ["AMASS", "x.npz", 0]
        else:
            m[str(int(rng.integers(0, 20)))] = [
                ["AMASS", "x.npz"],
                ["AMASS", "x.npz", "3"],
                ["AMASS", "x.npz", -1],
                ["HumanAct", "x.npz", 0],
                ["AMASS", "/abs.npz", 0],
                ["AMASS", "../up.npz", 0],
                ["AMASS", 7, 0],
                "AMASS x.npz 0",
                ["AMASS", "", 0],
                ["AMASS", "x.npz", 1.0],
            ][int(rng.integers(0, 10))]
        (src / PS / MAPPING_FILE).write_text(json.dumps(m))
        return MAPPING_FILE

    def id_not_in_mapping(src, rng, _):
        m = json.loads((src / PS / MAPPING_FILE).read_text())
        del m[str(int(rng.integers(0, 20)))]
        (src / PS / MAPPING_FILE).write_text(json.dumps(m))
        return "_ids_100k.json"

    def bad_split_entry(src, rng, _):
        name = ["train_ids_100k.json", "val_ids_100k.json", "test_ids_100k.json"][int(rng.integers(0, 3))]
        ids = json.loads((src / PS / name).read_text())
        ids.append([None, 1.5, -3, "abc", True, [1], 10**9][int(rng.integers(0, 7))])
        (src / PS / name).write_text(json.dumps(ids))
        return name

    def duplicate_id(src, rng, _):
        ids = json.loads((src / PS / "train_ids_100k.json").read_text())
        other = ["train_ids_100k.json", "val_ids_100k.json"][int(rng.integers(0, 2))]
        extra = json.loads((src / PS / other).read_text())
        ids.append(extra[int(rng.integers(0, len(extra)))])
        (src / PS / "train_ids_100k.json").write_text(json.dumps(ids))
        return "ids_100k.json" if other == "train_ids_100k.json" else "split files"

    def bad_caption(src, rng, _):
        name = ["posescript_human_6293.json", "posescript_auto_100k.json"][int(rng.integers(0, 2))]
        caps = json.loads((src / PS / name).read_text())
        caps[str(int(rng.integers(0, 20)))] = [3, None, {"a": "b"}, ["ok", 4], [["nested"]]][int(rng.integers(0, 5))]
        (src / PS / name).write_text(json.dumps(caps))
        return name

    def npz_broken(src, rng, _):
        p = src / NPZ
        data = p.read_bytes()
        p.write_bytes([data[: int(rng.integers(1, len(data) - 1))], b"PK\x03\x04garbage", b""][int(rng.integers(0, 3))])
        return NPZ.rsplit("/", 1)[1]

    def npz_wrong(src, rng, _):
        poses = np.load(src / NPZ)["poses"]
        kind = int(rng.integers(0, 6))
        if kind == 0:
            write_amass_npz(src / NPZ, None, pose_body=poses[:, :66])  # no `poses` key
        else:
            bad = [poses[:, :72], poses[:, 0], poses[None], poses.astype(np.int32), poses.astype(str)][kind - 1]
            write_amass_npz(src / NPZ, bad)
        return NPZ.rsplit("/", 1)[1]

    def npz_nan(src, rng, _):
        poses = np.load(src / NPZ)["poses"]
        poses[int(rng.integers(0, 10)), int(rng.integers(0, 156))] = [np.nan, np.inf, -np.inf][int(rng.integers(0, 3))]
        write_amass_npz(src / NPZ, poses)
        return NPZ.rsplit("/", 1)[1]

    file_muts = [
        (f"{f.__name__}:{_json_file(i)}", lambda s, r, f=f, n=_json_file(i): f(s, r, n))
        for f in (truncate, garbage, wrong_type, missing)
        for i in range(6)
    ]
    return file_muts + [
        (f.__name__, lambda s, r, f=f: f(s, r, None))
        for f in (
            bad_mapping_entry,
            id_not_in_mapping,
            bad_split_entry,
            duplicate_id,
            bad_caption,
            npz_broken,
            npz_wrong,
            npz_nan,
        )
    ]


MUTATIONS = _mutations()
CASES = 340


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzbase")
    write_posescript(root, n_poses=20, frames_per_seq=10)
    return root


@pytest.mark.parametrize("case", range(CASES))
def test_fuzz_malformed_inputs_give_one_line_errors(case, fuzz_base, tmp_path):
    rng = np.random.default_rng(case)
    name, mutate = MUTATIONS[case % len(MUTATIONS)]
    src = tmp_path / "src"
    shutil.copytree(fuzz_base, src)
    mentioned = mutate(src, rng)
    with pytest.raises(ImportInputError) as info:
        import_posescript(src / PS, src / AM, tmp_path / "out", captions="all", progress=False)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, (name, message)
    assert mentioned in message, (name, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], name  # nothing written, no staging folder left


@pytest.mark.parametrize("args", [{"captions": "some"}, {"posescript_dir": "missing"}, {"amass_dir": "missing"}])
def test_bad_arguments(fuzz_base, tmp_path, args):
    kw = {
        "posescript_dir": fuzz_base / PS,
        "amass_dir": fuzz_base / AM,
        "out": tmp_path / "out",
        "progress": False,
        **args,
    }
    with pytest.raises(ImportInputError, match="--captions|--posescript|--amass"):
        import_posescript(**kw)


def test_out_with_foreign_files_is_refused(fuzz_base, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ImportInputError, match="holds files but no dataset_card.json"):
        import_posescript(fuzz_base / PS, fuzz_base / AM, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_fuzz_cases_cover_every_mutation():
    assert CASES >= 300 and CASES >= len(MUTATIONS)
    assert Path(__file__).name == "test_import_posescript.py"
