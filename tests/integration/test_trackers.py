"""poserft.tracking with the real trackers, each read back with its own reader.

A run folder is made as `poserft train` leaves it: metrics.jsonl with five lines carrying the
keys the controller writes (stage times, counters, the learner's losses and the mean rewards),
then `poserft.report.write_report` draws its PNGs. Each test replays that file through
`Trackers` the way the training loop calls it (open, log_config, log_step per line, log_images
of report/*.png, close) and reads the tracker's files back:
TensorBoard with its EventAccumulator, MLflow with MlflowClient on the file store, wandb by
decoding the offline run's .wandb file into wandb's own protobuf records (wandb 0.31 ships no
Python reader of that file, and its files/ folder holds the media but not the history).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from poserft.common.config import load_config
from poserft.report import REPORT_DIR, write_report
from poserft.tracking import TRACKERS, TrackerError, Trackers, TrackerSpec, check_trackers

STEPS = 5
NAN_STEP = 3  # reward_semantic is NaN at this step (no text2pose row scored), as the learner reports it


def _metrics_line(step: int, rng: np.random.Generator) -> dict:
    """One metrics.jsonl line with the keys `Controller._finish_train` writes (timings, learner
    metrics from `LearnerCore.train_step` / `hygrpo_loss`, mean rewards, counters)."""
    rows = 64
    return {
        "step": step,
        "version": step,
        "time": 1_796_000_000.0 + 7.25 * step,
        "workers": 2,
        "samples": rows,
        "tokens": 1400 + step,
        "gen_s": 3.1 + 0.1 * rng.random(),
        "reward_s": 0.21,
        "shards": 2,
        "shards_failed": 0,
        "staleness": step % 2,
        "queue_depth": 0,
        "train_s": 4.7,
        "sync_deferred": 1,
        "sync_s": 0.12,
        "loss_token": -0.01 * step,
        "clip_frac_token": 0.02,
        "ratio_token_mean": 1.0 + 1e-3 * step,
        "adv_discrete_mean": 0.0,
        "adv_discrete_std": 0.98,
        "adv_discrete_absmax": 2.1,
        "kl_token": 1e-4 * step,
        "token_entropy": 1.9,
        "loss_pose": 0.3 - 0.01 * step,
        "clip_frac_pose": 0.4,
        "ratio_pose_mean": 1.01,
        "pose_valid_frac": 0.97,
        "pose_entropy": -61.5,
        "adv_continuous_mean": 0.0,
        "adv_continuous_std": 1.0,
        "adv_continuous_absmax": 2.6,
        "kl_pose": 3.2,
        "loss": 0.4 - 0.02 * step,
        "grad_norm": 12.5 + step,
        "reward_format": 0.97,
        "reward_text_similarity": 1.0,
        "reward_semantic": float("nan") if step == NAN_STEP else 0.02 * step,
        "reward_joint": 0.2 + 0.01 * step,
        "reward_total": 1.3 + 0.01 * step,
        "rows": rows,
        "responses": rows,
        "dropped_unscored_rows": 0,
        "on_policy": step % 2 == 0,
        "learner_seconds": 4.6,
        "dropped_stale_groups": 0,
        "requeued_prompts": 0,
        "worker_failures": 0,
        "unscored_batches": 0,
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run folder: metrics.jsonl (as the controller writes it) and report/*.png."""
    root = tmp_path_factory.mktemp("trackers") / "run-a"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "metrics.jsonl", "w") as fh:
        fh.writelines(json.dumps(_metrics_line(step, rng)) + "\n" for step in range(1, STEPS + 1))
    write_report(root, warn=lambda _msg: None)  # no rollouts folder: plots without example poses
    return root


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _pngs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / REPORT_DIR).glob("*.png"))


def _config(run_dir: Path, trackers: list[str], folder: Path):
    return load_config(
        None, [f"logging.trackers={json.dumps(trackers)}", f"logging.dir={folder}", f"run_dir={run_dir}"]
    )


def _replay(
    cfg, run_dir: Path, warnings: list[str], break_after: tuple[int, Callable[[], object]] | None = None
) -> Trackers:
    """The training loop's calls, fed with the run's real files."""
    check_trackers(cfg, run_dir)
    trackers = Trackers.open(cfg, run_dir, warn=warnings.append)
    trackers.log_config(cfg.model_dump(mode="json"))
    for line in _lines(run_dir):
        trackers.log_step(line["step"], line)
        if break_after and line["step"] == break_after[0]:
            break_after[1]()
    trackers.log_images(_pngs(run_dir))
    trackers.close()
    return trackers


def _expected(run_dir: Path, key: str) -> dict[int, float]:
    """{step: value} the trackers should hold for `key`: finite values only, booleans as 0/1."""
    out = {}
    for line in _lines(run_dir):
        v = float(line[key])
        if math.isfinite(v):
            out[line["step"]] = v
    return out


# ---- TensorBoard ----------------------------------------------------------------------------


