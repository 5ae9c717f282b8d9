"""Experiment trackers: a run's step metrics, resolved config and report PNGs in TensorBoard,
Weights & Biases or MLflow, beside `metrics.jsonl` and Prometheus.

    logging:
      trackers: [tensorboard, wandb, mlflow]   # none by default; each is an optional extra
      project: poserft                          # wandb project, MLflow experiment
      run_name: null                            # null = the run folder's name
      dir: null                                 # null = RUN_DIR/trackers

Nothing leaves the machine. Under `dir`: TensorBoard event files in `tensorboard/`
(`tensorboard --logdir runs/` finds every run's), a wandb offline run in
`wandb/offline-run-*` (upload it later with `wandb sync`), and an MLflow file store in `mlruns/`
(`MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri file:RUN_DIR/trackers/mlruns`). The
metric names are the keys of `metrics.jsonl`; nested dicts become `a/b`, values that are not
finite numbers are left out.

Failures have two rules. At the start a tracker that cannot work (its extra is not installed,
its folder is not writable, its run does not open) is an error: `TrackerError`, one line naming
the tracker and what to do. In the middle of a run a tracker that raises is switched off with
one warning line and training goes on: a dashboard is never worth a lost run.

Where the calls go (the training loop lives in `poserft/cluster/controller.py`):

1. The CLI, before Ray starts: `check_trackers(cfg, run_dir)`. It imports each named tracker
   and checks its folder can be written, so `poserft train` fails in seconds, not after Ray and
   the model are up. (`Trackers.open` checks the same again; this call is only the early exit.)
2. `Controller.setup()`, before any role actor is created:
       self.trackers = Trackers.open(self.cfg, self.run_dir)
       self.trackers.log_config(self.cfg.model_dump(mode="json"))
3. `Controller._finish_train()`, right after the step's line is appended to metrics.jsonl:
       self.trackers.log_step(self.step, line)
   (`line["time"]` becomes the event's wall time; `step` and `time` are not logged as metrics.)
4. At the end of `run()`, after the last step and checkpoint:
       write_report(self.run_dir)    # poserft.report: RUN_DIR/report/*.png
       self.trackers.log_images(sorted((self.run_dir / "report").glob("*.png")))
       self.trackers.close()
5. `Controller.shutdown()` (always called, also after a crash):
       if getattr(self, "trackers", None): self.trackers.close(success=False)
   After a finished run this does nothing (a second `close()` is a no-op); after a crash it
   marks the wandb and MLflow runs failed and flushes the TensorBoard file.

A resumed run opens a new wandb and MLflow run (named like the first) and appends to the same
TensorBoard folder; the steps after the checkpoint are logged again.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from poserft.common.config import Config

AXIS_KEYS = ("step", "time")  # the x axis and the wall time of a metrics.jsonl line, not metrics
IMAGE_PREFIX = "report"  # PNGs are logged as report/<file stem>
MLFLOW_PARAMS_PER_CALL = 100  # MLflow's limits on one log_batch
MLFLOW_METRICS_PER_CALL = 1000
MLFLOW_PARAM_CHARS = 6000


class TrackerError(ValueError):
    """A tracker named in `logging.trackers` cannot work; one line naming it and the fix."""


def _stderr_warn(msg: str) -> None:
    print(f"poserft: warning: {msg}", file=sys.stderr, flush=True)


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"


# ---- what gets logged -----------------------------------------------------------------------


def flatten_scalars(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """Nested dicts -> `a/b` keys; numbers and booleans (as 0/1) only; NaN and inf left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_scalars(value, name + "/"))
        elif isinstance(value, numbers.Real | np.bool_):  # numpy's bool is not a Real
            number = float(value)
            if math.isfinite(number):
                out[name] = number
    return out


def flatten_params(config: Mapping, prefix: str = "") -> dict[str, str]:
    """A config as dotted keys with string values (MLflow params): `rl.sampling.top_p` -> "1.0"."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name + "."))
        else:
            text = "null" if value is None else str(value)
            out[name] = text[:MLFLOW_PARAM_CHARS]
    return out


# ---- the three trackers ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What every tracker is opened with."""

    project: str
    run_name: str
    dir: Path  # the trackers' folder (logging.dir, default RUN_DIR/trackers)
    run_dir: Path


class Backend(Protocol):
    def log_config(self, config: dict) -> None: ...
    def log_step(self, step: int, scalars: dict[str, float], walltime: float | None) -> None: ...
    def log_images(self, step: int, paths: list[Path]) -> None: ...
    def close(self, success: bool) -> None: ...


