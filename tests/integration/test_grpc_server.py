"""The reward gRPC server, for real: a server on localhost, clients over grpc channels."""

import datetime
import ipaddress
import math
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pyarrow as pa
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poserft.common.body import BodyModel
from poserft.common.rotations import axis_angle_to_rot6d
from poserft.common.schemas import POSE_RESPONSE, REWARD_COMPONENTS, TASKS
from poserft.reward_service import grpc_server as gs
from poserft.reward_service.proto import generate as proto_gen
from poserft.reward_service.proto import reward_pb2
from poserft.reward_service.retriever import Retriever, RetrieverConfig
from poserft.reward_service.rewards import RewardScorer, RewardSettings, TextEmbedder

TOKEN = "s3cret-token"
CAPTION = "the left knee is bent."


@pytest.fixture(scope="module")
def retriever_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retr")
    torch.manual_seed(0)
    Retriever(RetrieverConfig()).save(folder)
    return folder


@pytest.fixture(scope="module")
def scorer(retriever_dir):
    return RewardScorer(RewardSettings(retriever_dir=str(retriever_dir)), text_embedder=TextEmbedder())


@pytest.fixture(scope="module")
def server(scorer):
    srv, port = gs.serve("127.0.0.1", 0, scorer, token=TOKEN, max_batch_size=64)
    yield srv, f"127.0.0.1:{port}"
    srv.stop(None)


@pytest.fixture(scope="module")
def client(server):
    with gs.RewardClient(server[1], token=TOKEN, timeout=30) as c:
        yield c


def _f32(values):
    return [float(v) for v in np.asarray(values, np.float32)]  # what survives a proto `float`


def _rows():
    body = BodyModel()
    aa = torch.randn(2, 24, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.4
    six = [_f32(p) for p in axis_angle_to_rot6d(aa).reshape(2, 144)]
    target = [_f32(j) for j in body.forward_kinematics(aa).reshape(2, 72)]

    def row(i, task, text=POSE_RESPONSE, pose=None, target_joints=None, ref=POSE_RESPONSE):
        return {
            "id": f"s{i}",
            "task": task,
            "text": text,
            "has_pose": pose is not None,
            "pose": pose,
            "caption": CAPTION,
            "reference_text": ref,
            "target_joints": target_joints,
        }

    return [
        row(0, "image2pose", pose=six[0], target_joints=target[0]),
        row(1, "image2pose", pose=six[1], target_joints=target[0]),
        row(2, "text2pose", pose=six[1]),
        row(3, "text2pose", text="no pose here"),
        row(4, "pose2text", text="The left knee is bent.", ref=CAPTION),
        row(5, "image2pose", text="nothing", target_joints=target[1]),
    ]


def _code(call, check=None) -> grpc.StatusCode:
    try:
        result = call()
    except grpc.RpcError as err:
        return err.code()
    if check:
        check(result)
    return grpc.StatusCode.OK


def _health(address) -> int:
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        statuses = {
            stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status for s in ("", gs.SERVICE_NAME)
        }
    assert len(statuses) == 1
    return statuses.pop()


# --- scoring -------------------------------------------------------------------------------------


def test_valid_batch_matches_in_process_scorer(client, scorer):
    rows = _rows()
    remote = client.score(rows)
    local = scorer.score(pa.Table.from_pylist(rows)).to_pylist()
    assert [r["id"] for r in remote] == [r["id"] for r in rows]
    for r, loc in zip(remote, local):
        for key in ("reward_total", "reward_error", *(f"reward_{c}" for c in REWARD_COMPONENTS)):
            assert r[key] == loc[key], (r["id"], key)
    assert all(r["reward_error"] is None and r["reward_total"] is not None for r in remote)
    assert remote[3]["reward_semantic"] == -1.0 and remote[5]["reward_joint"] == 0.0  # no pose: the floors
    assert remote[4]["reward_joint"] is None  # not this task's component


def test_response_lists_components_and_keeps_order(client):
    response = client.score_request(gs.rows_to_request(_rows()[::-1]))
    assert list(response.components) == ["format", "text_similarity", "semantic", "joint"]
    assert [s.id for s in response.scores] == ["s5", "s4", "s3", "s2", "s1", "s0"]
    assert set(response.scores[1].components) == {"format", "text_similarity"}


def test_concurrent_calls_get_the_sequential_answers(client):
    rows = _rows()
    expected = client.score(rows)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda k: client.score(rows[k % 6 :] + rows[: k % 6]), range(24)))
    for k, got in enumerate(results):
        assert got == expected[k % 6 :] + expected[: k % 6]