def test_tensorboard_run_reads_back(run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _config(run, ["tensorboard"], tmp_path)
    warnings: list[str] = []
    _replay(cfg, run, warnings)
    assert warnings == []

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    line = _lines(run)[0]
    expected_tags = {k for k in line if k not in ("step", "time")}
    assert set(tags["scalars"]) == expected_tags  # every metric, and step/time only as axes
    for key in ("loss", "reward_total", "grad_norm", "on_policy", "reward_semantic", "tokens"):
        events = acc.Scalars(key)
        want = _expected(run, key)
        assert [e.step for e in events] == sorted(want)  # the NaN step of reward_semantic is left out
        assert [e.value for e in events] == pytest.approx([want[s] for s in sorted(want)], rel=1e-6)
        assert [e.wall_time for e in events] == pytest.approx([ln["time"] for ln in _lines(run) if ln["step"] in want])
    assert NAN_STEP not in [e.step for e in acc.Scalars("reward_semantic")]

    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert yaml.safe_load("\n".join(ln[4:] for ln in text.splitlines())) == cfg.model_dump(mode="json")

    pngs = _pngs(run)
    assert sorted(tags["images"]) == sorted(f"report/{p.stem}" for p in pngs)
    for p in pngs:
        (event,) = acc.Images(f"report/{p.stem}")
        assert event.step == STEPS
        with Image.open(p) as original:
            assert (event.width, event.height) == original.size


# ---- MLflow ---------------------------------------------------------------------------------


def _mlflow_reader(store: Path, monkeypatch):
    """MLflow's client on the file store; MLflow 3 reads one only when MLFLOW_ALLOW_FILE_STORE is true
    (as `mlflow ui` does: see README)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=store.resolve().as_uri())


def test_mlflow_run_reads_back(run, tmp_path, monkeypatch):
    cfg = _config(run, ["mlflow"], tmp_path)
    warnings: list[str] = []
    _replay(cfg, run, warnings)
    assert warnings == []

    client = _mlflow_reader(tmp_path / "mlruns", monkeypatch)
    experiment = client.get_experiment_by_name("poserft")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == run.name and found.info.status == "FINISHED"
    assert found.data.tags["poserft.run_dir"] == str(run.resolve())

    times = {ln["step"]: ln["time"] for ln in _lines(run)}
    for key in ("loss", "reward_total", "kl_pose", "on_policy", "reward_semantic", "staleness"):
        history = sorted(client.get_metric_history(found.info.run_id, key), key=lambda m: m.step)
        want = _expected(run, key)
        assert [(m.step, m.value) for m in history] == [(s, want[s]) for s in sorted(want)]
        assert [m.timestamp for m in history] == [int(1000 * times[m.step]) for m in history]
    assert "step" not in found.data.metrics and "time" not in found.data.metrics

    params = found.data.params
    assert params["rl.steps"] == str(cfg.rl.steps) and params["rl.sampling.top_p"] == str(cfg.rl.sampling.top_p)
    assert params["logging.trackers"] == "['mlflow']"
    config_file = client.download_artifacts(found.info.run_id, "config.yaml", str(tmp_path / "download"))
    assert yaml.safe_load(Path(config_file).read_text()) == cfg.model_dump(mode="json")

    logged = client.list_artifacts(found.info.run_id, "report")
    assert sorted(Path(a.path).name for a in logged) == sorted(p.name for p in _pngs(run))
    for p in _pngs(run):
        copy = client.download_artifacts(found.info.run_id, f"report/{p.name}", str(tmp_path / "download"))
        assert Path(copy).read_bytes() == p.read_bytes()


# ---- wandb ----------------------------------------------------------------------------------


def _wandb_records(path: Path) -> list:
    """The records of a .wandb file (a LevelDB-style log of wandb's protobuf `Record`s: a 7-byte
    header, then 32 KiB blocks of chunks, each with a CRC-32, a length and a FULL / FIRST /
    MIDDLE / LAST type)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    records, pending, at = [], b"", 7
    while at + 7 <= len(data):
        room = 32768 - at % 32768
        if room < 7:  # block trailer: zero padding
            at += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[at : at + 7])
        if kind == 0:
            break
        chunk = data[at + 7 : at + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"corrupt chunk at byte {at}"
        at += 7 + length
        pending += chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _json_key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def test_wandb_offline_run_reads_back(run, tmp_path):
    cfg = _config(run, ["wandb"], tmp_path)
    warnings: list[str] = []
    _replay(cfg, run, warnings)
    assert warnings == []

    (run_folder,) = (tmp_path / "wandb").glob("offline-run-*")
    (log_file,) = run_folder.glob("run-*.wandb")
    records = _wandb_records(log_file)
    by_kind: dict[str, list] = {}
    for r in records:
        by_kind.setdefault(r.WhichOneof("record_type"), []).append(r)

    (start,) = by_kind["run"]
    assert start.run.project == "poserft" and start.run.display_name == run.name
    config = {u.key: json.loads(u.value_json) for r in [start.run] for u in r.config.update}
    for r in by_kind.get("config", []):
        config.update({u.key: json.loads(u.value_json) for u in r.config.update})
    dumped = cfg.model_dump(mode="json")
    assert {k: config[k] for k in dumped} == dumped

    history = {}
    for r in by_kind["history"]:
        items = {_json_key(i): i.value_json for i in r.history.item}
        history[r.history.step.num] = items
    assert sorted(history) == list(range(1, STEPS + 1))
    for key in ("loss", "reward_total", "pose_entropy", "on_policy", "reward_semantic", "sync_deferred"):
        want = _expected(run, key)
        got = {s: float(json.loads(items[key])) for s, items in history.items() if key in items}
        assert got == pytest.approx(want, rel=1e-12)
    assert all("step" not in items and "time" not in items for items in history.values())

    for p in _pngs(run):
        image = json.loads(history[STEPS][f"report/{p.stem}/path"])
        with Image.open(run_folder / "files" / image) as copy, Image.open(p) as original:
            assert copy.size == original.size
            assert np.array_equal(np.asarray(copy.convert("RGB")), np.asarray(original.convert("RGB")))
    (exit_record,) = by_kind["exit"]
    assert exit_record.exit.exit_code == 0


# ---- failures ---------------------------------------------------------------------------------


def test_a_tracker_failing_mid_run_is_switched_off_and_the_others_go_on(run, tmp_path):
    """The MLflow store vanishes after step 2 (a real error from its client); TensorBoard keeps
    every step, one warning line names mlflow, nothing raises."""
    cfg = _config(run, ["tensorboard", "mlflow"], tmp_path)
    warnings: list[str] = []
    trackers = _replay(cfg, run, warnings, break_after=(2, lambda: shutil.rmtree(tmp_path / "mlruns")))
    assert trackers.names == []  # closed
    assert len(warnings) == 1 and "tracker mlflow switched off" in warnings[0] and "\n" not in warnings[0]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, STEPS + 1))


