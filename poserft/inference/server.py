"""`poserft serve`: the pipeline behind an HTTP JSON API on Ray Serve, with the playground at `/`.

Routes (JSON in, JSON out):
- `POST /v1/text2pose` {"text": "..."} or {"texts": [...]}
- `POST /v1/image2pose` {"image": base64 PNG/JPEG (a data: URL too)} or {"images": [...]}
- `POST /v1/pose2text` {"pose": 72 numbers or 24 x 3} or {"poses": [...]}
  options: samples (0 = the mean pose), temperature (0 = greedy), seed, max_new_tokens, and
  exports (a list of "npz", "json", "png", "bvh": the files come back base64 under each pose);
  answer: {"results": [{"task", "text", "has_pose", "mu", "std", "poses": [{"axis_angle",
  "joints_m", "files"}]}], "backend", "model"}
- `GET /healthz` (open), `GET /metrics` (open, Prometheus text), `GET /` and `/static/*` (the page).

Batching: every input of every request becomes one call of a `@serve.batch` method; Serve
collects the calls that arrive within `batch_wait_s` (up to `max_batch_size`) and the replica runs
them as one engine call (HF `generate` over the padded batch, or one vLLM `generate` over all
prompts). The engine runs in a worker thread, so `/healthz` answers while a batch decodes.
Pose draws are seeded per input of a request, so a user's answer does not depend on the batch.

Safety: `/v1/*` needs `Authorization: Bearer $POSERFT_SERVE_TOKEN` (401 without it, compared in
constant time); the server will not start without a token unless `insecure_no_auth`. Every
limit (`ServeLimits`) is checked before any model work and answered with 413 naming it; a
malformed request gets 400 with a one-line reason; an unexpected error is a 500 for that request
only. Everything is validated before batching, so one bad input never fails a batch.

Metrics are per replica (each replica keeps its own registry): with several replicas, a
scrape of `/metrics` reaches one of them; scrape the replicas' Ray metrics for the sum.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import FileResponse, JSONResponse, Response
from ray import serve

from poserft.inference.exports import FORMATS, export_bytes
from poserft.inference.pipeline import PipelineCore, Request, Settings, image_request, pose_request, text_request

TOKEN_ENV = "POSERFT_SERVE_TOKEN"
STATIC = Path(__file__).resolve().parent / "static"
PAGES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
ROUTES = {"text2pose": ("text", "texts"), "image2pose": ("image", "images"), "pose2text": ("pose", "poses")}
OPTIONS = ("samples", "temperature", "seed", "max_new_tokens", "exports")
log = logging.getLogger("poserft.serve")


@dataclass
class ServeLimits:
    """What one request may carry; each is answered with 413 naming it when exceeded."""

    max_body_bytes: int = 8 * 2**20
    max_text_chars: int = 1000
    max_image_bytes: int = 4 * 2**20  # decoded
    max_image_side: int = 2048  # pixels, width and height
    max_inputs: int = 16  # texts / images / poses in one request
    max_samples: int = 16
    max_new_tokens: int = 256


class ApiError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class ServerError(ValueError):
    """The server is misconfigured (no token)."""


def resolve_token(token: str | None = None, insecure_no_auth: bool = False) -> str | None:
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token:
        return token
    if insecure_no_auth:
        return None
    raise ServerError(
        f"no serve token: set {TOKEN_ENV} (clients send 'Authorization: Bearer <token>'), or pass --insecure-no-auth "
        "for local tests"
    )


# ---------------------------------------------------------------- request parsing (pure)


def parse_body(body: bytes, limits: ServeLimits) -> dict:
    if len(body) > limits.max_body_bytes:
        raise ApiError(413, f"request body of {len(body)} bytes exceeds max_body_bytes {limits.max_body_bytes}")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers, deep nesting
        first = (str(exc).splitlines() or [""])[0][:100]
        raise ApiError(400, f"the body is not JSON ({type(exc).__name__}: {first})") from None
    if not isinstance(payload, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(payload).__name__}")
    return payload


def parse_request(route: str, payload: dict, limits: ServeLimits) -> tuple[list[Request], Settings, list[str]]:
    """The inputs, the settings and the export formats of one API call; ApiError otherwise."""
    one, many = ROUTES[route]
    unknown = [k for k in payload if k not in (one, many, *OPTIONS)]
    if unknown:
        raise ApiError(
            400, f"unknown field {str(unknown[0])[:40]!r}; {route} takes {one!r} or {many!r} and {', '.join(OPTIONS)}"
        )
    if (one in payload) == (many in payload):
        raise ApiError(400, f"{route} needs exactly one of {one!r} (one input) or {many!r} (a list)")
    if many in payload:
        items = payload[many]
        if not isinstance(items, list) or not items:
            raise ApiError(400, f"{many!r} must be a non-empty list")
    else:
        items = [payload[one]]
    if len(items) > limits.max_inputs:
        raise ApiError(413, f"{len(items)} inputs exceed max_inputs {limits.max_inputs} per request")
    settings = _settings(payload, limits)
    exports = payload.get("exports", [])
    if not isinstance(exports, list) or not all(isinstance(f, str) and f in FORMATS for f in exports):
        raise ApiError(400, f"exports must be a list of {', '.join(FORMATS)}")
    parse = {"text2pose": _text, "image2pose": _image, "pose2text": _pose}[route]
    reqs = []
    for i, item in enumerate(items):
        try:
            reqs.append(parse(item, limits))
        except ApiError as exc:
            raise ApiError(exc.status, f"{one} {i}: {exc.reason}" if len(items) > 1 else exc.reason) from None
    return reqs, settings, list(dict.fromkeys(exports))


def _settings(payload: dict, limits: ServeLimits) -> Settings:
    s = Settings(**{k: payload[k] for k in ("samples", "temperature", "seed", "max_new_tokens") if k in payload})
    if isinstance(s.samples, int) and not isinstance(s.samples, bool) and s.samples > limits.max_samples:
        raise ApiError(413, f"samples {s.samples} exceeds max_samples {limits.max_samples}")
    if (
        isinstance(s.max_new_tokens, int)
        and not isinstance(s.max_new_tokens, bool)
        and s.max_new_tokens > limits.max_new_tokens
    ):
        raise ApiError(413, f"max_new_tokens {s.max_new_tokens} exceeds the server's limit {limits.max_new_tokens}")
    try:
        return s.check()
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _text(item, limits: ServeLimits) -> Request:
    if isinstance(item, str) and len(item) > limits.max_text_chars:
        raise ApiError(413, f"text of {len(item)} characters exceeds max_text_chars {limits.max_text_chars}")
    try:
        return text_request(item)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _image(item, limits: ServeLimits) -> Request:
    from PIL import Image

    if not isinstance(item, str):
        raise ApiError(400, f"an image must be a base64 string (PNG or JPEG), got {type(item).__name__}")
    data = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item
    if len(data) * 3 // 4 > limits.max_image_bytes + 3:
        raise ApiError(
            413, f"image of about {len(data) * 3 // 4} bytes exceeds max_image_bytes {limits.max_image_bytes}"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the image is not valid base64") from None
    if len(raw) > limits.max_image_bytes:
        raise ApiError(413, f"image of {len(raw)} bytes exceeds max_image_bytes {limits.max_image_bytes}")
    try:
        with Image.open(io.BytesIO(raw)) as im:  # reads the header only: the size before any decoding
            w, h = im.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ApiError(400, "the image could not be decoded as PNG or JPEG") from None
    if max(w, h) > limits.max_image_side:
        raise ApiError(413, f"image of {w}x{h} pixels exceeds max_image_side {limits.max_image_side}")
    try:
        return image_request(raw)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _pose(item, limits: ServeLimits) -> Request:
    try:
        return pose_request(item)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def result_json(res, exports: list[str]) -> dict:
    out = res.as_dict()
    if exports:
        for k, pose in enumerate(out["poses"]):
            pose["files"] = {
                name: base64.b64encode(data).decode() for name, data in export_bytes(res.record(k), exports).items()
            }
    return out


# ---------------------------------------------------------------- the deployment

api = FastAPI(title="poserft", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class PoseService:
    def __init__(
        self,
        ckpt: str,
        backend: str = "hf",
        token: str | None = None,
        insecure_no_auth: bool = False,
        limits: dict | None = None,
        max_batch_size: int = 16,
        batch_wait_s: float = 0.01,
        threads: int | None = None,
    ):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.token = resolve_token(token, insecure_no_auth)
        self.limits = ServeLimits(**(limits or {}))
        self.core = PipelineCore(ckpt, backend, threads=threads)
        self.model = Path(ckpt).name
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_s)
        self.registry = CollectorRegistry()
        self.m_requests = Counter(
            "poserft_serve_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.m_latency = Histogram(
            "poserft_serve_request_seconds",
            "request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.m_batch = Histogram(
            "poserft_serve_batch_size",
            "inputs per engine call",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )

    # ---- open routes ----
    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "model": self.model, "backend": self.core.backend, "auth": self.token is not None}
        )

    @api.get("/metrics")
    async def metrics(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/")
    async def index(self) -> Response:
        return FileResponse(STATIC / "index.html", media_type=PAGES["index.html"])

    @api.get("/static/{name}")
    async def static(self, name: str) -> Response:
        if name not in PAGES:
            return JSONResponse({"error": f"no static file {name[:40]!r}"}, status_code=404)
        return FileResponse(STATIC / name, media_type=PAGES[name])

    # ---- the API ----
    @api.post("/v1/{route}")
    async def v1(self, route: str, request: HttpRequest) -> Response:
        label = route if route in ROUTES else "unknown"
        t0, status = time.perf_counter(), 200
        try:
            return JSONResponse(await self._answer(route, request))
        except ApiError as exc:
            status = exc.status
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"error": exc.reason}, status_code=status, headers=headers)
        except Exception as exc:  # one request fails, the replica stays up
            status = 500
            log.exception("request to /v1/%s failed", label)
            return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)
        finally:
            self.m_requests.labels(label, str(status)).inc()
            self.m_latency.labels(label).observe(time.perf_counter() - t0)

    async def _answer(self, route: str, request: HttpRequest) -> dict:
        self._check_token(request.headers.get("authorization", ""))
        if route not in ROUTES:
            raise ApiError(404, f"no route /v1/{route[:40]}; routes: {', '.join(f'/v1/{r}' for r in ROUTES)}")
        # The body is read before it is measured: answering early while the client is still
        # sending makes the proxy reset the connection, and the client never sees the 413.
        reqs, settings, exports = parse_request(route, parse_body(await request.body(), self.limits), self.limits)
        for r in reqs:
            try:
                self.core.prompt_ids(r, settings.max_new_tokens)
            except ValueError as exc:
                raise ApiError(413, str(exc)) from None
        results = await asyncio.gather(*(self._batched((r, settings, i)) for i, r in enumerate(reqs)))
        body = await asyncio.to_thread(lambda: [result_json(res, exports) for res in results])
        return {"results": body, "backend": self.core.backend, "model": self.model}

    def _check_token(self, header: str) -> None:
        if self.token is None:
            return
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batched(self, items: list[tuple[Request, Settings, int]]) -> list:
        """One engine call per distinct settings in the batch (usually one)."""
        self.m_batch.observe(len(items))
        out: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for k, (_, s, _) in enumerate(items):
            groups.setdefault(tuple(asdict(s).values()), []).append(k)
        for idx in groups.values():
            reqs, settings, rows = [items[k][0] for k in idx], items[idx[0]][1], [items[k][2] for k in idx]
            for k, res in zip(idx, await asyncio.to_thread(self.core.run, reqs, settings, rows)):
                out[k] = res
        return out


# ---------------------------------------------------------------- starting it


def build_app(args: dict):
    """Serve application builder (`import_path: poserft.inference.server:build_app` in a
    RayService): args ckpt (required), backend, max_batch_size, batch_wait_s, limits, threads,
    insecure_no_auth, num_cpus, and replicas (a number) or autoscaling (Serve's autoscaling_config:
    min_replicas, max_replicas, target_ongoing_requests). The token comes from
    $POSERFT_SERVE_TOKEN in each replica unless args.token is given."""
    args = dict(args)
    if "ckpt" not in args:
        raise ValueError("build_app needs args.ckpt: the checkpoint folder as the replicas see it")
    if "replicas" in args and "autoscaling" in args:
        raise ValueError("build_app takes replicas or autoscaling, not both")
    options = {"ray_actor_options": {"num_cpus": float(args.pop("num_cpus", 1))}}
    if "autoscaling" in args:
        options["autoscaling_config"] = dict(args.pop("autoscaling"))
    else:
        options["num_replicas"] = int(args.pop("replicas", 1))
    return PoseService.options(**options).bind(**args)


def start(
    ckpt: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    backend: str = "hf",
    token: str | None = None,
    insecure_no_auth: bool = False,
    max_batch_size: int = 16,
    batch_wait_s: float = 0.01,
    num_cpus: float = 1,
    limits: dict | None = None,
    threads: int | None = None,
) -> str:
    """Deploy on the current Ray (a local one is started when none is) and return the base URL."""
    import ray

    from poserft.model.checkpoint import check_checkpoint

    token = resolve_token(token, insecure_no_auth)  # fail fast, before Ray starts
    check_checkpoint(ckpt)
    if backend not in ("hf", "vllm"):
        raise ValueError(f"unknown backend {backend!r}; known: hf, vllm")
    if replicas < 1 or max_batch_size < 1:
        raise ValueError(f"--replicas and --max-batch must be at least 1, got {replicas} and {max_batch_size}")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS", "local"), include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": host, "port": port})
    app = build_app(
        {
            "ckpt": str(Path(ckpt).resolve()),
            "backend": backend,
            "token": token,
            "insecure_no_auth": insecure_no_auth,
            "replicas": replicas,
            "num_cpus": num_cpus,
            "max_batch_size": max_batch_size,
            "batch_wait_s": batch_wait_s,
            "limits": limits,
            "threads": threads,
        }
    )
    serve.run(app, name="poserft", route_prefix="/")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def run_forever(url: str, token_on: bool) -> None:
    print(
        f"poserft serve: {url}/ (playground), {url}/v1/text2pose, {url}/healthz, {url}/metrics; auth "
        f"{'on' if token_on else 'OFF'}; Ctrl-C stops"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
