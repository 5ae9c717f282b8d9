"""rl.text2pose_min_words: which training rows RL's controller walks."""

import pyarrow as pa
import pytest

from poserft.common.config import ConfigError, load_config
from poserft.data.mixture import short_text2pose_dropped


def _table():
    return pa.table(
        {
            "id": ["a", "b", "c", "d"],
            "task": ["text2pose", "text2pose", "image2pose", "text2pose"],
            "caption": ["a lunge", "the left knee is bent and the right arm is raised high", None, "arms up"],
        }
    )


def test_short_text2pose_rows_are_dropped_and_other_tasks_stay():
    kept = short_text2pose_dropped(_table(), 5)
    assert kept["id"].to_pylist() == ["b", "c"]


def test_zero_keeps_every_row():
    assert short_text2pose_dropped(_table(), 0)["id"].to_pylist() == ["a", "b", "c", "d"]


def test_a_bound_no_description_reaches_is_a_one_line_error():
    with pytest.raises(ValueError, match="rl.text2pose_min_words is 50, but none of the 3 text2pose"):
        short_text2pose_dropped(_table(), 50)


def test_image_only_data_ignores_the_bound():
    table = _table().filter(pa.array([False, False, True, False]))
    assert short_text2pose_dropped(table, 50)["id"].to_pylist() == ["c"]


def test_the_config_checks_the_bound():
    assert load_config(None, ["rl.text2pose_min_words=13"]).rl.text2pose_min_words == 13
    with pytest.raises(ConfigError, match="text2pose_min_words"):
        load_config(None, ["rl.text2pose_min_words=-1"])


def test_the_anchor_without_short_rows_is_named():
    """rl.anchor.max_words that leaves the anchor no row: the reason the controller prints (the
    learner then runs without the anchor); rows of another task listed in rl.anchor.tasks count."""
    from poserft.learner.anchor import no_short_rows

    assert no_short_rows(_table(), ["text2pose"], 2) is None  # "a lunge", "arms up"
    why = no_short_rows(_table(), ["text2pose"], 1)
    assert why == (
        "rl.anchor: no training row of text2pose has a description of at most 1 words (rl.anchor.max_words); "
        "the anchor is off for this run"
    )
    assert no_short_rows(_table(), ["text2pose", "image2pose"], 1) is None  # the image row stays
    assert no_short_rows(_table(), ["text2pose"], 0) is None  # 0 = any length