# --- auth ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN + "x", TOKEN[:-1]])
def test_missing_or_wrong_token_is_unauthenticated(server, token, monkeypatch):
    monkeypatch.delenv(gs.TOKEN_ENV, raising=False)
    with gs.RewardClient(server[1], token=token) as c:
        with pytest.raises(grpc.RpcError) as err:
            c.score(_rows()[:1])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_token_without_bearer_scheme_is_rejected(server):
    with grpc.insecure_channel(server[1]) as ch:
        call = ch.unary_unary(gs.SCORE_METHOD)
        data = gs.rows_to_request(_rows()[:1]).SerializeToString()
        denied = grpc.StatusCode.UNAUTHENTICATED
        for value, expected in ((TOKEN, denied), (f"Token {TOKEN}", denied), (f"bearer {TOKEN}", grpc.StatusCode.OK)):
            assert _code(lambda: call(data, metadata=(("authorization", value),), timeout=10)) == expected, value


def test_no_token_refuses_to_start_unless_insecure(scorer, monkeypatch):
    monkeypatch.delenv(gs.TOKEN_ENV, raising=False)
    with pytest.raises(gs.RewardServerError, match="POSERFT_REWARD_TOKEN.*insecure_no_auth"):
        gs.serve("127.0.0.1", 0, scorer)
    with pytest.raises(gs.RewardServerError, match="both a certificate and its key"):
        gs.serve("127.0.0.1", 0, scorer, token="t", tls_cert=b"cert")
    srv, port = gs.serve("127.0.0.1", 0, scorer, insecure_no_auth=True)
    try:
        with gs.RewardClient(f"127.0.0.1:{port}") as c:
            assert c.score(_rows()[4:5])[0]["reward_error"] is None
    finally:
        srv.stop(None)


def test_token_from_environment(scorer, monkeypatch):
    monkeypatch.setenv(gs.TOKEN_ENV, "from-env")
    srv, port = gs.serve("127.0.0.1", 0, scorer)
    try:
        with gs.RewardClient(f"127.0.0.1:{port}") as c:  # the client reads the same variable
            assert c.score(_rows()[4:5])[0]["reward_total"] is not None
        with gs.RewardClient(f"127.0.0.1:{port}", token="other") as c:
            assert _code(lambda: c.score(_rows()[4:5])) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop(None)


# --- validation ----------------------------------------------------------------------------------


def _invalid(client, rows, match):
    with pytest.raises(grpc.RpcError) as err:
        client.score(rows)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert match in err.value.details(), err.value.details()


def test_nan_pose_is_invalid_argument_naming_the_sample(client):
    rows = _rows()
    rows[2]["pose"] = list(rows[2]["pose"])
    rows[2]["pose"][5] = float("nan")
    _invalid(client, rows, "sample 2: pose[5] = nan")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda rows: rows.clear(), "empty batch"),
        (lambda rows: rows[1].update(task="dance"), "sample 1: unknown task 'dance'"),
        (lambda rows: rows[0].update(pose=rows[0]["pose"][:143]), "sample 0: pose has 143 values, expected 144"),
        (lambda rows: rows[0].update(pose=None), "sample 0: pose is empty"),
        (lambda rows: rows[4].update(pose=[0.5] * 200), "sample 4: pose has 200 values"),
        (lambda rows: rows[1].update(pose=[math.inf] + rows[1]["pose"][1:]), "sample 1: pose[0] = inf"),
        (lambda rows: rows[1].update(pose=[3e30] + rows[1]["pose"][1:]), "sample 1: pose[0]"),
        (lambda rows: rows[0].update(target_joints=[0.0] * 71), "sample 0: target_joints has 71 values, expected 72"),
        (lambda rows: rows[5].update(target_joints=None), "sample 5: target_joints is empty"),
        (lambda rows: rows[0].update(target_joints=[-math.inf] * 72), "sample 0: target_joints[0] = -inf"),
        (lambda rows: rows.extend(rows[4:5] * 60), "batch of 66 samples exceeds the server's limit of 64"),
    ],
)
def test_malformed_batches_are_invalid_argument(client, corrupt, match):
    rows = _rows()
    corrupt(rows)
    _invalid(client, rows, match)


def test_undecodable_bytes_are_invalid_argument(server):
    with grpc.insecure_channel(server[1]) as ch:
        call = ch.unary_unary(gs.SCORE_METHOD)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\x0a\x03\x12\x01\xff", metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a ScoreRequest" in err.value.details()


