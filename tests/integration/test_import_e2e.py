"""Integration: imported folders train end to end, through the `poserft` command.

PoseScript/AMASS, 3DPW and JSONL fixtures (the real on-disk layouts, tests/import_fixtures.py)
are imported with `poserft data import ...`; then a retriever trains for one epoch on the
PoseScript folder (plus its pose-only poses), SFT runs a few steps on the PoseScript + 3DPW
mixture, and `poserft train` runs 2 HyGRPO steps on that mixture with the new retriever as the
semantic reward. Sizes are tiny: the point is that nothing downstream needs to know the data
was imported.
"""

from __future__ import annotations

import json

import pytest

from poserft.cli import main
from poserft.common.config import RetrieverTrainConfig, SFTConfig
from poserft.data.dataset import load_card, load_split
from tests.import_fixtures import write_3dpw, write_posescript


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    fx = write_posescript(root / "src", n_poses=60, frames_per_seq=20)
    write_3dpw(root / "pw_src", frames=6, people=2, size=(96, 128))
    (root / "mine.jsonl").write_text(
        json.dumps({"id": "a", "task": "text2pose", "caption": "arms up", "smpl_pose": [0.0] * 72, "split": "train"})
        + "\n"
    )
    ps_args = ["--posescript", str(fx["posescript"]), "--amass", str(fx["amass"]), "--captions", "human"]
    assert main(["data", "import", "posescript", *ps_args, "--out", str(root / "ps"), "--quiet"]) == 0
    assert main(["data", "import", "3dpw", "--root", str(root / "pw_src"), "--out", str(root / "pw"), "--quiet"]) == 0
    assert (
        main(["data", "import", "jsonl", "--file", str(root / "mine.jsonl"), "--out", str(root / "mine"), "--quiet"])
        == 0
    )
    return root


def test_cli_imports_write_the_contract(imported, capsys):
    for name, tasks in (("ps", ["text2pose", "pose2text"]), ("pw", ["image2pose"]), ("mine", ["text2pose"])):
        card = load_card(imported / name)
        assert card["tasks"] == tasks and card["licence"]
        assert load_split(imported / name, "train").num_rows == card["splits"]["train"]["rows"] > 0
    assert (
        main(["data", "import", "jsonl", "--file", str(imported / "missing.jsonl"), "--out", str(imported / "x")]) == 2
    )
    assert capsys.readouterr().err.strip() == f"poserft: error: --file {imported / 'missing.jsonl'} is missing"


def test_retriever_sft_and_rl_on_imported_folders(imported, ray_local, tmp_path):
    from poserft.learner.sft import run_sft
    from poserft.model.checkpoint import init_policy, save_policy
    from poserft.reward_service.retriever_train import train_retriever

    ps, pw = str(imported / "ps"), str(imported / "pw")
    sources = [{"dir": ps, "weight": 1.0, "pose_only": True}, {"dir": pw, "weight": 1.0}]
    res = train_retriever(
        sources,
        tmp_path / "retriever",
        RetrieverTrainConfig(epochs=1, batch_size=16, caption_variants=2),
        progress=False,
    )
    assert len(res["history"]) == 1 and (tmp_path / "retriever").is_dir()

    save_policy(init_policy("tiny", ps, seed=0), tmp_path / "init")
    settings = SFTConfig(align_steps=2, steps=4, batch_size=4, val_every=4, ckpt_every=4, warmup_steps=1, val_rows=8)
    sft = run_sft(tmp_path / "init", sources, tmp_path / "sft", settings, progress=False)
    assert sft["step"] == 6

    source_yaml = f"[{{dir: {ps}}}, {{dir: {pw}, weight: 2}}]"
    run_dir = tmp_path / "run"
    sets = [
        f"data.sources={source_yaml}",
        f"rewards.retriever_dir={tmp_path / 'retriever'}",
        "rl.steps=2",
        "rl.prompts_per_step=4",
        "rl.group_size=2",
        "rl.tasks=[text2pose, image2pose]",
        "rl.sampling.max_tokens=16",
        "rl.rollout.engine=hf",
        "rl.rollout.num_workers=1",
        "rl.rollout.num_cpus=0.5",
        "rl.learner.num_cpus=0.5",
        "rl.reward.num_cpus=0.25",
        "rewards.num_workers=1",
    ]
    code = main(
        [
            "train",
            "--init",
            str(sft["policy"]),
            "--run-dir",
            str(run_dir),
            "--quiet",
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    assert code == 0
    ledger = [json.loads(ln) for ln in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ledger] == [1, 2]
    ids = [t for e in ledger for t in e["task_ids"]]
    assert all(t.startswith(("ps:posescript-", "pw:3dpw-")) for t in ids), ids  # mixture ids, traceable to their folder
