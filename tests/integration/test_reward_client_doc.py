"""docs/reward_service.md's example client, run as written against a real `poserft serve-reward`."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reward_service.md"


@pytest.fixture
def reward_server():
    env = {**os.environ, "POSERFT_REWARD_TOKEN": "doc-test-token"}
    cmd = [sys.executable, "-m", "poserft", "serve-reward", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    deadline = time.time() + 180
    address = None
    while address is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"poserft serve-reward exited with {proc.returncode}")
        found = re.search(r"serving \S+ on (\S+:\d+)", line)
        address = found.group(1) if found else None
    assert address, "the reward server did not report its address"
    yield address
    proc.terminate()
    proc.wait(timeout=60)


def test_doc_example_client_runs(reward_server):
    code = re.search(r"## A client in Python.*?```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    env = {**os.environ, "REWARD_ADDRESS": reward_server, "POSERFT_REWARD_TOKEN": "doc-test-token"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4, res.stdout
    ids, totals = [ln.split()[0] for ln in lines[:3]], [ln.split()[1] for ln in lines[:3]]
    assert ids == ["0", "1", "2"]
    # image2pose with the template and a pose: format 1, a joint reward in (0, 1], a text similarity
    first = lines[0]
    assert "'format': 1.0" in first and "'joint'" in first and float(totals[0]) > 1.0
    assert "'joint'" not in lines[1] and "'text_similarity'" in lines[1]  # pose2text: no pose components
    assert "'format': 0.0" in lines[2] and "'joint': 0.0" in lines[2]  # no pose: the floors, still a score
    assert lines[3] == "refused: UNAUTHENTICATED"


def test_client_raises_invalid_argument(reward_server):
    from poserft.reward_service.client import POSE_RESPONSE, RewardClient, RewardServiceError

    with RewardClient(reward_server, token="doc-test-token") as client:
        with pytest.raises(RewardServiceError) as err:
            client.score(
                [{"task": "image2pose", "text": POSE_RESPONSE, "reference_text": POSE_RESPONSE}]
            )  # no target joints
        assert err.value.code == "INVALID_ARGUMENT" and "sample 0" in err.value.details
        with pytest.raises(ValueError, match="144"):
            client.score([{"task": "text2pose", "text": POSE_RESPONSE, "pose": [0.0] * 72}])
