"""The reward service over gRPC (docs/architecture.md §6, docs/reward_service.md): a thin shell around `RewardScorer`.

- `RewardServer(scorer, ...)` / `serve(host, port, scorer, ...)`: a grpc.server with the
  `poserft.reward.v1.RewardService` (proto/reward.proto), the standard health service and server
  reflection. Optional TLS; message size capped by gRPC itself (RESOURCE_EXHAUSTED).
- Auth: every RewardService call needs `authorization: Bearer <token>` metadata (token from the
  argument or $POSERFT_REWARD_TOKEN), else UNAUTHENTICATED. Health and reflection stay open. With
  no token the server refuses to start unless `insecure_no_auth=True`.
- A batch is scored whole or rejected whole with INVALID_ARGUMENT naming the first bad sample, so
  a malformed sample is never silently scored. Per-sample conditions the scorer itself reports
  (e.g. a missing retriever) come back in `SampleScore.error`. A crash inside the scorer is
  INTERNAL and the server keeps serving.
- `RewardClient(address, ...).score(rows)`: dicts in, dicts out with the scorer's column names
  (`reward_<component>`, `reward_total`, `reward_error`).
- `register_cli(subparsers)`: the `serve-reward` command.
"""

from __future__ import annotations

import hmac
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from poserft.common.body import POSE_6D_DIM
from poserft.common.schemas import AA_DIM, REWARD_COMPONENTS, TASKS
from poserft.reward_service.proto import reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name  # poserft.reward.v1.RewardService
SCORE_METHOD = f"/{SERVICE_NAME}/Score"
TOKEN_ENV = "POSERFT_REWARD_TOKEN"
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 4096
# Poses (6D) and joints (metres) are O(1): a value this large means a diverged policy or a bug, and is
# rejected with a message rather than scored as if it were a pose.
MAX_ABS_VALUE = 1e4


class RewardServerError(RuntimeError):
    """The server is misconfigured (no token, half a TLS pair, port in use)."""


class InvalidRequest(ValueError):
    """A ScoreRequest that cannot be scored; the message names the sample and the problem."""


# --- request / response conversion ---------------------------------------------------------------


def _vector(values, name: str, index: int, dim: int, required: bool) -> np.ndarray | None:
    """A repeated float field -> (dim,) float32 array, None when empty and allowed, else InvalidRequest."""
    arr = np.array(values, dtype=np.float32)
    if arr.size == 0:
        if required:
            raise InvalidRequest(f"sample {index}: {name} is empty but {dim} values are required")
        return None
    if arr.size != dim:
        raise InvalidRequest(f"sample {index}: {name} has {arr.size} values, expected {dim}")
    bad = np.flatnonzero(~np.isfinite(arr) | (np.abs(arr) > MAX_ABS_VALUE))
    if len(bad):
        j = int(bad[0])
        raise InvalidRequest(f"sample {index}: {name}[{j}] = {arr[j]} is not finite or exceeds |{MAX_ABS_VALUE:g}|")
    return arr


