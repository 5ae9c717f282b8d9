"""Training rows drawn from several dataset folders with sampling weights (`data.sources`).

A mixture is a list of folders written by `poserft data build` or `poserft data import`, each
with a weight. SFT, the retriever and the RL controller read their rows through `load_mixture`:

- one folder (the default, `data.dir`): exactly `load_split` of that folder;
- several folders, train split: the mixed split has as many rows as the folders together, and
  folder i supplies the share weight_i / sum(weights) of them. A folder asked for fewer rows than
  it has gives a seeded random subset; one asked for more repeats all its rows and then a seeded
  subset (repeated rows get ids ending in `#2`, `#3`, ...), so each row id stays unique;
- several folders, val and test: all their rows (weights steer training, not evaluation).

Row ids get the folder's name as a prefix (`posescript:posescript-000012-human0-text2pose`) so a
row can be traced back to its folder. A folder without rows of the task asked for (3DPW has
no text2pose rows) is left out of that task's mixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from poserft.common.schemas import TASK_RECORD_SCHEMA
from poserft.data.dataset import CARD_NAME, DatasetError, load_card, load_split
from poserft.data.importers.common import POSE_ONLY_NAME, POSE_ONLY_SCHEMA


@dataclass(frozen=True)
class Source:
    dir: Path
    weight: float = 1.0
    name: str = ""
    pose_only: bool = False


def resolve_sources(data) -> list[Source]:
    """A folder (str or Path), a DataConfig, or a list of DataSource / dicts -> checked `Source`s."""
    if hasattr(data, "sources") and hasattr(data, "dir"):  # a DataConfig
        data = data.sources or data.dir
    if isinstance(data, (str, Path)):
        return [Source(Path(data), 1.0, Path(data).name)]
    sources = []
    for i, s in enumerate(data):
        s = s if isinstance(s, dict) else s.model_dump()
        folder = Path(s["dir"])
        weight = float(s.get("weight", 1.0))
        if not weight > 0 or not np.isfinite(weight):
            raise DatasetError(f"data.sources[{i}].weight is {weight}, it must be a positive number")
        sources.append(Source(folder, weight, s.get("name") or folder.name, bool(s.get("pose_only", False))))
    if not sources:
        raise DatasetError("data.sources is empty; list at least one dataset folder or leave it out to use data.dir")
    names = [s.name for s in sources]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise DatasetError(f"data.sources: two folders are named {dup!r}; give each a distinct `name`")
    return sources


def _rows_in_card(source: Source, split: str) -> int | None:
    if not (source.dir / CARD_NAME).is_file():
        return None
    return load_card(source.dir)["splits"][split]["rows"]


def _source_table(source: Source, split: str, task: str | None) -> pa.Table | None:
    if _rows_in_card(source, split) == 0:
        return None
    table = load_split(source.dir, split)
    if task is not None:
        table = table.filter(pc.equal(table["task"], task))
    return table if table.num_rows else None


def _prefixed(table: pa.Table, name: str, repeat: int = 1) -> pa.Table:
    suffix = "" if repeat == 1 else f"#{repeat}"
    ids = pc.binary_join_element_wise(pa.scalar(f"{name}:"), table["id"], pa.scalar(suffix), "")
    return table.set_column(table.schema.get_field_index("id"), "id", ids)


def mixture_counts(sizes: list[int], weights: list[float]) -> list[int]:
    """Rows drawn from each folder: shares of sum(sizes) proportional to the weights, at least 1 each."""
    total, w = sum(sizes), np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:  # largest remainders
        counts[i] += 1
    return [max(1, int(c)) for c in counts]


def load_mixture(data, split: str, task: str | None = None, seed: int = 0) -> pa.Table:
    """The rows of `split` (optionally one task) drawn from `data` (see the module docstring)."""
    sources = resolve_sources(data)
    if len(sources) == 1:
        return load_split(sources[0].dir, split, task)
    tables = [(s, _source_table(s, split, task)) for s in sources]
    tables = [(i, s, t) for i, (s, t) in enumerate(tables) if t is not None]
    if not tables:
        what = f"rows of task {task!r}" if task else "rows"
        raise DatasetError(
            f"no folder of data.sources has {what} in its {split} split ({', '.join(str(s.dir) for s in sources)})"
        )
    if split != "train":
        return pa.concat_tables([_prefixed(t, s.name).select(TASK_RECORD_SCHEMA.names) for _, s, t in tables]).cast(
            TASK_RECORD_SCHEMA
        )
    counts = mixture_counts([t.num_rows for _, _, t in tables], [s.weight for _, s, _ in tables])
    parts = []
    for (i, s, t), want in zip(tables, counts):
        rng = np.random.default_rng([seed, i])
        full, rest = divmod(want, t.num_rows)
        for r in range(full):
            parts.append(_prefixed(t, s.name, r + 1))
        if rest:
            pick = np.sort(rng.permutation(t.num_rows)[:rest])
            parts.append(_prefixed(t.take(pa.array(pick)), s.name, full + 1))
    return pa.concat_tables([p.select(TASK_RECORD_SCHEMA.names) for p in parts]).cast(TASK_RECORD_SCHEMA)


def text2pose_words_within(table: pa.Table, low: int = 0, high: int | None = None) -> pa.Table:
    """`table` without the text2pose rows whose description (caption) has fewer than `low` or more
    than `high` words; other tasks' rows stay (rl.text2pose_min_words, rl.anchor.max_words)."""
    keep = [
        t != "text2pose" or low <= len((c or "").split()) <= (high if high is not None else float("inf"))
        for t, c in zip(table["task"].to_pylist(), table["caption"].to_pylist())
    ]
    return table.filter(pa.array(keep, pa.bool_()))


def short_text2pose_dropped(table: pa.Table, min_words: int) -> pa.Table:
    """`table` without the text2pose rows whose caption has fewer than `min_words` words
    (rl.text2pose_min_words); other tasks' rows stay. No text2pose row left is an error."""
    if not min_words:
        return table
    text_rows = table["task"].to_pylist().count("text2pose")
    kept = text2pose_words_within(table, low=min_words)
    if text_rows and not kept["task"].to_pylist().count("text2pose"):
        raise ValueError(
            f"rl.text2pose_min_words is {min_words}, but none of the {text_rows} text2pose training rows has a "
            "description that long; lower it or set 0"
        )
    return kept


def load_pose_only(data, split: str = "train") -> pa.Table | None:
    """Uncaptioned poses of the folders marked `pose_only: true` (PoseScript poses without a caption), or None."""
    tables = []
    for s in resolve_sources(data):
        path = s.dir / POSE_ONLY_NAME
        if not s.pose_only:
            continue
        if not path.is_file():
            raise DatasetError(f"data.sources: {s.dir} is marked pose_only but has no {POSE_ONLY_NAME}")
        try:
            table = pq.read_table(path, schema=POSE_ONLY_SCHEMA)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DatasetError(
                f"pose-only file {path} is not readable Parquet with the pose-only columns ({str(err)[:120]})"
            ) from None
        tables.append(table.filter(pc.equal(table["split"], split)))
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else None
