"""Ray job submission (`poserft submit/status/logs`) and run-time scaling (`poserft scale`).

One address for all four commands: the head's dashboard, `http://HEAD:8265` (or `RAY_ADDRESS`
set to it). `scale` reaches the training job's controller through the same job server: it runs
`poserft scale --address auto` as a short job on the head, so a laptop that only sees port 8265
(a `kubectl port-forward`, an SSH tunnel) can scale too. A GCS address (`HEAD:6379`, `auto`)
still works for `scale` from a machine inside the cluster.

Paths. A job runs in a copy of the working directory without the folders in `EXCLUDES` (data,
runs, the venv), so a relative `data/synth` in the config does not exist there. `submit` loads
the config here, turns every path the job reads or writes (`--config`, `--init`, `--run-dir`,
`data.dir`, `rewards.retriever_dir`, `body.smpl_dir`) into one the job can use (relative inside
the upload, else absolute) and passes it on the job's command line; a path that is excluded from
the upload or missing on this machine is named in a warning, since it must then be on storage the
cluster sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

EXCLUDES = (".venv", "data", "runs", "benchmarks/results", "**/__pycache__")  # .git: Ray excludes it itself
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STEP_LINE = re.compile(r"\bstep (\d+)/(\d+)\b")
SCALE_PREFIX = "poserft-scale-status "


class JobClientError(ValueError):
    """The job server could not be reached or refused us; the message says what to do."""


def dashboard_address(address: str | None) -> str:
    """`http://HEAD:8265` from the argument or RAY_ADDRESS; `HEAD:8265` gets its scheme."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobClientError(
            "no cluster address: pass --address http://HEAD:8265 (the head's dashboard) or set RAY_ADDRESS to it"
        )
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise JobClientError(f"--address {address}: use the head's dashboard address, http://HEAD:8265")
    return address


def _client(address: str | None):
    """A JobSubmissionClient; `poserft.cli.use_cluster_token` (run before Ray is imported)
    makes it send the cluster's auth token."""
    import ray
    from ray.job_submission import JobSubmissionClient

    address = dashboard_address(address)
    logging.getLogger("ray.dashboard.modules.dashboard_sdk").setLevel(logging.WARNING)  # no "Uploading package" lines
    try:
        return JobSubmissionClient(address)
    except ray.exceptions.AuthenticationError:
        raise JobClientError(
            f"the Ray cluster at {address} requires an auth token: set RAY_AUTH_TOKEN, or copy the head's "
            "~/.ray/auth_token "
            "to this machine (or point RAY_AUTH_TOKEN_PATH at it)"
        ) from None
    except ConnectionError as err:
        raise JobClientError(
            f"cannot reach the Ray job server at {address} ({str(err).splitlines()[0][:160]}); is the head's "
            "dashboard on that port?"
        ) from None


def _job_call(fn, job_id: str, address: str | None):
    """Run a client call about one job; a job id the server does not know is a one-line error."""
    try:
        return fn(job_id)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise JobClientError(
                f"no job {job_id!r} on {dashboard_address(address)}; `poserft status --address ...` lists the jobs"
            ) from None
        raise


# --- submit ----------------------------------------------------------------------------------------


@dataclass
class JobPath:
    key: str  # the option or config key, for messages
    given: str
    for_job: str  # what the job's command line gets
    warning: str | None = None


def _excluded(rel: Path) -> str | None:
    for pattern in EXCLUDES:
        if "*" not in pattern and (rel == Path(pattern) or Path(pattern) in rel.parents):
            return pattern
    return None