def request_table(
    request: reward_pb2.ScoreRequest,
    tasks: tuple[str, ...],
    joint_tasks: set[str],
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> pa.Table:
    """Validate a request and turn it into the Arrow batch `RewardScorer.score` takes."""
    samples = request.samples
    if not samples:
        raise InvalidRequest("empty batch: send at least one sample")
    if len(samples) > max_batch_size:
        raise InvalidRequest(
            f"batch of {len(samples)} samples exceeds the server's limit of {max_batch_size}; split it"
        )
    poses, targets = [], []
    for i, s in enumerate(samples):
        if s.task not in tasks:
            raise InvalidRequest(f"sample {i}: unknown task {s.task!r}; known: {', '.join(tasks)}")
        poses.append(_vector(s.pose, "pose", i, POSE_6D_DIM, required=s.has_pose))
        targets.append(_vector(s.target_joints, "target_joints", i, AA_DIM, required=s.task in joint_tasks))
    vec = pa.list_(pa.float32())
    return pa.table(
        {
            "id": pa.array([s.id for s in samples], pa.string()),
            "task": pa.array([s.task for s in samples], pa.string()),
            "text": pa.array([s.text for s in samples], pa.string()),
            "has_pose": pa.array([s.has_pose for s in samples], pa.bool_()),
            "pose": pa.array(poses, vec),
            "caption": pa.array([s.caption for s in samples], pa.string()),
            "reference_text": pa.array([s.reference_text for s in samples], pa.string()),
            "target_joints": pa.array(targets, vec),
        }
    )


def scores_from_table(scored: pa.Table) -> reward_pb2.ScoreResponse:
    cols = scored.to_pydict()
    response = reward_pb2.ScoreResponse(components=list(REWARD_COMPONENTS))
    for i, sample_id in enumerate(cols["id"]):
        score = response.scores.add(id=sample_id, error=cols["reward_error"][i] or "")
        for c in REWARD_COMPONENTS:
            if cols[f"reward_{c}"][i] is not None:
                score.components[c] = cols[f"reward_{c}"][i]
        if cols["reward_total"][i] is not None:
            score.total = cols["reward_total"][i]
        elif not score.error:  # a NaN total with no reason must not pass as "unscored, no error"
            score.error = "reward is not finite for this sample"
    return response


def rows_to_request(rows: list[dict]) -> reward_pb2.ScoreRequest:
    """Dicts with the scorer's column names (extra keys ignored; `id` defaults to the row index)."""
    request = reward_pb2.ScoreRequest()
    for i, row in enumerate(rows):
        request.samples.add(
            id=str(row.get("id", i)),
            task=row["task"],
            text=row.get("text") or "",
            has_pose=bool(row.get("has_pose")),
            pose=row.get("pose") or [],
            caption=row.get("caption") or "",
            reference_text=row.get("reference_text") or "",
            target_joints=row.get("target_joints") or [],
        )
    return request


def response_to_rows(response: reward_pb2.ScoreResponse) -> list[dict]:
    out = []
    for s in response.scores:
        row = {"id": s.id}
        row.update({f"reward_{c}": s.components.get(c) for c in response.components})
        row["reward_total"] = s.total if s.HasField("total") else None
        row["reward_error"] = s.error or None
        out.append(row)
    return out


# --- server --------------------------------------------------------------------------------------


class _Undecodable:
    """Stands in for a request whose bytes are not a ScoreRequest, so it becomes INVALID_ARGUMENT."""

    def __init__(self, err: DecodeError):
        self.err = err


def _parse_request(data: bytes):
    try:
        return reward_pb2.ScoreRequest.FromString(data)
    except DecodeError as err:
        return _Undecodable(err)


class RewardServicer:
    def __init__(self, scorer, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.tasks = tuple(t for t in TASKS if t in scorer.settings.weights)
        self.joint_tasks = {t for t in self.tasks if scorer.needs(t, "joint")}
        self._lock = threading.Lock()  # the scorer (embedding cache, torch modules) is not thread-safe

    def Score(self, request, context):
        try:
            if isinstance(request, _Undecodable):
                raise InvalidRequest(f"request is not a ScoreRequest: {request.err}")
            table = request_table(request, self.tasks, self.joint_tasks, self.max_batch_size)
            with self._lock:
                scored = self.scorer.score(table)
            return scores_from_table(scored)
        except InvalidRequest as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception as err:  # a bug, not the caller's fault: log it, answer briefly, keep serving
            log.exception("scoring a batch of %d samples failed", len(request.samples))
            context.abort(grpc.StatusCode.INTERNAL, f"scoring failed ({type(err).__name__}); see the reward server log")


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """UNAUTHENTICATED for calls under `protected_prefix` without `authorization: Bearer <token>`."""

    def __init__(self, token: str, protected_prefix: str):
        self._token = token.encode()
        self._prefix = protected_prefix
        self._deny = grpc.unary_unary_rpc_method_handler(self._reject)

    def _authorized(self, metadata) -> bool:
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            return False
        scheme, _, given = values[0].partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    @staticmethod
    def _reject(request, context):
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (metadata 'authorization: Bearer <token>')"
        )

    def intercept_service(self, continuation, handler_call_details):
        details = handler_call_details
        if details.method.startswith(self._prefix) and not self._authorized(details.invocation_metadata):
            return self._deny
        return continuation(handler_call_details)


def _read(value: str | bytes | Path) -> bytes:
    return value if isinstance(value, bytes) else Path(value).read_bytes()


def resolve_token(token: str | None = None, insecure_no_auth: bool = False) -> str | None:
    """The explicit token, else $POSERFT_REWARD_TOKEN; None only when auth is explicitly off."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token:
        return token
    if insecure_no_auth:
        return None
    raise RewardServerError(
        f"no reward-server token: set {TOKEN_ENV} (or pass token=...), "
        "or pass insecure_no_auth=True / --insecure-no-auth to serve without authentication"
    )


class RewardServer:
    """The reward gRPC server; `start()` binds and returns the port (pass port=0 for a free one)."""

    def __init__(
        self,
        scorer,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        insecure_no_auth: bool = False,
        tls_cert: str | bytes | Path | None = None,
        tls_key: str | bytes | Path | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        workers: int = 4,
    ):
        self.token = resolve_token(token, insecure_no_auth)
        if (tls_cert is None) != (tls_key is None):
            raise RewardServerError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        self.address = f"{host}:{port}"
        self.tls = tls_cert is not None
        self._credentials = grpc.ssl_server_credentials([(_read(tls_key), _read(tls_cert))]) if self.tls else None
        if self.token and not self.tls and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("reward server on %s without TLS: the bearer token travels in clear text", self.address)
        interceptors = [BearerTokenInterceptor(self.token, f"/{SERVICE_NAME}/")] if self.token else []
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward-grpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        servicer = RewardServicer(scorer, max_batch_size)
        handlers = {
            "Score": grpc.unary_unary_rpc_method_handler(
                servicer.Score,
                request_deserializer=_parse_request,
                response_serializer=reward_pb2.ScoreResponse.SerializeToString,
            )
        }
        # Registered by hand, not with reward_pb2_grpc.add_RewardServiceServicer_to_server, so that
        # bytes that are not a ScoreRequest get INVALID_ARGUMENT instead of gRPC's generic INTERNAL.
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        self.server.add_registered_method_handlers(SERVICE_NAME, handlers)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port: int | None = None

    def start(self) -> int:
        try:
            if self.tls:
                self.port = self.server.add_secure_port(self.address, self._credentials)
            else:
                self.port = self.server.add_insecure_port(self.address)
        except RuntimeError as err:
            raise RewardServerError(
                f"cannot bind the reward server to {self.address} ({err}); is the port in use?"
            ) from err
        if not self.port:
            raise RewardServerError(f"cannot bind the reward server to {self.address}; is the port in use?")
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def stop(self, grace: float | None = 5.0) -> threading.Event:
        """Report NOT_SERVING, refuse new calls, and let running ones finish within `grace` seconds."""
        self.health.enter_graceful_shutdown()
        return self.server.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)


def serve(
    host: str,
    port: int,
    scorer,
    token: str | None = None,
    tls_cert=None,
    tls_key=None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    workers: int = 4,
    *,
    insecure_no_auth: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> tuple[RewardServer, int]:
    """Build and start a RewardServer; returns it and the bound port."""
    server = RewardServer(
        scorer,
        host,
        port,
        token=token,
        insecure_no_auth=insecure_no_auth,
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_message_bytes=max_message_bytes,
        max_batch_size=max_batch_size,
        workers=workers,
    )
    return server, server.start()


# --- client --------------------------------------------------------------------------------------


class RewardClient:
    """`RewardClient("host:port", token).score(rows)`; raises grpc.RpcError with the server's status."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        root_cert: str | bytes | Path | None = None,
        timeout: float = 60.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ):
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", max_message_bytes)]
        if root_cert is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(_read(root_cert)), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = reward_pb2_grpc.RewardServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def score_request(self, request: reward_pb2.ScoreRequest) -> reward_pb2.ScoreResponse:
        return self.stub.Score(request, timeout=self.timeout, metadata=self.metadata)

    def score(self, rows: list[dict]) -> list[dict]:
        return response_to_rows(self.score_request(rows_to_request(rows)))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- command line --------------------------------------------------------------------------------


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "serve-reward",
        help="serve the rewards over gRPC until SIGTERM / Ctrl-C",
        description=f"Serve RewardService. The bearer token comes from ${TOKEN_ENV}.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for other machines)")
    p.add_argument("--port", type=int, default=50051, help="0 picks a free port (printed on start)")
    p.add_argument(
        "--retriever",
        default=None,
        metavar="DIR",
        help="reward retriever folder (semantic reward); overrides the config's",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="take rewards.* (weights, joint_tau_m, joint_align, joint_root_share, retriever_dir, semantic_text) "
        "and body.smpl_dir from this config",
    )
    p.add_argument("--tls-cert", default=None, help="server certificate (PEM); needs --tls-key")
    p.add_argument("--tls-key", default=None, help="server private key (PEM)")
    p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_BYTES / 2**20)
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    p.add_argument("--workers", type=int, default=4, help="gRPC handler threads")
    p.add_argument("--grace", type=float, default=5.0, help="seconds running calls get to finish on shutdown")
    p.add_argument("--insecure-no-auth", action="store_true", help="serve without a token (local testing only)")
    p.set_defaults(func=_cmd_serve_reward)