def test_a_crashed_run_is_closed_as_failed(run, tmp_path, monkeypatch):
    """`close(success=False)` (the controller's shutdown after a crash): MLflow's run is FAILED,
    wandb's exit code 1; a second close does nothing."""
    cfg = _config(run, ["wandb", "mlflow"], tmp_path)
    trackers = Trackers.open(cfg, run)
    trackers.log_step(1, _lines(run)[0])
    trackers.close(success=False)
    trackers.close(success=True)

    client = _mlflow_reader(tmp_path / "mlruns", monkeypatch)
    (found,) = client.search_runs([client.get_experiment_by_name("poserft").experiment_id])
    assert found.info.status == "FAILED" and found.data.metrics["loss"] == _lines(run)[0]["loss"]
    (log_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    (exit_record,) = [r for r in _wandb_records(log_file) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit.exit_code == 1


def test_a_tracker_that_cannot_open_is_one_line_and_leaves_none_open(run, tmp_path):
    """TensorBoard opens first; the second tracker's import fails: TrackerError, and the
    TensorBoard writer is closed again (its event file holds no step)."""
    cfg = _config(run, ["tensorboard"], tmp_path)
    missing = TrackerSpec("neptune", ("poserft_neptune_not_installed",), "neptune", TRACKERS["wandb"].backend)
    with pytest.raises(TrackerError) as err:
        Trackers.open_specs([TRACKERS["tensorboard"], missing], cfg, run)
    message = str(err.value)
    assert "\n" not in message and "neptune" in message and "pip install 'poserft[neptune]'" in message
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert acc.Tags()["scalars"] == []


def test_an_unwritable_tracker_folder_is_one_line(run, tmp_path):
    """logging.dir below a file: the error names the tracker and the folder, before any run opens."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = _config(run, ["wandb"], blocker / "trackers")
    with pytest.raises(TrackerError) as err:
        Trackers.open(cfg, run)
    assert "\n" not in str(err.value) and "wandb" in str(err.value) and str(blocker / "trackers") in str(err.value)


# ---- where the controller runs them ---------------------------------------------------------


class _ThreadedActor:
    """Like the controller: a Ray actor with max_concurrency > 1, so its methods run in a
    worker thread, not the process's main thread."""

    def replay(self, cfg, run_dir: str) -> tuple[bool, list[str]]:
        import threading

        warnings: list[str] = []
        _replay(cfg, Path(run_dir), warnings)
        return threading.current_thread() is threading.main_thread(), warnings


def test_all_three_trackers_inside_a_threaded_ray_actor(ray_local, run, tmp_path, monkeypatch):
    import ray

    cfg = _config(run, ["tensorboard", "wandb", "mlflow"], tmp_path)
    actor = ray.remote(num_cpus=0, max_concurrency=4)(_ThreadedActor).remote()
    try:
        on_main_thread, warnings = ray.get(actor.replay.remote(cfg, str(run)), timeout=300)
    finally:
        ray.kill(actor)
    assert not on_main_thread and warnings == []

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward_total")] == list(range(1, STEPS + 1))
    (log_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    steps = [r.history.step.num for r in _wandb_records(log_file) if r.WhichOneof("record_type") == "history"]
    assert steps == list(range(1, STEPS + 1))
    client = _mlflow_reader(tmp_path / "mlruns", monkeypatch)
    (found,) = client.search_runs([client.get_experiment_by_name("poserft").experiment_id])
    assert found.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "reward_total")] == list(range(1, STEPS + 1))
