"""`poserft serve` for real: Ray Serve on a local Ray, the tiny SFT checkpoint, HTTP over a socket.

One app for the module. Covers: open health/metrics/page, the bearer token, every limit (413
naming it), 500+ malformed requests (all 4xx, the server healthy after), concurrent clients
(batched, each answer the one it gets alone), and the exports read back."""

from __future__ import annotations

import base64
import io
import json
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from bvh import Bvh
from PIL import Image

from tests.integration.serve_helpers import TOKEN, request, start_app, stop_app

TEXTS = [
    "a person squatting with arms forward",
    "The person is kneeling with both arms raised.",
    "someone stands with the left leg lifted",
    "the body leans forward, hands on the knees",
    "a person sitting on the ground",
    "both arms stretched out to the sides",
]


@pytest.fixture(scope="module")
def url(ray_local, tiny_sft):
    base = start_app(tiny_sft, max_batch_size=16, batch_wait_s=0.05)
    yield base
    stop_app()


def _png(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _metric(url: str, name: str, labels: str = "") -> float:
    _, text = request(url + "/metrics", token=None)
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels) if labels else "")) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_metrics_and_page_are_open(url):
    status, body = request(url + "/healthz", token=None)
    assert status == 200 and body["status"] == "ok" and body["auth"] is True
    status, html = request(url + "/", token=None)
    assert status == 200 and "poserft playground" in html and "/static/app.js" in html
    assert request(url + "/static/app.js", token=None)[0] == 200
    assert request(url + "/static/server.py", token=None)[0] == 404
    status, text = request(url + "/metrics", token=None)
    assert status == 200 and "poserft_serve_requests_total" in text


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + TOKEN, "Bearer", TOKEN])
def test_requests_without_the_token_are_refused(url, header):
    headers = {} if header is None else {"Authorization": header}
    status, body = request(url + "/v1/text2pose", "POST", {"text": "a person standing"}, token=None, headers=headers)
    assert status == 401 and "bearer token" in body["error"]


def test_text2pose_with_exports(url, tiny_sft):
    from poserft.common.body import BodyModel
    from poserft.inference.pipeline import PosePipeline

    status, body = request(url + "/v1/text2pose", "POST", {"text": TEXTS[0], "exports": ["npz", "json", "png", "bvh"]})
    assert status == 200, body
    (res,) = body["results"]
    assert res["has_pose"], "the SFT'd tiny policy answers text2pose with <POSE>"
    (pose,) = res["poses"]
    assert sorted(pose["files"]) == ["pose.bvh", "pose.json", "pose.npz", "pose.png"]
    joints = np.array(pose["joints_m"])
    assert np.allclose(joints, BodyModel().joints_from_axis_angle(np.array(pose["axis_angle"]).reshape(1, 24, 3))[0])
    with np.load(io.BytesIO(base64.b64decode(pose["files"]["pose.npz"]))) as z:
        assert np.allclose(z["joints_m"], joints) and np.allclose(z["mu"], res["mu"])
    assert Bvh(base64.b64decode(pose["files"]["pose.bvh"]).decode()).nframes == 1
    # the same answer as the Python API in this process
    [local] = PosePipeline.load(tiny_sft, backend="hf").text_to_pose([TEXTS[0]])
    assert res["text"] == local.text
    assert np.abs(np.array(res["mu"]) - local.mu).max() < 1e-4


LIMITS = [
    ("max_body_bytes", {"text": "a" * 10, "pad": "x" * (9 * 2**20)}, "text2pose"),
    ("max_text_chars", {"text": "a person " * 200}, "text2pose"),
    ("max_inputs", {"texts": ["a person standing"] * 17}, "text2pose"),
    ("max_samples", {"text": "a person standing", "samples": 17}, "text2pose"),
    ("max_new_tokens", {"text": "a person standing", "max_new_tokens": 5000}, "text2pose"),
    ("max_image_bytes", {"image": base64.b64encode(b"\x89PNG" + bytes(5 * 2**20)).decode()}, "image2pose"),
    ("max_image_side", {"image": _png(3000, 8)}, "image2pose"),
]


@pytest.mark.parametrize("limit,body,route", LIMITS, ids=[name for name, _, _ in LIMITS])
def test_every_limit_is_a_413_naming_it(url, limit, body, route):
    status, answer = request(f"{url}/v1/{route}", "POST", body)
    assert status == 413 and limit in answer["error"], answer
    assert "\n" not in answer["error"]