def _cmd_serve_reward(args) -> int:
    from poserft.common.config import ConfigError, load_config
    from poserft.reward_service.rewards import RewardScorer, RewardSettings

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port (0 to 65535; 0 picks a free one)")
    for name in ("max_batch_size", "workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.max_message_mb > 0:
        raise ValueError(f"--max-message-mb must be above 0, got {args.max_message_mb}")
    try:
        token = resolve_token(None, args.insecure_no_auth)  # before loading models: fail fast
        cfg = load_config(args.config, [])
        scorer = RewardScorer(RewardSettings.from_config(cfg, retriever_dir=args.retriever))
        server = RewardServer(
            scorer,
            args.host,
            args.port,
            token=token,
            insecure_no_auth=args.insecure_no_auth,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_message_bytes=int(args.max_message_mb * 2**20),
            max_batch_size=args.max_batch_size,
            workers=args.workers,
        )
        port = server.start()
    except (RewardServerError, ConfigError) as err:
        print(f"poserft: error: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"serving {SERVICE_NAME} on {args.host}:{port} (tls {'on' if server.tls else 'off'}, "
        f"auth {'on' if token else 'OFF'})",
        flush=True,
    )
    try:
        while not stop.wait(1.0):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        print("stopping reward server", flush=True)
        server.stop(args.grace).wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