def job_path(key: str, given: str, working_dir: Path, output: bool = False) -> JobPath:
    """Where the job finds `given` (relative to this shell's folder): inside the upload it stays
    relative to the working dir; anywhere else it becomes absolute, with a warning when the
    job cannot be sure to see it."""
    full = Path(os.path.abspath(Path(given).expanduser()))  # not resolved: a symlink in data/ is still not uploaded
    try:
        rel = full.relative_to(working_dir)
    except ValueError:
        rel = None
    excluded = _excluded(rel) if rel is not None else None
    if rel is not None and excluded is None and not output:
        return JobPath(key, given, str(rel))
    if excluded is not None:
        missing = "" if output or full.exists() else " (it does not exist on this machine)"
        warning = (
            f"{key} {given} is in {excluded}/, which is not uploaded with the job; the job uses {full}{missing}, "
            "so that path must be on storage every node sees"
        )
    elif not output and not full.exists():
        warning = f"{key} {given} does not exist on this machine; the job expects {full} on the cluster"
    else:
        warning = None
    return JobPath(key, given, str(full), warning)


def plan_submit(
    config: str, init: str, run_dir: str, overrides: list[str], working_dir: str = "."
) -> tuple[str, list[JobPath]]:
    """The job's entrypoint and the paths it was given, checked (see the module doc)."""
    from poserft.common.config import load_config

    cfg = load_config(config, overrides)  # a bad config fails here, not minutes later on the cluster
    wd = Path(os.path.abspath(working_dir))
    if not wd.is_dir():
        raise JobClientError(f"--working-dir {working_dir} is not a folder")
    paths = [
        job_path("--config", config, wd),
        job_path("--init", init, wd),
        job_path("--run-dir", run_dir, wd, output=True),
    ]
    keyed = {
        "data.dir": cfg.data.dir,
        "rewards.retriever_dir": cfg.rewards.retriever_dir,
        "body.smpl_dir": cfg.body.smpl_dir,
    }
    keyed_paths = [job_path(k, v, wd) for k, v in keyed.items() if v]
    sets = [*overrides, *(f"{p.key}={p.for_job}" for p in keyed_paths)]
    # data.sources (a mixture): every folder resolved the same way, the list passed whole (JSON is YAML)
    source_paths = [job_path(f"data.sources[{i}].dir", s.dir, wd) for i, s in enumerate(cfg.data.sources or [])]
    if source_paths:
        sources = [{**s.model_dump(), "dir": p.for_job} for s, p in zip(cfg.data.sources, source_paths)]
        sets.append("data.sources=" + json.dumps(sources))
    paths += keyed_paths + source_paths
    entry = (
        f"python -m poserft train --config {shlex.quote(paths[0].for_job)} --init {shlex.quote(paths[1].for_job)} "
        f"--run-dir {shlex.quote(paths[2].for_job)}"
    )
    entry += "".join(f" --set {shlex.quote(s)}" for s in sets)
    return entry, paths


def submit(
    address: str | None,
    config: str,
    init: str,
    run_dir: str,
    overrides: list[str],
    working_dir: str = ".",
    pip_extra: list[str] | None = None,
) -> tuple[str, list[JobPath]]:
    """Submit `poserft train` as a Ray job with `working_dir` uploaded; returns (job id, paths)."""
    entry, paths = plan_submit(config, init, run_dir, overrides, working_dir)
    client = _client(address)
    runtime_env = {
        "working_dir": str(Path(working_dir).resolve()),
        "excludes": list(EXCLUDES),
        "env_vars": {"HF_HUB_OFFLINE": "1"},
    }
    if pip_extra:
        runtime_env["pip"] = pip_extra
    return _submit_entry(client, entry, runtime_env), paths


def _submit_entry(client, entry: str, runtime_env: dict | None) -> str:
    deadline = time.monotonic() + 240
    while True:  # a head that just started answers before its job agent is up
        try:
            return client.submit_job(entrypoint=entry, runtime_env=runtime_env)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


# --- status and logs -------------------------------------------------------------------------------


def last_step(logs: str) -> str | None:
    """The controller's newest `step N/M` in a job's log."""
    found = STEP_LINE.findall(logs)
    return f"{found[-1][0]}/{found[-1][1]}" if found else None


def failure_reason(logs: str, message: str | None) -> str:
    """One line: poserft's own error line, else the last exception line, else Ray's message."""
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("poserft: error:"):
            return ln[len("poserft: error:") :].strip()
    for ln in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln):
            return ln
    return (message or "no reason recorded").strip().splitlines()[0][:300]


