"""The synthetic pose benchmark: an offline stand-in for PoseScript and 3DPW-style data.

`build_dataset(out, seed, ...)` samples poses from the pose prior, computes joints by FK,
captions them with the posecode captioner, renders the image2pose inputs, and writes one Parquet
file per split (TaskRecord rows for the three tasks) plus `dataset_card.json`.
Every pose belongs to exactly one split; the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from poserft.common.body import BodyModel
from poserft.common.schemas import POSE_RESPONSE, TASK_RECORD_SCHEMA, TASKS

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1
CAPTION_REGISTERS = ("none", "basic", "rich", "everyday")
REGISTER_DRAWS = 2  # rich: register captions drawn per train pose (kept when not the paragraph itself)

PROMPTS = {
    "text2pose": (
        "Generate the 3D body pose described here: {caption}",
        "Here is a description of a person's pose: {caption} What is the SMPL pose?",
        "Create the SMPL pose that matches this text. {caption}",
    ),
    "image2pose": (
        "<image>\nWhat is the SMPL pose of the person in this image?",
        "<image>\nEstimate the 3D body pose shown in the picture.",
        "<image>\nGive the SMPL pose of this person.",
    ),
    "pose2text": (
        "<pose>\nDescribe this body pose in words.",
        "<pose>\nWhat is this person doing with their body? Describe the pose.",
        "<pose>\nWrite a short description of this pose.",
    ),
}


class DatasetError(ValueError):
    """A dataset folder or file is missing, unreadable or has the wrong schema."""


def check_writable(out: Path) -> None:
    """Fail before any work if `out` cannot be created or written."""
    out = Path(out)
    probe_dir = out
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise DatasetError(f"--out {out}: {probe_dir} exists and is not a folder")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise DatasetError(f"--out {out}: folder {probe_dir} is not writable")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} exists and is not a folder")


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_dataset(
    out: str | Path,
    seed: int = 0,
    train_poses: int = 20000,
    val_poses: int = 1000,
    test_poses: int = 1000,
    image_size: int = 64,
    smpl_dir: str | None = None,
    progress: bool = True,
    caption_registers: str | bool = "none",
) -> dict:
    """Write the benchmark to `out`; returns the dataset card.

    `caption_registers` (`data.caption_registers`): "none" keeps the posecode paragraphs; "basic"
    rewrites some of them as canonical-pose names and short excerpts (poserft.data.registers);
    "rich" keeps every paragraph and adds up to REGISTER_DRAWS text2pose rows per train pose in
    people's registers (poserft.data.registers_rich: names, part descriptions, excerpts);
    "everyday" is "rich" whose names also draw from poserft.data.everyday_phrases. Val and
    test keep the paragraphs either way, so the synthetic metrics stay comparable."""
    from poserft.data.captioner import Captioner
    from poserft.data.pose_prior import PosePrior
    from poserft.data.render import render_skeleton

    out = Path(out)
    counts = {"train": train_poses, "val": val_poses, "test": test_poses}
    for split, n in counts.items():
        if int(n) < 1:
            raise DatasetError(f"{split}_poses must be at least 1, got {n}")
    registers = {False: "none", True: "basic"}.get(caption_registers, caption_registers)
    if registers not in CAPTION_REGISTERS:
        raise DatasetError(f"caption_registers is {caption_registers!r}; known: {', '.join(CAPTION_REGISTERS)}")
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)

    total = sum(counts.values())
    body = BodyModel(smpl_dir=smpl_dir)
    bar = tqdm(total=4 * total, desc="data build", unit="step", disable=not progress, smoothing=0)
    poses = PosePrior(seed).sample(total)  # (total, 24, 3) axis-angle
    bar.update(total)
    joints = np.concatenate(
        [body.joints_from_axis_angle(poses[i : i + 4096]) for i in range(0, total, 4096)]
    )  # (total, 24, 3) metres
    bar.update(total)
    captioner = Captioner(seed)
    captions = []
    for i in range(0, total, 2048):
        captions += captioner.caption(joints[i : i + 2048], ids=list(range(i, min(i + 2048, total))))
        bar.update(min(2048, total - i))
    if registers == "basic":  # opt-in everyday registers (poserft.data.registers); none keeps the default output
        from poserft.data.registers import with_registers

        captions = with_registers(captions, joints, list(range(total)), seed)
    images = []
    for i in range(total):
        images.append(render_skeleton(joints[i], size=image_size))
        bar.update(1)
    bar.close()

    rng = np.random.default_rng([seed, 7])
    template_choice = {task: rng.integers(0, len(PROMPTS[task]), size=total) for task in TASKS}
    card_files = {}
    start = 0
    for split in SPLITS:
        idx = np.arange(start, start + counts[split])
        start += counts[split]
        table = _split_table(split, idx, poses, joints, captions, images, template_choice)
        if split == "train" and registers in ("rich", "everyday"):
            rows = _register_rows(idx, poses, joints, seed, total, everyday=registers == "everyday")
            table = pa.concat_tables([table, rows])
        path = out / f"{split}.parquet"
        _write_atomic(path, lambda tmp, t=table: pq.write_table(t, tmp, compression="zstd", row_group_size=4096))
        card_files[split] = {"file": path.name, "rows": table.num_rows, "poses": len(idx), "sha256": _sha256(path)}

    card = {
        "name": "poserft-synthetic",
        "format_version": FORMAT_VERSION,
        "tasks": list(TASKS),
        "splits": card_files,
        "rows_per_task": {s: card_files[s]["poses"] for s in SPLITS},
        "captions": _caption_stats(captions, counts),
        "generator": {
            "seed": seed,
            "train_poses": train_poses,
            "val_poses": val_poses,
            "test_poses": test_poses,
            "image_size": image_size,
            "body_backend": body.backend,
            "pose_representation": "target_pose: 24x3 axis-angle (radians), target_joints: 24x3 metres, root at origin",
            "camera": "orthographic, front view (yaw 0, pitch 0); poses are expressed in the camera frame",
        },
    }
    if registers != "none":
        card["generator"]["caption_registers"] = registers
    _write_atomic(out / "dataset_card.json", lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2) + "\n"))
    return card


def _add_row(rows: dict, row_id: str, task: str, split: str, i, template: int, caption: str, image, poses, joints):
    """Append one TaskRecord of pose `i` to the column lists `rows`."""
    rows["id"].append(row_id)
    rows["task"].append(task)
    rows["split"].append(split)
    rows["pose_id"].append(int(i))
    rows["prompt"].append(PROMPTS[task][template].format(caption=caption))
    rows["image"].append(image)
    rows["target_pose"].append(poses[i].reshape(-1).astype(np.float32))
    rows["target_joints"].append(joints[i].reshape(-1).astype(np.float32))
    rows["reference_text"].append(caption if task == "pose2text" else POSE_RESPONSE)
    rows["caption"].append(caption)


def _split_table(split, idx, poses, joints, captions, images, template_choice) -> pa.Table:
    rows = {name: [] for name in TASK_RECORD_SCHEMA.names}
    for task in TASKS:
        for i in idx:
            image = images[i] if task == "image2pose" else None
            _add_row(
                rows,
                f"{split}-{i:06d}-{task}",
                task,
                split,
                i,
                template_choice[task][i],
                captions[i],
                image,
                poses,
                joints,
            )
    return pa.Table.from_pydict(rows, schema=TASK_RECORD_SCHEMA)


def _register_rows(idx, poses, joints, seed: int, total: int, everyday: bool = False) -> pa.Table:
    """text2pose rows in people's registers for the train poses `idx` (ids `...-text2pose-r{c}`)."""
    from poserft.data.captioner import Captioner
    from poserft.data.registers_rich import with_rich_registers

    rows = {name: [] for name in TASK_RECORD_SCHEMA.names}
    for c in range(1, REGISTER_DRAWS + 1):
        draw_ids = [int(i) + c * total for i in idx]  # other ids: other draws of the same pose
        paragraphs = Captioner(seed).caption(joints[idx], ids=draw_ids)
        drawn = with_rich_registers(paragraphs, poses[idx], joints[idx], draw_ids, seed, everyday)
        rng = np.random.default_rng([seed, 11, c])
        choice = rng.integers(0, len(PROMPTS["text2pose"]), size=len(idx))
        for k, (i, text, paragraph) in enumerate(zip(idx, drawn, paragraphs)):
            if text == paragraph:
                continue
            _add_row(
                rows, f"train-{i:06d}-text2pose-r{c}", "text2pose", "train", i, choice[k], text, None, poses, joints
            )
    return pa.Table.from_pydict(rows, schema=TASK_RECORD_SCHEMA)