def test_oversize_message_is_rejected(client):
    rows = _rows()[4:5]
    rows[0]["text"] = "x" * (9 * 2**20)
    with pytest.raises(grpc.RpcError) as err:
        client.score(rows)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_scorer_crash_is_internal_and_server_survives(scorer):
    class Exploding:
        settings = scorer.settings
        needs = staticmethod(scorer.needs)

        def score(self, table):
            raise RuntimeError("boom /secret/path")

    srv, port = gs.serve("127.0.0.1", 0, Exploding(), token=TOKEN)
    try:
        with gs.RewardClient(f"127.0.0.1:{port}", token=TOKEN) as c:
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as err:
                    c.score(_rows())
                assert err.value.code() == grpc.StatusCode.INTERNAL
                assert "RuntimeError" in err.value.details() and "secret" not in err.value.details()
        assert _health(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
    finally:
        srv.stop(None)


def _vector(dim):
    small = st.floats(-2, 2, width=32)
    exact = st.lists(small, min_size=dim, max_size=dim)
    return st.one_of(
        st.just([]),
        exact,
        exact,
        exact,
        exact,  # mostly valid, so both outcomes are exercised
        exact.flatmap(
            lambda v: st.tuples(st.integers(0, dim - 1), st.floats(width=32)).map(
                lambda jx: v[: jx[0]] + [jx[1]] + v[jx[0] + 1 :]
            )
        ),
        st.lists(st.floats(width=32), max_size=2 * dim),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "task": st.sampled_from(TASKS * 3 + ("", "dance")),
                "text": st.sampled_from([POSE_RESPONSE, "The left knee is bent.", ""]),
                "caption": st.just(CAPTION),
                "has_pose": st.booleans(),
                "pose": _vector(144),
                "target_joints": _vector(72),
            }
        ),
        max_size=3,
    )
)
def test_validation_accepts_exactly_what_the_scorer_can_score(scorer, samples):
    """Whatever passes validation scores without a per-sample error; whatever fails names its sample."""
    request = gs.rows_to_request(samples)
    try:
        table = gs.request_table(request, TASKS, {"image2pose"}, max_batch_size=3)
    except gs.InvalidRequest as err:
        assert str(err).startswith(("sample ", "empty batch", "batch of "))
        return
    assert 1 <= table.num_rows <= 3
    for s in samples:
        assert s["task"] in TASKS
        for name, dim in (("pose", 144), ("target_joints", 72)):
            v = np.asarray(s[name], np.float32)
            assert len(v) in (0, dim) and np.isfinite(v).all() and (np.abs(v) <= gs.MAX_ABS_VALUE).all()
        assert len(s["pose"]) == 144 or not s["has_pose"]
        assert len(s["target_joints"]) == 72 or s["task"] != "image2pose"
    response = gs.scores_from_table(scorer.score(table))
    assert [(s.error, s.HasField("total")) for s in response.scores] == [("", True)] * len(samples)


# --- health, reflection, TLS ---------------------------------------------------------------------


def test_health_says_serving_without_a_token(server):
    assert _health(server[1]) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(server):
    with grpc.insecure_channel(server[1]) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=gs.SERVICE_NAME),
        ]
        replies = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    assert gs.SERVICE_NAME in {s.name for s in replies[0].list_services_response.service}
    assert "grpc.health.v1.Health" in {s.name for s in replies[0].list_services_response.service}
    assert b"poserft/reward_service/proto/reward.proto" in replies[1].file_descriptor_response.file_descriptor_proto[0]


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_round_trip(scorer, tmp_path):
    cert, key = _self_signed(tmp_path)
    srv, port = gs.serve("127.0.0.1", 0, scorer, token=TOKEN, tls_cert=cert, tls_key=key)
    try:
        with gs.RewardClient(f"localhost:{port}", token=TOKEN, root_cert=cert) as c:
            out = c.score(_rows())
        assert [r["reward_error"] for r in out] == [None] * 6
        with gs.RewardClient(f"localhost:{port}", token=TOKEN, timeout=5) as plain:  # no TLS: cannot connect
            assert _code(lambda: plain.score(_rows())) == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(None)


# --- fuzz ----------------------------------------------------------------------------------------


def _malformed(rng: random.Random, base: list[dict]) -> tuple[bytes, set]:
    """One malformed request as bytes, and the status codes it may get."""
    kind = rng.randrange(6)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 300)), {grpc.StatusCode.INVALID_ARGUMENT}
    if kind == 1:  # a valid request with a few bytes flipped: may still parse and score
        data = bytearray(gs.rows_to_request(base).SerializeToString())
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OK}
    rows = [dict(r) for r in rng.sample(base, rng.randrange(1, len(base) + 1))]
    r = rng.choice(rows)
    bad = rng.choice([math.nan, -math.nan, math.inf, -math.inf, 1e30, -3.4e38, 2e4])
    if kind == 2:  # unknown task
        r["task"] = rng.choice(["", "Text2Pose", "pose2image", "x" * rng.randrange(1, 100), "text2pose\x00"])
    elif kind == 3:  # wrong lengths
        field, dim = rng.choice([("pose", 144), ("target_joints", 72)])
        n = rng.choice([1, dim - 1, dim + 1, 2 * dim, rng.randrange(1, 3 * dim)])
        n = n if n != dim else dim + 1
        r[field] = [rng.uniform(-2, 2) for _ in range(n)]
        r["has_pose"] = r["has_pose"] or field == "pose"
    elif kind == 4:  # NaN / inf / huge values
        field, dim = rng.choice([("pose", 144), ("target_joints", 72)])
        values = [rng.uniform(-1, 1) for _ in range(dim)]
        values[rng.randrange(dim)] = bad
        r[field] = values
        r["has_pose"] = r["has_pose"] or field == "pose"
    else:  # required vector missing, or an empty batch
        if rng.random() < 0.2:
            rows = []
        elif r["task"] == "image2pose" and rng.random() < 0.5:
            r["target_joints"] = None
        else:
            r["has_pose"], r["pose"] = True, None
    return gs.rows_to_request(rows).SerializeToString(), {grpc.StatusCode.INVALID_ARGUMENT}


