"""Shared by the server and playground tests: start the real Serve app on the local Ray, and a
small HTTP client (urllib, no mocks)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(ckpt, **kwargs) -> str:
    from poserft.inference.server import start

    return start(str(ckpt), port=free_port(), token=TOKEN, num_cpus=1, threads=1, **kwargs)


def stop_app() -> None:
    from ray import serve

    serve.shutdown()


def request(
    url: str,
    method: str = "GET",
    body: bytes | dict | None = None,
    token: str | None = TOKEN,
    headers: dict | None = None,
    timeout: float = 120,
) -> tuple[int, dict | str]:
    """(status, parsed JSON or text) of one HTTP call; HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in ctype else raw.decode(errors="replace")
