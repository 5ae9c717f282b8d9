"""The README's training command, copied verbatim, runs on a folder laid out like a checkout after
`make demo`: configs/tiny-cpu.yaml (the real file), data/synth, runs/demo/sft/policy and
runs/demo/retriever_reward. The folders come from the session fixtures (a smaller dataset, a
short SFT, an untrained retriever) so the test does not run the whole demo; the config and the
command are the README's. It used to die inside Ray with `rewards contain NaN` because the demo
config named no reward retriever.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def readme_train_command() -> str:
    """The `poserft train` line of the README's "After `make demo`" section."""
    section = re.search(r"## After `make demo`.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in section.splitlines() if ln.startswith("poserft train ")]
    assert len(lines) == 1, section
    return lines[0]


def test_readme_train_command_runs(tiny_data, tiny_sft, tmp_path):
    from poserft.reward_service.retriever import Retriever, RetrieverConfig

    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "tiny-cpu.yaml", tmp_path / "configs" / "tiny-cpu.yaml")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synth").symlink_to(tiny_data)
    (tmp_path / "runs" / "demo" / "sft").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "sft" / "policy").symlink_to(tiny_sft)
    Retriever(RetrieverConfig()).save(tmp_path / "runs" / "demo" / "retriever_reward")

    command = readme_train_command()
    args = shlex.split(command)
    assert args[:3] == ["poserft", "train", "--config"] and "rl.steps=2" in args
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "POSERFT_DEBUG")}
    run_dir = tmp_path / args[args.index("--run-dir") + 1]
    # --dry-run: the checks and the placement on a local Ray cluster, then nothing written.
    dry = subprocess.run(
        [sys.executable, "-m", "poserft", *args[1:], "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "learner: 1 x" in dry.stdout and "rollout worker: 2 x" in dry.stdout, dry.stdout
    assert not run_dir.exists()

    res = subprocess.run(
        [sys.executable, "-m", "poserft", *args[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert res.returncode == 0, f"{command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"

    steps = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert len(steps) == 2
    # The run folder explains itself: the resolved config (defaults filled in) and the command line.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["rl"]["steps"] == 2 and saved["rewards"]["retriever_dir"] == "runs/demo/retriever_reward"
    assert "clip_eps" in saved["rl"]  # a default the YAML file does not set
    assert (run_dir / "command.txt").read_text().splitlines()[0] == shlex.join(args)
    # Library output (vLLM, torch) goes to the run's log file, the terminal keeps the step lines.
    log = (run_dir / "logs" / "workers.log").read_text()
    assert "vllm" in log.lower() or "rollout" in log.lower()
    assert "step 2/2" in res.stdout
    assert "WARNING" not in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
