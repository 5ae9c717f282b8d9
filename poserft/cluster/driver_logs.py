"""Where the output of Ray's workers goes in `poserft train`.

Ray forwards every actor's stdout and stderr to the driver: the controller's one line per step,
but also vLLM's, Triton's and torch's start-up warnings from every rollout worker (about fifty
lines on the demo). Unless `--verbose`, `route_worker_logs(path)` writes all of it to
`path` (RUN_DIR/logs/workers.log) and echoes only the controller's own lines to the terminal.
It replaces the handler Ray installs in `ray.init(log_to_driver=True)` (Ray 2.60's
`global_worker_stdstream_dispatcher`), so call it right after `ray.init`.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

RAY_HANDLER = "ray_print_logs"
OUR_HANDLER = "poserft_worker_logs"


def _source(batch: dict) -> str:
    return str(batch.get("actor_name") or batch.get("task_name") or "worker")


def route_worker_logs(path: Path, echo_actor: str = "Controller") -> Path:
    """Worker output -> `path`; the lines of actors whose name contains `echo_actor` also to stdout."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("a", encoding="utf-8")
    lock = threading.Lock()

    def handle(batch: dict) -> None:
        source, lines = _source(batch), batch.get("lines") or []
        with lock:
            for line in lines:
                sink.write(f"({source} pid={batch.get('pid')}{' stderr' if batch.get('is_err') else ''}) {line}\n")
            sink.flush()
        if echo_actor in source and not batch.get("is_err"):
            for line in lines:
                print(line, file=sys.stdout, flush=True)

    global_worker_stdstream_dispatcher.remove_handler(RAY_HANDLER)
    global_worker_stdstream_dispatcher.remove_handler(OUR_HANDLER)  # a second run in this process: its own file
    global_worker_stdstream_dispatcher.add_handler(OUR_HANDLER, handle)
    return path
