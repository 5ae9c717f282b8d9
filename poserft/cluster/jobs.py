"""Ray job submission (`poserft submit/status/logs`) and run-time scaling (`poserft scale`)."""

from __future__ import annotations

import shlex
from pathlib import Path

import ray


def submit(address: str, config: str, init: str, run_dir: str, overrides: list[str], working_dir: str = ".", pip_extra: list[str] | None = None) -> str:
    """Submit `poserft train` as a Ray job with this folder as its working directory."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    entry = f"python -m poserft train --config {shlex.quote(config)} --init {shlex.quote(init)} --run-dir {shlex.quote(run_dir)} {sets}".strip()
    excludes = [".venv", "data", "runs", ".git", "benchmarks/results", "**/__pycache__"]
    runtime_env = {"working_dir": str(Path(working_dir).resolve()), "excludes": excludes, "env_vars": {"HF_HUB_OFFLINE": "1"}}
    if pip_extra:
        runtime_env["pip"] = pip_extra
    return client.submit_job(entrypoint=entry, runtime_env=runtime_env)


def job_status(address: str, job_id: str | None = None) -> list[dict]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    if job_id:
        info = client.get_job_info(job_id)
        return [{"job_id": job_id, "status": str(info.status), "entrypoint": info.entrypoint, "message": info.message}]
    return [{"job_id": j.submission_id, "status": str(j.status), "entrypoint": j.entrypoint} for j in client.list_jobs()]


def job_logs(address: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address).get_job_logs(job_id)


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
