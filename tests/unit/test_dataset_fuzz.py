"""Fuzzing the Parquet dataset loader: every malformed input is a one-line DatasetError.

The valid base is a tiny benchmark built here with `build_dataset` (3 train poses, under a
second), so the tests need no data/synth. Malformed inputs, 1,075 generated ones that must fail
(hypothesis runs fewer than max_examples only where it exhausts a small space): Parquet files cut
at random offsets, random bytes, tables with missing columns, wrong column types,
wrong list lengths, NaN/inf/null poses, unknown tasks, nulls in required columns, images that are
not PNGs, wrong split values, repeated ids or columns, empty tables, corrupt dataset cards.
Each must raise DatasetError (never a pyarrow, OS or key error) naming the file and the column
or row. Another 100 files with random byte flips inside may still decode, so those may also load.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from poserft.common.schemas import AA_DIM, TASK_RECORD_SCHEMA, TASKS
from poserft.data.dataset import (
    PNG_SIGNATURE,
    PNG_TRAILER,
    SPLITS,
    DatasetError,
    build_dataset,
    load_split,
    validate_task_table,
)

FUZZ = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
)
REQUIRED = [f.name for f in TASK_RECORD_SCHEMA if not f.nullable]
POSES = ("target_pose", "target_joints")


class Base(dict):
    """The tiny valid benchmark: keys dir, table (train), bytes (train.parquet), card."""

    def __repr__(self) -> str:  # hypothesis prints the arguments of failing examples
        return f"<tiny benchmark in {self['dir']}>"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "synth"
    build_dataset(out, seed=0, train_poses=3, val_poses=2, test_poses=2, image_size=16, progress=False)
    table = load_split(out, "train")
    assert table.num_rows == 9 and sorted(set(table["task"].to_pylist())) == sorted(TASKS)
    card = json.loads((out / "dataset_card.json").read_text())
    return Base(dir=out, table=table, bytes=(out / "train.parquet").read_bytes(), card=card)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    """One folder per test module run; each example overwrites the files in it."""
    return tmp_path_factory.mktemp("cases")


def _error(data_dir: Path, split: str = "train", task: str | None = None) -> str:
    """The DatasetError message of load_split; fails the test on success or any other exception."""
    try:
        load_split(data_dir, split, task)
    except DatasetError as err:
        msg = str(err)
        assert len(msg.splitlines()) == 1, f"message is not one line: {msg!r}"
        return msg
    except Exception as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"load_split raised {type(err).__name__} instead of DatasetError: {err!r}")
    pytest.fail("load_split accepted a malformed dataset")


def _fresh(case_dir: Path, name: str) -> Path:
    d = case_dir / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d


def _write_table(case_dir: Path, name: str, table: pa.Table) -> Path:
    d = _fresh(case_dir, name)
    pq.write_table(table, d / "train.parquet")
    return d


def test_base_is_valid(base):
    validate_task_table(base["table"], "base", split="train")
    for split in SPLITS:
        assert load_split(base["dir"], split).num_rows == base["card"]["splits"][split]["rows"]


# ---- broken files ------------------------------------------------------------------------


@settings(max_examples=200, **FUZZ)
@given(data=st.data())
def test_truncated_parquet(base, case_dir, data):
    cut = data.draw(st.integers(0, len(base["bytes"]) - 1), label="cut")
    d = _fresh(case_dir, "truncated")
    (d / "train.parquet").write_bytes(base["bytes"][:cut])
    msg = _error(d)
    assert str(d / "train.parquet") in msg and "is not readable Parquet" in msg


@settings(max_examples=100, **FUZZ)
@given(body=st.binary(max_size=2048), magic=st.sampled_from(["none", "head", "both"]))
def test_random_bytes(case_dir, body, magic):
    content = {"none": body, "head": b"PAR1" + body, "both": b"PAR1" + body + b"PAR1"}[magic]
    d = _fresh(case_dir, "random")
    (d / "train.parquet").write_bytes(content)
    msg = _error(d)
    assert str(d / "train.parquet") in msg and "is not readable Parquet" in msg


@settings(max_examples=100, **FUZZ)
@given(data=st.data())
def test_flipped_bytes_load_or_fail_cleanly(base, case_dir, data):
    """Damage inside a valid file may decode to other values; it must never escape as another error."""
    raw = bytearray(base["bytes"])
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(0, len(raw) - 1), label="offset")
        raw[i] = data.draw(st.integers(0, 255), label="byte")
    d = _fresh(case_dir, "flipped")
    (d / "train.parquet").write_bytes(bytes(raw))
    try:
        load_split(d, "train")
    except DatasetError as err:
        assert len(str(err).splitlines()) == 1 and str(d / "train.parquet") in str(err)
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"load_split raised {type(err).__name__} instead of DatasetError: {err!r}")


# ---- malformed tables ----------------------------------------------------------------------


def _replace(table: pa.Table, name: str, column) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def _with_value(table: pa.Table, name: str, row: int, value) -> pa.Table:
    values = table[name].to_pylist()
    values[row] = value
    return _replace(table, name, pa.array(values, table.schema.field(name).type))


OTHER_TYPES = [
    pa.int64(),
    pa.int32(),
    pa.float32(),
    pa.float64(),
    pa.bool_(),
    pa.string(),
    pa.large_string(),
    pa.binary(),
    pa.null(),
    pa.list_(pa.float32()),
    pa.list_(pa.string()),
    pa.list_(pa.float32(), 71),
    pa.list_(pa.float64(), 72),
    pa.dictionary(pa.int32(), pa.string()),
]


def _column_of_type(table: pa.Table, name: str, dtype: pa.DataType):
    """The column converted to `dtype` when pyarrow can, else nulls of that type."""
    try:
        return table[name].cast(dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(table.num_rows, dtype)


def mut_missing_columns(draw, t):
    drop = draw(st.sets(st.sampled_from(TASK_RECORD_SCHEMA.names), min_size=1))
    kept = [n for n in t.schema.names if n not in drop]
    return t.select(kept), [r"is missing columns"] + [re.escape(repr(n)) for n in sorted(drop)]


def mut_wrong_type(draw, t):
    name = draw(st.sampled_from(TASK_RECORD_SCHEMA.names))
    dtype = draw(st.sampled_from([d for d in OTHER_TYPES if d != t.schema.field(name).type]))
    return _replace(t, name, _column_of_type(t, name, dtype)), [rf"column '{name}' has (type|\d+ values)", "expected"]


def mut_list_length(draw, t):
    name = draw(st.sampled_from(POSES))
    row = draw(st.integers(0, t.num_rows - 1))
    length = draw(st.integers(0, 2 * AA_DIM).filter(lambda n: n != AA_DIM))
    values = [list(v) for v in t[name].to_pylist()]
    values[row] = (values[row] * 3)[:length]
    col = pa.array(values, pa.list_(pa.float32()))
    return _replace(t, name, col), [rf"column '{name}' has {length} values in row {row} \(id '", "expected 72"]


def mut_fixed_size(draw, t):
    name = draw(st.sampled_from(POSES))
    size = draw(st.integers(1, 2 * AA_DIM).filter(lambda n: n != AA_DIM))
    flat = np.resize(t[name].combine_chunks().flatten().to_numpy(), t.num_rows * size).astype(np.float32)
    col = pa.FixedSizeListArray.from_arrays(pa.array(flat), size)
    return _replace(t, name, col), [rf"column '{name}' has {size} values per row, expected 72"]


def mut_non_finite(draw, t):
    name = draw(st.sampled_from(POSES))
    row = draw(st.integers(0, t.num_rows - 1))
    pos = draw(st.integers(0, AA_DIM - 1))
    bad = draw(st.sampled_from([math.nan, math.inf, -math.inf, None]))
    flat = t[name].combine_chunks().flatten()
    values = flat.to_numpy().copy()
    mask = np.zeros(len(values), bool)
    if bad is None:
        mask[row * AA_DIM + pos] = True
    else:
        values[row * AA_DIM + pos] = bad
    col = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32(), mask=mask), AA_DIM)
    return _replace(t, name, col), [rf"column '{name}' has a null, NaN or infinite value in row {row} \(id '"]


def mut_unknown_task(draw, t):
    row = draw(st.integers(0, t.num_rows - 1))
    task = draw(st.text(max_size=12).filter(lambda s: s not in TASKS))
    return _with_value(t, "task", row, task), [rf"column 'task' has unknown value {re.escape(repr(task))} in row {row}"]


def mut_nulls(draw, t):
    name = draw(st.sampled_from(REQUIRED))
    rows = draw(st.sets(st.integers(0, t.num_rows - 1), min_size=1))
    mask = pa.array([i in rows for i in range(t.num_rows)])
    col = pc.if_else(mask, pa.scalar(None, t.schema.field(name).type), t[name])
    n = len(rows)
    return _replace(t, name, col), [rf"column '{name}' is null in {n} rows?, first in row {min(rows)}\b"]


def _image_rows(t) -> list[int]:
    return [i for i, task in enumerate(t["task"].to_pylist()) if task == "image2pose"]


def mut_not_png(draw, t):
    images = t["image"].to_pylist()
    row = draw(st.integers(0, t.num_rows - 1))  # any row: text rows must not carry junk images either
    png = next(im for im in images if im is not None)
    kind = draw(st.sampled_from(["random", "truncated", "no_signature", "jpeg"]))
    if kind == "random":
        data = draw(st.binary(max_size=200))
    elif kind == "truncated":
        data = png[: draw(st.integers(0, len(png) - 1))]
    elif kind == "no_signature":
        data = draw(st.binary(min_size=1, max_size=8)) + png[8:]
    else:
        data = b"\xff\xd8\xff\xe0" + draw(st.binary(max_size=64)) + b"\xff\xd9"
    assume(not (data.startswith(PNG_SIGNATURE) and data.endswith(PNG_TRAILER)))
    return _with_value(t, "image", row, data), [rf"column 'image' in row {row} \(id '.*'\) is not a complete PNG"]


def mut_missing_image(draw, t):
    row = draw(st.sampled_from(_image_rows(t)))
    return _with_value(t, "image", row, None), [
        rf"column 'image' is null in row {row} \(id '.*image2pose'\), but image2pose rows need a PNG"
    ]


def mut_empty(draw, t):
    keep = draw(st.sampled_from(["slice", "schema_only"]))
    empty = t.slice(0, 0) if keep == "slice" else TASK_RECORD_SCHEMA.empty_table()
    return empty, ["has no rows"]


def mut_wrong_split(draw, t):
    row = draw(st.integers(0, t.num_rows - 1))
    split = draw(
        st.one_of(st.sampled_from(["val", "test", "Train", ""]), st.text(max_size=6)).filter(lambda s: s != "train")
    )
    return _with_value(t, "split", row, split), [
        rf"column 'split' is {re.escape(repr(split))} in row {row}",
        "the train split",
    ]


def mut_duplicate_id(draw, t):
    a, b = draw(st.lists(st.integers(0, t.num_rows - 1), min_size=2, max_size=2, unique=True))
    rid = t["id"][a].as_py()
    return _with_value(t, "id", b, rid), [rf"column 'id' has {re.escape(repr(rid))} in 2 rows; ids must be unique"]


def mut_duplicate_column(draw, t):
    name = draw(st.sampled_from(TASK_RECORD_SCHEMA.names))
    return t.append_column(name, t[name]), [rf"columns \['{name}'\] appear more than once"]


MUTATIONS = {
    f.__name__.removeprefix("mut_"): f
    for f in [
        mut_missing_columns,
        mut_wrong_type,
        mut_list_length,
        mut_fixed_size,
        mut_non_finite,
        mut_unknown_task,
        mut_nulls,
        mut_not_png,
        mut_missing_image,
        mut_empty,
        mut_wrong_split,
        mut_duplicate_id,
        mut_duplicate_column,
    ]
}


@pytest.mark.parametrize("kind", list(MUTATIONS))
@settings(max_examples=50, **FUZZ)
@given(data=st.data())
def test_malformed_table(base, case_dir, kind, data):
    """Up to 50 random instances of each kind (fewer where hypothesis exhausts a small space),
    written to Parquet and loaded."""
    table, patterns = MUTATIONS[kind](data.draw, base["table"])
    d = _write_table(case_dir, kind, table)
    msg = _error(d)
    assert msg.startswith(str(d / "train.parquet")), msg
    for pattern in patterns:
        assert re.search(pattern, msg), (pattern, msg)


def test_task_filter_with_no_rows(base, case_dir):
    t = base["table"]
    d = _write_table(case_dir, "no_pose2text", t.filter(pc.not_equal(t["task"], "pose2text")))
    assert load_split(d, "train", task="text2pose").num_rows == 3
    assert re.search(r"train.parquet has no rows of task 'pose2text'", _error(d, task="pose2text"))


# ---- folders and the dataset card ----------------------------------------------------------


def _copy_base(base, case_dir, name) -> Path:
    d = case_dir / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(base["dir"], d)
    return d


def test_missing_folder_and_split_files(base, case_dir, tmp_path):
    assert re.fullmatch(
        rf"dataset folder {re.escape(str(tmp_path / 'nope'))} does not exist; build it with .*",
        _error(tmp_path / "nope"),
    )
    (tmp_path / "file").write_text("x")
    assert "dataset folder" in _error(tmp_path / "file") and "is not a folder" in _error(tmp_path / "file")
    for split in SPLITS:
        d = _copy_base(base, case_dir, f"missing_{split}")
        (d / f"{split}.parquet").unlink()
        assert re.search(
            rf"dataset file .*{split}.parquet is missing; build it with `poserft data build --out ", _error(d, split)
        )
        others = [s for s in SPLITS if s != split]
        assert all(load_split(d, s).num_rows for s in others)  # the other splits still load
        (d / f"{split}.parquet").mkdir()
        assert f"{split}.parquet is not a file" in _error(d, split)
    d = _copy_base(base, case_dir, "zero_bytes")
    (d / "val.parquet").write_bytes(b"")
    assert "val.parquet is not readable Parquet" in _error(d, "val")


def test_split_file_that_does_not_match_the_card(base, case_dir):
    d = _copy_base(base, case_dir, "replaced")
    shutil.copy(d / "test.parquet", d / "val.parquet")  # same size, other poses
    assert re.search(r"val.parquet: column 'split' is 'test' in row 0", _error(d, "val"))
    t = base["table"]
    pq.write_table(t.slice(0, 6), d / "train.parquet")  # a valid table, but not the one the card lists
    assert re.search(r"train.parquet has 6 rows, but dataset_card.json lists 9; .*rebuild it", _error(d))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def _card_error(d: Path, split: str = "train") -> str:
    msg = _error(d, split)
    assert msg.startswith(f"dataset card {d / 'dataset_card.json'}"), msg
    return msg


@settings(max_examples=60, **FUZZ)
@given(content=st.binary(max_size=300))
def test_card_random_bytes(base, case_dir, content):
    d = _copy_base(base, case_dir, "card_bytes")
    (d / "dataset_card.json").write_bytes(content)
    _card_error(d)


@settings(max_examples=60, **FUZZ)
@given(data=st.data())
def test_card_truncated(base, case_dir, data):
    text = json.dumps(base["card"], indent=2)
    cut = data.draw(st.integers(0, len(text) - 1), label="cut")  # never the closing brace
    d = _copy_base(base, case_dir, "card_truncated")
    (d / "dataset_card.json").write_text(text[:cut])
    assert "is not valid JSON" in _card_error(d) and "line" in _card_error(d)


@settings(max_examples=60, **FUZZ)
@given(value=json_values)
def test_card_random_json(base, case_dir, value):
    d = _copy_base(base, case_dir, "card_json")
    (d / "dataset_card.json").write_text(json.dumps(value))
    _card_error(d)


CARD_KEYS = (
    [("format_version",), ("splits",)] + [(("splits", s)) for s in SPLITS] + [("splits", s, "rows") for s in SPLITS]
)


@settings(max_examples=80, **FUZZ)
@given(path=st.sampled_from(CARD_KEYS), value=st.one_of(st.just("<deleted>"), json_values))
def test_card_with_a_broken_field(base, case_dir, path, value):
    card = json.loads(json.dumps(base["card"]))
    node = card
    for k in path[:-1]:
        node = node[k]
    assume(value != node[path[-1]])
    if value == "<deleted>":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    split = path[1] if len(path) > 1 else "train"
    d = _copy_base(base, case_dir, "card_field")
    (d / "dataset_card.json").write_text(json.dumps(card))
    msg = _error(d, split)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and path[-1] == "rows":
        assert f"{split}.parquet has" in msg and "dataset_card.json lists" in msg  # a plausible but wrong count
    else:
        assert msg.startswith(f"dataset card {d / 'dataset_card.json'}"), msg
