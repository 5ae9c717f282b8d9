"""poserft.tracking without opening a tracker: the one-line start errors, what log_step keeps,
and the `logging` config section. (The trackers themselves: tests/integration/test_trackers.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from poserft.common.config import ConfigError, load_config
from poserft.tracking import TRACKERS, TrackerError, Trackers, TrackerSpec, check_trackers, flatten_scalars, require


def _unopenable(_run):
    raise AssertionError("a tracker whose import failed must not be opened")


def test_a_tracker_whose_package_is_missing_is_a_one_line_error():
    spec = TrackerSpec("neptune", ("poserft_neptune_sdk_not_installed",), "neptune", _unopenable)
    with pytest.raises(TrackerError) as err:
        require(spec)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        "logging.trackers names neptune, but poserft_neptune_sdk_not_installed is not installed: "
        "pip install 'poserft[neptune]', or remove neptune from logging.trackers"
    )


def test_a_missing_submodule_of_an_installed_package_names_the_submodule():
    spec = TrackerSpec("fake", ("json", "json.poserft_no_such_writer"), "fake", _unopenable)
    with pytest.raises(TrackerError, match=r"but json\.poserft_no_such_writer is not installed: pip install"):
        require(spec)


def test_open_raises_before_opening_anything_when_an_import_fails(tmp_path):
    cfg = load_config(None, [f"logging.dir={tmp_path / 'trackers'}"])
    spec = TrackerSpec("fake", ("poserft_fake_tracker_not_installed",), "fake", _unopenable)
    with pytest.raises(TrackerError, match="poserft_fake_tracker_not_installed is not installed"):
        Trackers.open_specs([spec], cfg, tmp_path)


def test_every_tracker_names_an_extra_of_poserft():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for name, spec in TRACKERS.items():
        assert spec.extra in extras, name
        assert set(extras[spec.extra]) <= set(extras["trackers"]), name


def test_no_trackers_is_the_default_and_costs_nothing(tmp_path):
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}"])
    assert cfg.logging.trackers == []
    assert check_trackers(cfg) == []
    trackers = Trackers.open(cfg, tmp_path / "run")
    trackers.log_config(cfg.model_dump(mode="json"))
    trackers.log_step(1, {"loss": 1.0})
    trackers.log_images([])
    trackers.close()
    assert trackers.names == [] and not (tmp_path / "run").exists()


def test_an_unwritable_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = load_config(None, ["logging.trackers=[tensorboard]", f"logging.dir={blocker / 'trackers'}"])
    spec = TrackerSpec("tensorboard", ("json",), "tensorboard", _unopenable)  # importable; the folder is the problem
    with pytest.raises(TrackerError) as err:
        Trackers.open_specs([spec], cfg, tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"tracker tensorboard: cannot write to {blocker / 'trackers'}")


def test_flatten_keeps_finite_numbers_and_nests_with_slashes():
    metrics = {
        "loss": 0.5, "tokens": 1400, "on_policy": True, "np_float": np.float32(0.25), "np_int": np.int64(7),
        "np_bool": np.bool_(False), "nan": float("nan"), "inf": -math.inf, "name": "rollout-0", "ids": [1, 2],
        "none": None, "reward": {"text2pose": {"joint": 0.3, "bad": float("nan")}, "total": 1.2},
    }  # fmt: skip
    assert flatten_scalars(metrics) == {
        "loss": 0.5, "tokens": 1400.0, "on_policy": 1.0, "np_float": 0.25, "np_int": 7.0, "np_bool": 0.0,
        "reward/text2pose/joint": 0.3, "reward/total": 1.2,
    }  # fmt: skip


def test_logging_section_validates_tracker_names():
    cfg = load_config(None, ["logging.trackers=[wandb, tensorboard, wandb]", "logging.project=pose"])
    assert cfg.logging.trackers == ["wandb", "tensorboard"] and cfg.logging.project == "pose"
    with pytest.raises(ConfigError, match=r"logging\.trackers\.0.*'tensorboard', 'wandb' or 'mlflow'"):
        load_config(None, ["logging.trackers=[neptune]"])
    with pytest.raises(ConfigError, match=r"did you mean 'logging\.trackers'"):
        load_config(None, ["logging.tracker=[wandb]"])