def _caption_stats(captions: list[str], counts: dict) -> dict:
    lengths = np.array([len(c.split()) for c in captions])
    test = captions[counts["train"] + counts["val"] :]
    shared = Counter(test)
    return {
        "distinct": len(set(captions)),
        "total": len(captions),
        "mean_words": round(float(lengths.mean()), 2),
        "max_words": int(lengths.max()),
        "vocabulary": len({w.strip(".,;").lower() for c in captions for w in c.split()}),
        "test_poses_sharing_a_caption": int(sum(n for n in shared.values() if n > 1)),
    }


# ---- loading ----------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk that ends every complete PNG
CARD_NAME = "dataset_card.json"


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _short(err: BaseException, limit: int = 200) -> str:
    text = _one_line(err) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rebuild_hint(data_dir) -> str:
    return f"rebuild it with `poserft data build --out {data_dir}`"


def load_card(data_dir: str | Path) -> dict:
    """Read `dataset_card.json`, checked for the fields the loader relies on."""
    path = Path(data_dir) / CARD_NAME
    if not path.is_file():
        raise DatasetError(f"dataset card {path} is missing; {_rebuild_hint(data_dir)}")
    try:
        card = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise DatasetError(f"dataset card {path} cannot be read: {_one_line(err.strerror or err)}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"dataset card {path} is not UTF-8 text (byte offset {err.start}); {_rebuild_hint(data_dir)}"
        ) from None
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"dataset card {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            f"{_rebuild_hint(data_dir)}"
        ) from None
    except RecursionError:
        raise DatasetError(
            f"dataset card {path} is nested too deeply to be a dataset card; {_rebuild_hint(data_dir)}"
        ) from None
    if not isinstance(card, dict):
        raise DatasetError(
            f"dataset card {path} must hold a JSON object, not {type(card).__name__}; {_rebuild_hint(data_dir)}"
        )
    version = card.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise DatasetError(
            f"dataset card {path}: format_version is {version!r}, this poserft reads {FORMAT_VERSION}; "
            f"{_rebuild_hint(data_dir)}"
        )
    splits = card.get("splits")
    if not isinstance(splits, dict):
        raise DatasetError(
            f"dataset card {path}: 'splits' must be an object with one entry per split; {_rebuild_hint(data_dir)}"
        )
    for split in SPLITS:
        entry = splits.get(split)
        rows = entry.get("rows") if isinstance(entry, dict) else None
        if type(rows) is not int or rows < 0:
            raise DatasetError(
                f"dataset card {path}: 'splits.{split}.rows' must be a row count, got {rows!r}; "
                f"{_rebuild_hint(data_dir)}"
            )
    return card


