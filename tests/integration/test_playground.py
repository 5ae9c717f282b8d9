"""The playground page in a real browser: headless Chromium (the Debian package) driven over its
own DevTools protocol (a websocket, no browser download), against the real Serve app.

The test types a description, submits it, and checks what the page drew: the response text is
the API's, the canvas holds a skeleton in the side colours, dragging rotates it, the four
downloads are there, the token persists in the page and a missing token shows the 401 reason.
POSERFT_DOCS_SCREENSHOT=1 also writes the screenshot to docs/img/playground.png."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.serve_helpers import TOKEN, free_port, request, start_app, stop_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "playground.png"
PROMPT = "a person squatting with arms forward"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the Debian chromium package (make test installs it)")


class DevTools:
    """The smallest Chrome DevTools Protocol client: one page target, calls by id, events skipped."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression[:60]!r}: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"the page never satisfied {expression!r}")

    def open(self, url: str) -> None:
        self.js("window.__stale = true")  # so the wait below cannot see the page being left
        self.call("Page.navigate", url=url)
        self.wait_for("!window.__stale && document.readyState === 'complete' && !!window.poserft")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def url(ray_local, tiny_sft):
    base = start_app(tiny_sft)
    yield base
    stop_app()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    port = free_port()
    profile = tmp_path_factory.mktemp("chromium-profile")
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        "--window-size=1100,760",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    targets = [t for t in json.loads(r.read()) if t["type"] == "page"]
                if targets:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.3)
        tools = DevTools(targets[0]["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _canvas_stats(page: DevTools) -> dict:
    return page.js("""(() => {
        const c = document.getElementById('skeleton');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0, orange = 0, blue = 0, green = 0, hash = 0;
        for (let i = 0; i < d.length; i += 4) {
            const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
            if (r + g + b > 60) lit++;
            if (r > 120 && g > 60 && b < 60 && r > g) orange++;
            if (b > 120 && r < 60) blue++;
            if (g > 120 && r < 100 && b < 120) green++;
            hash = (hash * 31 + r + 7 * g + 13 * b) % 1000000007;
        }
        return {lit, orange, blue, green, hash};
    })()""")


def test_playground_draws_the_pose(url, page, tmp_path):
    status, api = request(url + "/v1/text2pose", "POST", {"text": PROMPT})
    assert status == 200 and api["results"][0]["has_pose"]
    page.open(url + "/")
    assert page.js("document.title") == "poserft playground"
    assert _canvas_stats(page)["lit"] == 0  # nothing drawn yet

    # the token goes into the page's field (kept in localStorage), the description is typed
    page.js("document.getElementById('token').focus()")
    page.call("Input.insertText", text=TOKEN)
    page.js("document.getElementById('text').focus()")
    page.call("Input.insertText", text=PROMPT)
    page.js("document.getElementById('generate').click()")
    page.wait_for("window.poserft.last !== null && !window.poserft.busy")

    assert page.js("document.getElementById('status').textContent") == ""
    assert page.js("document.getElementById('response').textContent") == api["results"][0]["text"]
    assert page.js("window.poserft.drawnBones") == 23
    stats = _canvas_stats(page)
    assert stats["lit"] > 1500 and stats["orange"] > 100 and stats["blue"] > 100 and stats["green"] > 50, stats
    names = page.js("[...document.querySelectorAll('#downloads a')].map(a => a.download + ' ' + a.href.slice(0, 5))")
    assert names == ["pose.npz blob:", "pose.json blob:", "pose.png blob:", "pose.bvh blob:"]
    bvh = page.js("fetch([...document.querySelectorAll('#downloads a')][3].href).then(r => r.text())")
    assert bvh.startswith("HIERARCHY") and "Frames: 1" in bvh

    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    (tmp_path / "playground.png").write_bytes(shot)
    if os.environ.get("POSERFT_DOCS_SCREENSHOT") == "1":
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMG.write_bytes(shot)

    # drag across the canvas: the skeleton turns
    rect = "document.getElementById('skeleton').getBoundingClientRect()"
    box = page.js(f"(() => {{ const r = {rect}; return [r.x, r.y, r.width, r.height]; }})()")
    x, y = box[0] + box[2] / 2, box[1] + box[3] / 2
    page.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
    for k in range(1, 6):
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + 30 * k, y=y, button="left", buttons=1)
    page.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + 150, y=y, button="left", clickCount=1)
    turned = _canvas_stats(page)
    assert turned["hash"] != stats["hash"] and turned["lit"] > 1500


def test_token_is_kept_and_required(url, page):
    page.open(url + "/")
    assert page.js("document.getElementById('token').value") == TOKEN  # from localStorage
    page.js("localStorage.removeItem('poserft-token'); document.getElementById('token').value = ''")
    page.js(f"document.getElementById('text').value = {json.dumps(PROMPT)}")
    page.js("document.getElementById('generate').click()")
    page.wait_for("document.getElementById('status').className === 'error'", timeout=60)
    assert "bearer token" in page.js("document.getElementById('status').textContent")