def job_status(address: str | None, job_id: str | None = None) -> list[dict]:
    client = _client(address)
    if not job_id:
        return [
            {"job_id": j.submission_id, "status": str(j.status), "entrypoint": j.entrypoint} for j in client.list_jobs()
        ]
    info = _job_call(client.get_job_info, job_id, address)
    logs = _job_call(client.get_job_logs, job_id, address)
    row = {
        "job_id": job_id,
        "status": str(info.status),
        "entrypoint": info.entrypoint,
        "step": last_step(logs),
        "reason": None,
    }
    if row["status"] in ("FAILED", "STOPPED"):
        row["reason"] = failure_reason(logs, info.message)
    return [row]


def job_logs(address: str | None, job_id: str) -> str:
    client = _client(address)
    return _job_call(client.get_job_logs, job_id, address)


def stop_job(address: str | None, job_id: str) -> bool:
    """Ask a job to stop: Ray sends its entrypoint SIGTERM, and `poserft train` then finishes the
    current step, writes a checkpoint and exits (resume with the same --run-dir)."""
    client = _client(address)
    return bool(_job_call(client.stop_job, job_id, address))


def follow_logs(address: str | None, job_id: str, write) -> None:
    """Stream a job's log to `write` until the job ends."""
    client = _client(address)
    _job_call(client.get_job_info, job_id, address)  # an unknown id fails here, in one line

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


# --- scale -----------------------------------------------------------------------------------------


def _scale_here(n: int, address: str, namespace: str | None) -> dict:
    """Connect to the cluster's GCS (`auto`, `HEAD:6379`) and ask the controller directly."""
    import ray

    from poserft.cluster.controller import CONTROLLER_NAME, NAMESPACE

    namespace = namespace or NAMESPACE
    if not ray.is_initialized():
        try:
            ray.init(address=address, namespace=namespace, logging_level="ERROR", log_to_driver=False)
        except ConnectionError as err:
            raise JobClientError(
                f"cannot reach the Ray cluster at {address} ({str(err).splitlines()[0][:160]})"
            ) from None
    try:
        ctl = ray.get_actor(CONTROLLER_NAME, namespace=namespace)
    except ValueError:
        raise JobClientError(
            f"no running poserft controller (actor {CONTROLLER_NAME!r}) on this Ray cluster; is a training job running?"
        ) from None
    ray.get(ctl.scale.remote(n))
    return ray.get(ctl.get_status.remote())


def _scale_through_job_server(n: int, address: str, namespace: str | None, timeout_s: float = 300.0) -> dict:
    client = _client(address)
    entry = f"python -m poserft scale --rollout-workers {n} --address auto --json" + (
        f" --namespace {shlex.quote(namespace)}" if namespace else ""
    )
    job = _submit_entry(client, entry, None)
    deadline = time.monotonic() + timeout_s
    while str(client.get_job_status(job)) not in TERMINAL:
        if time.monotonic() > deadline:
            client.stop_job(job)
            raise JobClientError(f"the scale job {job} did not finish within {timeout_s:.0f} s on {address}")
        time.sleep(1)
    logs = client.get_job_logs(job)
    for line in reversed(logs.splitlines()):
        if line.startswith(SCALE_PREFIX):
            return json.loads(line[len(SCALE_PREFIX) :])
    raise JobClientError(f"scale failed on the cluster: {failure_reason(logs, client.get_job_info(job).message)}")


def scale_rollout_workers(n: int, address: str | None = None, namespace: str | None = None) -> dict:
    """Ask the running controller (a named actor) to grow or shrink the rollout pool between steps."""
    if n < 1:
        raise JobClientError(f"--rollout-workers must be at least 1, got {n}")
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    if ("://" in address and not address.startswith("ray://")) or address.endswith(":8265"):
        return _scale_through_job_server(n, dashboard_address(address), namespace)
    return _scale_here(n, address, namespace)