def _every_sample_answered(data: bytes):
    response = reward_pb2.ScoreResponse.FromString(data)
    assert response.scores and all(s.HasField("total") or s.error for s in response.scores)


def test_fuzz_1000_malformed_requests_then_still_serving(server, client):
    rng = random.Random(1234)
    base = _rows()
    auth = (("authorization", f"Bearer {TOKEN}"),)
    seen: dict = {}
    with grpc.insecure_channel(server[1]) as ch:
        call = ch.unary_unary(gs.SCORE_METHOD)  # raw bytes in, raw bytes out
        for i in range(1000):
            data, allowed = _malformed(rng, base)
            metadata = auth
            if i % 50 == 0:  # now and then no token at all: rejected before anything is parsed
                metadata, allowed = (), {grpc.StatusCode.UNAUTHENTICATED}
            code = _code(lambda: call(data, metadata=metadata, timeout=30), check=_every_sample_answered)
            assert code in allowed, (i, code, data[:80])
            seen[code] = seen.get(code, 0) + 1
    assert seen[grpc.StatusCode.INVALID_ARGUMENT] > 800 and seen[grpc.StatusCode.UNAUTHENTICATED] == 20
    assert _health(server[1]) == health_pb2.HealthCheckResponse.SERVING
    assert all(r["reward_error"] is None for r in client.score(_rows()))


# --- generated code and command line ------------------------------------------------------------


def test_generated_code_is_reproducible(tmp_path):
    written = proto_gen.generate(tmp_path)
    assert sorted(p.name for p in written) == ["reward_pb2.py", "reward_pb2_grpc.py"]
    for p in written:
        stale = f"{p.name} is stale: run python -m poserft.reward_service.proto.generate"
        assert p.read_bytes() == (proto_gen.PROTO_DIR / p.name).read_bytes(), stale
    assert "from . import reward_pb2" in (tmp_path / "reward_pb2_grpc.py").read_text()
    assert reward_pb2.DESCRIPTOR.name == proto_gen.PROTO_NAME


_CLI = (
    "import argparse, sys\n"
    "from poserft.reward_service.grpc_server import register_cli\n"
    "p = argparse.ArgumentParser(); register_cli(p.add_subparsers())\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
)


def _cli_env(token):
    env = {k: v for k, v in os.environ.items() if k != gs.TOKEN_ENV}
    env["HF_HUB_OFFLINE"] = "1"
    if token:
        env[gs.TOKEN_ENV] = token
    return env


def test_cli_without_token_fails_fast():
    proc = subprocess.run(
        [sys.executable, "-c", _CLI, "serve-reward", "--port", "0"],
        env=_cli_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "POSERFT_REWARD_TOKEN" in proc.stderr


def test_cli_serves_until_sigterm(retriever_dir):
    args = ["serve-reward", "--port", "0", "--retriever", str(retriever_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLI, *args],
        env=_cli_env(TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {gs.SERVICE_NAME} on 127.0.0.1:"), line + proc.stderr.read()
        address = line.split(" on ")[1].split(" ")[0]
        with gs.RewardClient(address, token=TOKEN) as c:
            assert [r["reward_error"] for r in c.score(_rows())] == [None] * 6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopping reward server" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_stop_is_graceful(scorer):
    srv, port = gs.serve("127.0.0.1", 0, scorer, token=TOKEN)
    address = f"127.0.0.1:{port}"
    assert _health(address) == health_pb2.HealthCheckResponse.SERVING
    t0 = time.monotonic()
    srv.stop(2.0).wait()
    assert time.monotonic() - t0 < 5
    with gs.RewardClient(address, token=TOKEN, timeout=2) as c:
        assert _code(lambda: c.score(_rows()[4:5])) == grpc.StatusCode.UNAVAILABLE