def load_split(data_dir: str | Path, split: str, task: str | None = None) -> pa.Table:
    """Read one split, checked against the TaskRecord schema; optionally one task's rows.

    Every problem (missing or unreadable file, wrong schema, bad values, a card that does not
    match) is a one-line `DatasetError` naming the file and the column or row."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if task is not None and task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        what = "is not a folder" if data_dir.exists() else "does not exist"
        raise DatasetError(f"dataset folder {data_dir} {what}; build it with `poserft data build --out {data_dir}`")
    expected_rows = None
    if (data_dir / CARD_NAME).exists():  # optional (hand-made tables), but checked when present
        expected_rows = load_card(data_dir)["splits"][split]["rows"]
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        if path.exists():
            raise DatasetError(f"dataset file {path} is not a file; {_rebuild_hint(data_dir)}")
        raise DatasetError(f"dataset file {path} is missing; build it with `poserft data build --out {data_dir}`")
    try:
        names = pq.read_schema(path).names  # the footer only
        if len(set(names)) < len(names):
            # read_table's dataset scanner fails on repeated column names with the whole schema
            # as message; ParquetFile reads them, and validate_task_table names the column.
            with pq.ParquetFile(path) as pf:
                table = pf.read()
        else:
            table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types (ArrowInvalid, OSError, ...) for broken files
        raise DatasetError(
            f"dataset file {path} is not readable Parquet ({_short(err)}); {_rebuild_hint(data_dir)}"
        ) from None
    validate_task_table(table, str(path), split=split)
    if expected_rows is not None and table.num_rows != expected_rows:
        raise DatasetError(
            f"dataset file {path} has {table.num_rows} rows, but {CARD_NAME} lists {expected_rows}; "
            f"the file was replaced or the build did not finish, {_rebuild_hint(data_dir)}"
        )
    if task is not None:
        table = table.filter(pc.equal(table["task"], task))
        if table.num_rows == 0:
            raise DatasetError(f"dataset file {path} has no rows of task {task!r}; {_rebuild_hint(data_dir)}")
    return table


def _first(mask) -> int:
    """Index of the first true entry of a boolean (chunked) array; nulls count as false."""
    return int(np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0])


def _any(mask) -> bool:
    return bool(pc.any(pc.fill_null(mask, False)).as_py())


def _row(table: pa.Table, i: int) -> str:
    """`row 12 (id 'train-000004-image2pose')`; the id only when it is readable."""
    try:
        rid = table["id"][i].as_py() if pa.types.is_string(table.schema.field("id").type) else None
    except Exception:  # the id column itself may be the broken one
        rid = None
    return f"row {i} (id {rid!r})" if isinstance(rid, str) else f"row {i}"


def _type_problem(table: pa.Table, field: pa.Field, got: pa.DataType) -> str:
    want = field.type
    if pa.types.is_fixed_size_list(want):
        if pa.types.is_fixed_size_list(got) and got.list_size != want.list_size:
            return f"has {got.list_size} values per row, expected {want.list_size} (type {got}, expected {want})"
        if pa.types.is_list(got) or pa.types.is_large_list(got):
            lengths = pc.list_value_length(table[field.name])
            wrong = pc.not_equal(lengths, want.list_size)
            if _any(wrong):
                i = _first(wrong)
                return (
                    f"has {lengths[i].as_py()} values in {_row(table, i)}, expected {want.list_size} "
                    f"(type {got}, expected {want})"
                )
    return f"has type {got}, expected {want}"


def validate_task_table(table: pa.Table, where: str = "table", split: str | None = None) -> None:
    """Check a TaskRecord table: columns, types, nulls, tasks, split, ids, poses and images.

    Vectorised (pyarrow.compute / numpy), so a 60k-row split costs a few tens of milliseconds."""
    names = table.schema.names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"{where}: columns {repeated} appear more than once")
    missing = [f.name for f in TASK_RECORD_SCHEMA if f.name not in names]
    if missing:
        raise DatasetError(f"{where} is missing columns {missing}")
    for field in TASK_RECORD_SCHEMA:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise DatasetError(f"{where}: column {field.name!r} {_type_problem(table, field, got)}")
    if table.num_rows == 0:
        raise DatasetError(f"{where} has no rows")
    for name in TASK_RECORD_SCHEMA.names:  # Parquet readers do not check UTF-8 or offsets; to_pylist would fail later
        offset = 0
        for chunk in table[name].chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowException as err:
                m = re.search(r"index (\d+)", str(err))
                at = f" in {_row(table, offset + int(m.group(1)))}" if m and name != "id" else ""
                raise DatasetError(f"{where}: column {name!r} holds invalid data{at} ({_short(err)})") from None
            offset += len(chunk)
    for field in TASK_RECORD_SCHEMA:
        col = table[field.name]
        if not field.nullable and col.null_count:
            n = col.null_count
            raise DatasetError(
                f"{where}: column {field.name!r} is null in {n} row{'s' * (n != 1)}, first in "
                f"{_row(table, _first(pc.is_null(col)))}"
            )

    tasks = table["task"]
    unknown = pc.invert(pc.is_in(tasks, value_set=pa.array(TASKS)))
    if _any(unknown):
        i = _first(unknown)
        raise DatasetError(
            f"{where}: column 'task' has unknown value {tasks[i].as_py()!r} in {_row(table, i)}; known tasks: "
            f"{', '.join(TASKS)}"
        )
    if split is not None:
        other = pc.not_equal(table["split"], split)
        if _any(other):
            i = _first(other)
            raise DatasetError(
                f"{where}: column 'split' is {table['split'][i].as_py()!r} in {_row(table, i)}, but the file holds "
                f"the {split} split"
            )
    if pc.count_distinct(table["id"]).as_py() != table.num_rows:
        counts = pc.value_counts(table["id"])
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0].as_py()
        raise DatasetError(f"{where}: column 'id' has {dup['values']!r} in {dup['counts']} rows; ids must be unique")

    for name in ("target_pose", "target_joints"):
        offset = 0
        for chunk in table[name].chunks:
            flat = chunk.flatten()
            values = flat.to_numpy(zero_copy_only=False)  # nulls inside a list become NaN
            if flat.null_count or not np.isfinite(values).all():
                i = offset + int(np.flatnonzero(~np.isfinite(values))[0]) // chunk.type.list_size
                raise DatasetError(f"{where}: column {name!r} has a null, NaN or infinite value in {_row(table, i)}")
            offset += len(chunk)

    image = table["image"]
    no_image = pc.and_(pc.equal(tasks, "image2pose"), pc.is_null(image))
    if _any(no_image):
        raise DatasetError(
            f"{where}: column 'image' is null in {_row(table, _first(no_image))}, but image2pose rows need a PNG"
        )
    if image.null_count < table.num_rows:
        head = pc.binary_slice(image, 0, len(PNG_SIGNATURE))
        tail = pc.binary_slice(image, -len(PNG_TRAILER))
        png = pc.and_(
            pc.equal(head, pa.scalar(PNG_SIGNATURE, pa.binary())), pc.equal(tail, pa.scalar(PNG_TRAILER, pa.binary()))
        )
        not_png = pc.invert(pc.fill_null(png, True))
        if _any(not_png):
            raise DatasetError(
                f"{where}: column 'image' in {_row(table, _first(not_png))} is not a complete PNG (wrong signature or "
                "no IEND end chunk)"
            )