class TensorBoardBackend:
    """Event files in DIR/tensorboard: scalars, the config as a text summary, the PNGs as images."""

    def __init__(self, run: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.dir / "tensorboard"))

    def log_config(self, config: dict) -> None:
        import yaml

        text = yaml.safe_dump(config, sort_keys=False)
        self.writer.add_text("config", "\n".join("    " + ln for ln in text.splitlines()))  # indented: markdown code
        self.writer.flush()

    def log_step(self, step: int, scalars: dict[str, float], walltime: float | None) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step, walltime=walltime)
        self.writer.flush()  # a killed run keeps every step it finished

    def log_images(self, step: int, paths: list[Path]) -> None:
        from PIL import Image

        for path in paths:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
            self.writer.add_image(f"{IMAGE_PREFIX}/{path.stem}", pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self, success: bool) -> None:
        self.writer.close()


class WandbBackend:
    """An offline run in DIR/wandb/offline-run-*: nothing is sent until `wandb sync`."""

    def __init__(self, run: RunInfo):
        import wandb

        self.wandb = wandb
        # System metrics off: on a CPU machine the sampler competes with training for the cores.
        settings = wandb.Settings(
            console="off",
            silent=True,
            x_disable_stats=True,
            disable_git=True,
            save_code=False,
            x_save_requirements=False,
        )
        self.run = wandb.init(
            mode="offline",
            dir=str(run.dir),
            project=run.project,
            name=run.run_name,
            reinit="create_new",
            settings=settings,
        )

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_step(self, step: int, scalars: dict[str, float], walltime: float | None) -> None:
        self.run.log(scalars, step=step)

    def log_images(self, step: int, paths: list[Path]) -> None:
        self.run.log({f"{IMAGE_PREFIX}/{p.stem}": self.wandb.Image(str(p)) for p in paths}, step=step)

    def close(self, success: bool) -> None:
        self.run.finish(exit_code=0 if success else 1)
        # wandb 0.31's offline finish() can return before wandb-core has written the run's .wandb
        # file (seen: 7 bytes, the header only); teardown() waits for the service to flush and
        # exit. It ends every wandb run of this process: here, the controller's, that is this one.
        self.wandb.teardown()


class MlflowBackend:
    """A run in an MLflow file store at DIR/mlruns, experiment `project`: metrics, the config as
    params and as config.yaml, the PNGs as artifacts under report/."""

    def __init__(self, run: RunInfo):
        # MLflow 3 refuses the file store unless asked (it prefers a database); a user's own
        # MLFLOW_ALLOW_FILE_STORE wins.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        store = run.dir / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=store.resolve().as_uri())
        experiment = self.client.get_experiment_by_name(run.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(run.project)
        tags = {"poserft.run_dir": str(run.run_dir.resolve())}
        self.run_id = self.client.create_run(experiment_id, run_name=run.run_name, tags=tags).info.run_id

    def log_config(self, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten_params(config).items()]
        for i in range(0, len(params), MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i : i + MLFLOW_PARAMS_PER_CALL])
        self.client.log_dict(self.run_id, config, "config.yaml")

    def log_step(self, step: int, scalars: dict[str, float], walltime: float | None) -> None:
        from mlflow.entities import Metric

        ms = int(1000 * (walltime if walltime is not None else time.time()))
        metrics = [Metric(k, v, ms, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), MLFLOW_METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MLFLOW_METRICS_PER_CALL])

    def log_images(self, step: int, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), IMAGE_PREFIX)

    def close(self, success: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if success else "FAILED")


@dataclass(frozen=True)
class TrackerSpec:
    """A tracker: the modules it needs (imported in this order), the poserft extra that
    installs them, and how to open a run."""

    name: str
    modules: tuple[str, ...]
    extra: str
    backend: Callable[[RunInfo], Backend]


TRACKERS: dict[str, TrackerSpec] = {
    "tensorboard": TrackerSpec(
        "tensorboard", ("tensorboard", "torch.utils.tensorboard"), "tensorboard", TensorBoardBackend
    ),
    "wandb": TrackerSpec("wandb", ("wandb",), "wandb", WandbBackend),
    "mlflow": TrackerSpec("mlflow", ("mlflow", "mlflow.tracking"), "mlflow", MlflowBackend),
}


def require(spec: TrackerSpec) -> None:
    """Import what `spec` needs; TrackerError (one line) naming the tracker and its extra if not."""
    for module in spec.modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            missing = err.name or module
            raise TrackerError(
                f"logging.trackers names {spec.name}, but {missing} is not installed: "
                f"pip install 'poserft[{spec.extra}]', or remove {spec.name} from logging.trackers"
            ) from None
        except Exception as err:  # noqa: BLE001 - installed but broken (a version clash, a missing shared library)
            raise TrackerError(
                f"logging.trackers names {spec.name}, but importing {module} fails ({_one_line(err)}); "
                f"reinstall with pip install 'poserft[{spec.extra}]'"
            ) from None