def _malformed(rng: random.Random) -> tuple[str, str, bytes]:
    """(method, path, body): a request no part of the API accepts."""
    route = rng.choice(["text2pose", "image2pose", "pose2text"])
    good = {
        "text2pose": {"text": "a person"},
        "image2pose": {"image": _png(16, 16)},
        "pose2text": {"pose": [0.0] * 72},
    }[route]
    kind = rng.randrange(14)
    if kind == 0:
        return "POST", f"/v1/{route}", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        text = json.dumps(good)
        return "POST", f"/v1/{route}", text[: rng.randrange(1, len(text))].encode()
    if kind == 2:
        return "POST", f"/v1/{route}", json.dumps(rng.choice([[], [1, 2], "text", 3, None, True])).encode()
    if kind == 3:
        return "POST", f"/v1/{route}", json.dumps({**good, f"field{rng.randrange(99)}": 1}).encode()
    if kind == 4:  # the input of the wrong type
        key = next(iter(good))
        return "POST", f"/v1/{route}", json.dumps({key: rng.choice([None, 3, 2.5, {"a": 1}, [], True, [[]]])}).encode()
    if kind == 5:  # an option of the wrong type or out of range
        opt = rng.choice(["samples", "temperature", "seed", "max_new_tokens", "exports"])
        bad = {
            "samples": [-1, "3", 1.5, None],
            "temperature": [-1, "hot", 11, None],
            "seed": [-5, 2**40, "s", 0.5],
            "max_new_tokens": [0, -3, "many", 2.0],
            "exports": ["bvh", ["fbx"], [1], {"a": 1}],
        }[opt]
        return "POST", f"/v1/{route}", json.dumps({**good, opt: rng.choice(bad)}).encode()
    if kind == 6:
        return "POST", f"/v1/{route}", b"[" * 100000 + b"]" * 100000
    if kind == 7:
        return "POST", f"/v1/{route}", b'{"text": "\xff\xfe broken utf8"}'
    if kind == 8:
        return (
            "POST",
            "/v1/pose2text",
            json.dumps({"pose": rng.choice([[0.0] * 71, [[0.0] * 3] * 23, ["a"] * 72])}).encode(),
        )
    if kind == 9:
        return "POST", "/v1/pose2text", b'{"pose": [NaN' + b", 0.0" * 71 + b"]}"
    if kind == 10:
        return (
            "POST",
            "/v1/image2pose",
            json.dumps(
                {"image": rng.choice(["@@not base64@@", base64.b64encode(b"GIF89a....").decode(), ""])}
            ).encode(),
        )
    if kind == 11:
        return "POST", f"/v1/{rng.choice(['text2poses', 'pose', '..', 'x' * 300])}", json.dumps(good).encode()
    if kind == 12:
        return "POST", "/v1/text2pose", json.dumps({"texts": rng.choice([[], ["ok", 5], "not a list", [""]])}).encode()
    return "POST", "/v1/text2pose", b'{"text": 1' + b"0" * 5000 + b"}"


def test_fuzz_malformed_requests_leave_the_server_healthy(url):
    rng = random.Random(1234)
    cases = [_malformed(rng) for _ in range(520)]
    before = _metric(url, "poserft_serve_requests_total", 'route="text2pose",status="200"')

    def send(case):
        method, path, body = case
        return request(url + path, method, body, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, cases))
    bad = [(c[1], c[2][:80], s, a) for c, (s, a) in zip(cases, answers) if not 400 <= s < 500]
    assert not bad, bad[:5]
    for status, answer in answers:
        if isinstance(answer, dict) and "error" in answer:
            assert answer["error"] and "\n" not in answer["error"]
    assert sum(isinstance(a, dict) and "error" in a for _, a in answers) >= 500
    assert request(url + "/healthz", token=None)[0] == 200
    status, body = request(url + "/v1/text2pose", "POST", {"text": TEXTS[1]})
    assert status == 200 and body["results"][0]["text"]
    assert _metric(url, "poserft_serve_requests_total", 'route="text2pose",status="200"') == before + 1


def test_concurrent_clients_are_batched_and_independent(url):
    jobs = [("text2pose", {"text": t}) for t in TEXTS] + [("text2pose", {"text": TEXTS[0], "samples": 3, "seed": 5})]
    jobs += [("pose2text", {"pose": (np.random.default_rng(i).normal(0, 0.3, 72)).tolist()}) for i in range(3)]
    alone = [request(f"{url}/v1/{route}", "POST", body) for route, body in jobs]
    assert all(s == 200 for s, _ in alone)
    batches_before = _metric(url, "poserft_serve_batch_size_count")
    inputs_before = _metric(url, "poserft_serve_batch_size_sum")
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: request(f"{url}/v1/{job[0]}", "POST", job[1]), jobs * 2))
    for k, (status, body) in enumerate(together):
        assert status == 200, body
        (want,), (got,) = alone[k % len(jobs)][1]["results"], body["results"]
        assert got["text"] == want["text"], k
        assert got["has_pose"] == want["has_pose"] and len(got["poses"]) == len(want["poses"])
        if want["has_pose"]:
            assert np.abs(np.array(got["mu"]) - np.array(want["mu"])).max() < 1e-4
            for p, q in zip(got["poses"], want["poses"]):
                assert np.abs(np.array(p["joints_m"]) - np.array(q["joints_m"])).max() < 1e-3
    sampled = together[len(TEXTS)][1]["results"][0]["poses"]
    assert len(sampled) == 3 and not np.allclose(sampled[0]["axis_angle"], sampled[1]["axis_angle"])
    batches = _metric(url, "poserft_serve_batch_size_count") - batches_before
    inputs = _metric(url, "poserft_serve_batch_size_sum") - inputs_before
    assert inputs == 2 * len(jobs)
    assert batches < inputs, "concurrent inputs should share engine calls"
