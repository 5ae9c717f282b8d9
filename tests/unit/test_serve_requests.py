"""The server's request parsing, without a server: limits are 413s naming the limit, malformed
bodies 400s with one line, good bodies become the pipeline's requests and settings."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from poserft.inference.server import ApiError, ServeLimits, parse_body, parse_request, resolve_token

LIMITS = ServeLimits(max_body_bytes=4096, max_text_chars=50, max_image_bytes=2000, max_image_side=64, max_inputs=3)


def _png(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (9, 9, 9)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_good_requests():
    reqs, settings, exports = parse_request(
        "text2pose", {"texts": ["a", "b"], "samples": 2, "exports": ["bvh", "bvh"]}, LIMITS
    )
    assert [r.text for r in reqs] == ["a", "b"] and settings.samples == 2 and exports == ["bvh"]
    (img,), _, _ = parse_request("image2pose", {"image": "data:image/png;base64," + _png(8, 8)}, LIMITS)
    assert img.task == "image2pose" and img.image[:4] == b"\x89PNG"
    (pose,), _, _ = parse_request("pose2text", {"pose": np.zeros((24, 3)).tolist()}, LIMITS)
    assert pose.pose.shape == (24, 3)


@pytest.mark.parametrize(
    "route,payload,limit",
    [
        ("text2pose", {"text": "x" * 51}, "max_text_chars"),
        ("text2pose", {"texts": ["a"] * 4}, "max_inputs"),
        ("text2pose", {"text": "a", "samples": 17}, "max_samples"),
        ("text2pose", {"text": "a", "max_new_tokens": 257}, "max_new_tokens"),
        ("image2pose", {"image": _png(65, 8)}, "max_image_side"),
        ("image2pose", {"image": base64.b64encode(bytes(3000)).decode()}, "max_image_bytes"),
    ],
)
def test_limits_are_413_naming_the_limit(route, payload, limit):
    with pytest.raises(ApiError, match=limit) as err:
        parse_request(route, payload, LIMITS)
    assert err.value.status == 413


def test_body_limit_and_bad_json():
    with pytest.raises(ApiError, match="max_body_bytes"):
        parse_body(b"{" + b" " * 5000 + b"}", LIMITS)
    for body in (b"{", b"\xff", b"[" * 5000, b"[1]", b'{"a": 1' + b"0" * 5000 + b"}"):
        with pytest.raises(ApiError) as err:
            parse_body(body, ServeLimits())
        assert err.value.status == 400 and "\n" not in err.value.reason


@pytest.mark.parametrize(
    "route,payload,match",
    [
        ("text2pose", {"text": "a", "typo": 1}, "unknown field 'typo'"),
        ("text2pose", {"text": "a", "texts": ["b"]}, "exactly one of"),
        ("text2pose", {"texts": []}, "non-empty list"),
        ("text2pose", {"text": ""}, "non-empty string"),
        ("text2pose", {"text": "a", "temperature": "hot"}, "temperature"),
        ("text2pose", {"text": "a", "exports": ["fbx"]}, "exports must be"),
        ("image2pose", {"image": "@@@"}, "not valid base64"),
        ("image2pose", {"image": base64.b64encode(b"GIF89a" + bytes(20)).decode()}, "PNG or JPEG"),
        ("pose2text", {"pose": [0.0] * 71}, "72 numbers"),
        ("pose2text", {"poses": [[0.0] * 72, [float("nan")] * 72]}, "pose 1: .*NaN"),
    ],
)
def test_malformed_requests_are_400(route, payload, match):
    with pytest.raises(ApiError, match=match) as err:
        parse_request(route, json.loads(json.dumps(payload)), LIMITS)
    assert err.value.status == 400


def test_no_token_refuses_to_start(monkeypatch):
    monkeypatch.delenv("POSERFT_SERVE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="POSERFT_SERVE_TOKEN"):
        resolve_token()
    assert resolve_token(insecure_no_auth=True) is None
    monkeypatch.setenv("POSERFT_SERVE_TOKEN", "t")
    assert resolve_token() == "t"
