"""Ray job submission (`poserft submit/status/logs`) and run-time scaling (`poserft scale`)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import ray


class JobClientError(ValueError):
    """The job server could not be reached or refused us; the message says what to do."""


def _client(address: str):
    """A JobSubmissionClient; `poserft.cli.use_cluster_token` (run before Ray is imported)
    makes it send the cluster's auth token."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except ray.exceptions.AuthenticationError:
        raise JobClientError(
            f"the Ray cluster at {address} requires an auth token: set RAY_AUTH_TOKEN, or copy the head's ~/.ray/auth_token "
            "to this machine (or point RAY_AUTH_TOKEN_PATH at it)"
        ) from None
    except ConnectionError as err:
        raise JobClientError(f"cannot reach the Ray job server at {address} ({str(err).splitlines()[0][:160]}); is the head's dashboard on that port?") from None


def submit(address: str, config: str, init: str, run_dir: str, overrides: list[str], working_dir: str = ".", pip_extra: list[str] | None = None) -> str:
    """Submit `poserft train` as a Ray job with this folder as its working directory."""
    client = _client(address)
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    entry = f"python -m poserft train --config {shlex.quote(config)} --init {shlex.quote(init)} --run-dir {shlex.quote(run_dir)} {sets}".strip()
    excludes = [".venv", "data", "runs", "benchmarks/results", "**/__pycache__"]  # .git: Ray excludes it itself
    runtime_env = {"working_dir": str(Path(working_dir).resolve()), "excludes": excludes, "env_vars": {"HF_HUB_OFFLINE": "1"}}
    if pip_extra:
        runtime_env["pip"] = pip_extra
    deadline = time.monotonic() + 240
    while True:  # a head that just started answers before its job agent is up
        try:
            return client.submit_job(entrypoint=entry, runtime_env=runtime_env)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def job_status(address: str, job_id: str | None = None) -> list[dict]:
    client = _client(address)
    if job_id:
        info = client.get_job_info(job_id)
        return [{"job_id": job_id, "status": str(info.status), "entrypoint": info.entrypoint, "message": info.message}]
    return [{"job_id": j.submission_id, "status": str(j.status), "entrypoint": j.entrypoint} for j in client.list_jobs()]


def job_logs(address: str, job_id: str) -> str:
    return _client(address).get_job_logs(job_id)


def scale_rollout_workers(n: int, address: str | None = None, namespace: str | None = None) -> dict:
    """Ask the running controller (a named actor) to grow or shrink the rollout pool between steps."""
    from poserft.cluster.controller import CONTROLLER_NAME, NAMESPACE

    namespace = namespace or NAMESPACE
    if not ray.is_initialized():
        ray.init(address=address or "auto", namespace=namespace, logging_level="ERROR")
    try:
        ctl = ray.get_actor(CONTROLLER_NAME, namespace=namespace)
    except ValueError:
        raise ValueError(f"no running poserft controller (actor {CONTROLLER_NAME!r}) on this Ray cluster; is a training job running?") from None
    ray.get(ctl.scale.remote(n))
    return ray.get(ctl.get_status.remote())