def tracker_dir(cfg: Config, run_dir: str | Path) -> Path:
    """The trackers' folder: `logging.dir`, or RUN_DIR/trackers."""
    return Path(cfg.logging.dir) if cfg.logging.dir else Path(run_dir) / "trackers"


def _check_writable(name: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{name}-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TrackerError(
            f"tracker {name}: cannot write to {folder} ({_one_line(err)}); set logging.dir to a writable folder"
        ) from None


def check_trackers(cfg: Config, run_dir: str | Path | None = None) -> list[str]:
    """Before Ray starts: every tracker in `logging.trackers` imports and its folder can be
    written. Returns their names; raises TrackerError. `run_dir` defaults to `cfg.run_dir`."""
    folder = tracker_dir(cfg, cfg.run_dir if run_dir is None else run_dir)
    for name in cfg.logging.trackers:
        require(TRACKERS[name])
        _check_writable(name, folder)
    return list(cfg.logging.trackers)


# ---- the object the training loop holds -----------------------------------------------------


class Trackers:
    """The open trackers of one run (possibly none: every call is then a no-op)."""

    def __init__(self, backends: dict[str, Backend], warn: Callable[[str], None] | None = None):
        self.backends = dict(backends)
        self.warn = warn or _stderr_warn
        self.last_step = 0

    @classmethod
    def open(cls, cfg: Config, run_dir: str | Path, warn: Callable[[str], None] | None = None) -> Trackers:
        """Open every tracker in `logging.trackers`, or raise TrackerError (one line) and leave
        none open. `warn` receives the mid-run warning lines (default: stderr)."""
        return cls.open_specs([TRACKERS[name] for name in cfg.logging.trackers], cfg, run_dir, warn)

    @classmethod
    def open_specs(
        cls, specs: Iterable[TrackerSpec], cfg: Config, run_dir: str | Path, warn: Callable[[str], None] | None = None
    ) -> Trackers:
        """`open` for the given trackers (their specs instead of their names)."""
        run_dir = Path(run_dir)
        run = RunInfo(
            project=cfg.logging.project,
            run_name=cfg.logging.run_name or run_dir.resolve().name,
            dir=tracker_dir(cfg, run_dir),
            run_dir=run_dir,
        )
        opened = cls({}, warn)
        for spec in specs:
            require(spec)
            _check_writable(spec.name, run.dir)
            try:
                opened.backends[spec.name] = spec.backend(run)
            except Exception as err:  # noqa: BLE001 - whatever the tracker raises, one line at the start
                opened.close(success=False)
                raise TrackerError(f"tracker {spec.name}: cannot open a run in {run.dir} ({_one_line(err)})") from None
        return opened

    @property
    def names(self) -> list[str]:
        """The trackers still logging."""
        return list(self.backends)

    def _each(self, what: str, call: Callable[[Backend], None]) -> None:
        for name, backend in list(self.backends.items()):
            try:
                call(backend)
            except Exception as err:  # noqa: BLE001 - a dashboard is never worth a lost run
                del self.backends[name]
                self.warn(f"tracker {name} switched off after an error in {what} ({_one_line(err)}); training goes on")
                with contextlib.suppress(Exception):  # release its files and threads; a second error is not news
                    backend.close(False)

    def log_config(self, config: Mapping) -> None:
        """The resolved config (e.g. `cfg.model_dump(mode="json")`)."""
        config = dict(config)
        self._each("log_config", lambda b: b.log_config(config))

    def log_step(self, step: int, metrics: Mapping) -> None:
        """One step's metrics (a metrics.jsonl line): finite numbers only, nested keys as a/b."""
        step = int(step)
        scalars = flatten_scalars({k: v for k, v in metrics.items() if k not in AXIS_KEYS})
        stamp = metrics.get("time")
        walltime = float(stamp) if isinstance(stamp, numbers.Real) and math.isfinite(stamp) else None
        self.last_step = max(self.last_step, step)
        self._each("log_step", lambda b: b.log_step(step, scalars, walltime))

    def log_images(self, paths: Iterable[str | Path]) -> None:
        """PNGs (the report's) at the last logged step, named report/<file stem>."""
        if not self.backends:
            return
        files = []
        for p in map(Path, paths):
            if p.is_file():
                files.append(p)
            else:
                self.warn(f"trackers: image {p} does not exist; not logged")
        if files:
            self._each("log_images", lambda b: b.log_images(self.last_step, files))

    def close(self, success: bool = True) -> None:
        """Finish every run (`success=False` marks it failed where the tracker has a status)."""
        backends, self.backends = self.backends, {}
        for name, backend in backends.items():
            try:
                backend.close(success)
            except Exception as err:  # noqa: BLE001 - the others still close
                self.warn(f"tracker {name} did not close cleanly ({_one_line(err)})")
