"""`poserft report`: run folder -> report.md + PNGs, and the damaged / wrong-folder cases.

The synthetic run mirrors what `poserft/cluster/controller.py` writes (columns and types of the
rollout parquet copied from a real `runs/demo/hygrpo/rollouts/step_*.parquet`); the real demo
run is used too when it exists, on a copy.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from poserft.cli import main
from poserft.common.body import BodyModel
from poserft.data.render import render_skeleton
from poserft.report import ReportError, increments, moving_average, read_metrics, smooth_window, write_report

GROUP = 4
PROMPTS_PER_STEP = 4  # 2 text2pose + 2 image2pose groups

IDENTITY_6D = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] * 24


def _vec(n):
    return pa.list_(pa.float32(), n)


ROLLOUT_SCHEMA = pa.schema(
    [  # the columns of a real step parquet, same names and types
        ("task_id", pa.string()),
        ("group_id", pa.string()),
        ("sample_index", pa.int32()),
        ("policy_version", pa.int64()),
        ("worker_id", pa.string()),
        ("prompt_tokens", pa.list_(pa.int32())),
        ("response_tokens", pa.list_(pa.int32())),
        ("token_logprobs", pa.list_(pa.float32())),
        ("text", pa.string()),
        ("has_pose", pa.bool_()),
        ("mu", _vec(144)),
        ("log_std", _vec(144)),
        ("pose", _vec(144)),
        ("pose_logprob", pa.float32()),
        ("generation_seconds", pa.float32()),
        ("error", pa.string()),
        ("task", pa.string()),
        ("caption", pa.string()),
        ("reference_text", pa.string()),
        ("target_joints", pa.list_(pa.float64())),
        ("image", pa.binary()),
        ("target_pose", pa.list_(pa.float64())),
        ("reward_format", pa.float32()),
        ("reward_text_similarity", pa.float32()),
        ("reward_semantic", pa.float32()),
        ("reward_joint", pa.float32()),
        ("reward_total", pa.float32()),
        ("reward_error", pa.string()),
        ("advantage_discrete", pa.float32()),
        ("advantage_continuous", pa.float32()),
    ]
)


def _rollout_table(step: int, rng) -> pa.Table:
    body = BodyModel()
    rows = []
    for g in range(PROMPTS_PER_STEP):
        task = "text2pose" if g % 2 == 0 else "image2pose"
        aa = rng.normal(0, 0.3, size=(1, 24, 3))
        target = body.joints_from_axis_angle(aa)[0]
        image = render_skeleton(target, size=64) if task == "image2pose" else None
        task_id = f"train-{step:03d}{g:03d}-{task}"
        caption = f"The person in group {g} raises the left arm above the head and bends the right knee a little."
        for i in range(GROUP):
            has_pose = not (g == 1 and i == 0)  # one response without <POSE>: drawn as "no pose"
            pose = (np.array(IDENTITY_6D) + rng.normal(0, 0.1, 144)).tolist() if has_pose else None
            fmt = 1.0 if has_pose else 0.0
            sem = float(rng.uniform(-0.2, 0.3)) if task == "text2pose" else None
            joint = float(rng.uniform(0.1, 0.4)) if task == "image2pose" else None
            rows.append(
                {
                    "task_id": task_id,
                    "group_id": f"{task_id}@v{step - 1}",
                    "sample_index": i,
                    "policy_version": step - 1,
                    "worker_id": "rollout-0",
                    "prompt_tokens": [1, 7, 8, 9],
                    "response_tokens": [10, 11, 4, 2],
                    "token_logprobs": [-0.1, -0.2, -0.1, -0.05],
                    "text": "The SMPL pose of this person is <POSE>.",
                    "has_pose": has_pose,
                    "mu": pose,
                    "log_std": [-1.5] * 144 if has_pose else None,
                    "pose": pose,
                    "pose_logprob": 1.0 if has_pose else None,
                    "generation_seconds": 0.01,
                    "error": None,
                    "task": task,
                    "caption": caption,
                    "reference_text": "The SMPL pose of this person is <POSE>.",
                    "target_joints": target.reshape(-1).tolist(),
                    "image": image,
                    "target_pose": aa.reshape(-1).tolist(),
                    "reward_format": fmt,
                    "reward_text_similarity": 1.0,
                    "reward_semantic": sem,
                    "reward_joint": joint,
                    "reward_total": fmt + 0.25 + (sem if sem is not None else joint),
                    "reward_error": None,
                    "advantage_discrete": 0.0,
                    "advantage_continuous": 0.0,
                }
            )
    return pa.Table.from_pylist(rows, schema=ROLLOUT_SCHEMA)


def _metrics_line(step: int, rng, staleness=0, dropped=0, failures=0) -> dict:
    n = PROMPTS_PER_STEP * GROUP
    return {
        "step": step,
        "version": step,
        "time": 1_000_000.0 + 3.0 * step,
        "workers": 2,
        "samples": n * step,
        "tokens": 4 * n * step,
        "gen_s": 0.8,
        "reward_s": 0.05,
        "staleness": staleness,
        "queue_depth": staleness,
        "train_s": 2.0,
        "sync_s": 0.07 + 0.01 * rng.random(),
        "loss_token": 0.0,
        "clip_frac_token": 0.0,
        "ratio_token_mean": 1.0,
        "kl_token": 1e-4,
        "loss_pose": 0.3 - 0.01 * step,
        "clip_frac_pose": 0.5,
        "pose_valid_frac": 0.97,
        "pose_entropy": 6.0,
        "kl_pose": 40.0,
        "loss": 0.5,
        "grad_norm": 100.0,
        "reward_format": 0.97,
        "reward_text_similarity": 1.0,
        "reward_semantic": 0.02 * step,
        "reward_joint": 0.2 + 0.01 * step,
        "reward_total": 1.3 + 0.01 * step,
        "rows": n,
        "dropped_unscored_rows": 0,
        "on_policy": staleness == 0,
        "learner_seconds": 2.0,
        "dropped_stale_groups": dropped,
        "requeued_prompts": dropped,
        "worker_failures": failures,
    }


def make_run(root: Path, steps: int = 8, rollout_steps=(7, 8)) -> Path:
    """A run folder as `poserft train` leaves it (no checkpoint: the tokenizer is optional)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    lines = [
        _metrics_line(s, rng, staleness=s % 2, dropped=2 * (s // 5), failures=int(s >= 6)) for s in range(1, steps + 1)
    ]
    (root / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "ledger.jsonl").write_text(
        "".join(json.dumps({"step": s, "version": s, "task_ids": ["a", "b"]}) + "\n" for s in range(1, steps + 1))
    )
    (root / "rollouts").mkdir()
    for s in rollout_steps:
        pq.write_table(_rollout_table(s, rng), root / "rollouts" / f"step_{s:05d}.parquet", compression="zstd")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A run killed during step 9: its parquet is cut short and its metrics line half written."""
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    (run / "rollouts" / "step_00009.parquet").write_bytes(b"PAR1 cut short")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 9, "version": 9, "time": 1000027.0, "gen_')
    warnings = []
    md_path = write_report(run, warn=warnings.append)
    return run, md_path, warnings


def _images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_report_and_pngs_are_written(built):
    run, md_path, warnings = built
    assert md_path == run / "report.md"
    md = md_path.read_text()
    refs = _images(md)
    pngs = sorted(p.name for p in (run / "report").glob("*.png"))
    assert sorted(Path(r).name for r in refs) == pngs  # every PNG is embedded, every embed exists
    assert all(r.startswith("report/") for r in refs)
    for name in (
        "rewards.png",
        "throughput.png",
        "staleness.png",
        "sync.png",
        "stage_times.png",
        "examples_text2pose.png",
        "examples_image2pose.png",
    ):
        assert name in pngs
        with Image.open(run / "report" / name) as img:
            assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 300
    # one-line italic caption under each image
    for ref in refs:
        after = md.split(f"({ref})", 1)[1].lstrip("\n").splitlines()[0]
        assert after.startswith("*") and after.endswith("*")


def test_summary_numbers(built):
    md = built[1].read_text()
    n = PROMPTS_PER_STEP * GROUP
    assert "| steps | 8 (steps 1-8) |" in md
    assert "| final policy version | 8 |" in md
    assert f"| total samples (scored rollouts trained) | {8 * n} |" in md  # running total, not a sum of totals
    assert f"| total tokens (generated response tokens) | {8 * 4 * n} |" in md
    assert "| mean step time (wall) | 2.99 s" in md  # lines 3 s apart; the first step counts its stage sum (2.92 s)
    assert "| dropped stale groups (prompts re-queued) | 2 (2) |" in md
    assert "| rollout worker failures | 1 |" in md
    # rewards: first vs last steps, and per task from the parquets
    assert re.search(r"\| total \(weighted sum per task\) \| 1\.315 \| 1\.375 \| \+0\.060 \|", md)
    assert "| image2pose | joint |" in md and "| text2pose | semantic |" in md
    assert "| text2pose | joint |" not in md  # a component that does not apply to a task is not invented
    assert "Data sources" in md and "`ledger.jsonl`: 8 step(s), 16 prompt(s)" in md
    assert "rollouts/step_00008.parquet" in md  # examples come from the newest parquet


def test_a_killed_run_is_reported_from_its_intact_parts(built):
    run, md_path, warnings = built
    assert len(warnings) == 2
    assert "skipped the last line (9)" in warnings[0] and "incomplete JSON" in warnings[0]
    assert "unreadable rollout file(s): step_00009.parquet" in warnings[1]
    md = md_path.read_text()
    assert "| steps | 8 (steps 1-8) |" in md
    assert "## Warnings" in md and "incomplete JSON" in md
    assert "rollouts/step_00008.parquet" in md  # examples fall back to the newest readable parquet
    assert "3 `step_*.parquet` file(s), 2 read" in md


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["report", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'x'} is not a training run: metrics.jsonl is missing (expected from `poserft train`)" in err

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err

    with pytest.raises(ReportError, match="runs inside it: .*inner"):  # a parent of runs points at them
        make_run(tmp_path / "parent" / "inner", steps=1, rollout_steps=())
        write_report(tmp_path / "parent")


def test_cli_on_an_empty_metrics_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # killed before its first step
    assert main(["report", str(run)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {run / 'report.md'}" in captured.out
    assert "warning:" in captured.err and "no complete step" in captured.err and "no `rollouts/` folder" in captured.err
    md = (run / "report.md").read_text()
    assert "no complete step yet" in md
    assert "No example poses: the run has no `rollouts/` folder." in md
    assert _images(md) == [] and not list((run / "report").glob("*.png"))


def test_missing_rollouts_gives_plots_without_examples(tmp_path):
    run = make_run(tmp_path / "run", steps=3, rollout_steps=())
    shutil.rmtree(run / "rollouts")
    (run / "report").mkdir()
    (run / "report" / "examples_text2pose.png").write_bytes(b"from an earlier report")
    warnings = []
    md = write_report(run, warn=warnings.append).read_text()
    assert "No example poses: the run has no `rollouts/` folder." in md
    assert "report/rewards.png" in md and "report/throughput.png" in md
    assert not list((run / "report").glob("examples_*.png"))  # an old figure does not linger
    assert warnings == ["No example poses: the run has no `rollouts/` folder."]


def test_resumed_run_keeps_the_later_line_of_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 1, "reward_total": 1.0},
        {"step": 2, "reward_total": 2.0},
        {"step": 2, "reward_total": 5.0},
        "not json",
        {"no_step": 1},
        {"step": 3, "reward_total": 3.0},
    ]
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    warnings = []
    rows = read_metrics(path, warnings.append)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[1]["reward_total"] == 5.0
    assert any("line 4" in w and "not valid JSON" in w for w in warnings)
    assert any("line 5" in w and "no integer 'step'" in w for w in warnings)
    assert any("repeat an earlier step" in w for w in warnings)


def test_increments_and_smoothing():
    steps = np.array([1, 2, 3, 5])
    assert np.allclose(increments(np.array([64.0, 128, 192, 320]), steps), [64, 64, 64, np.nan], equal_nan=True)
    assert np.allclose(increments(np.array([5.0, 3, 4, 4]), steps), [5, 3, 4, 4])  # not a running total: as is
    assert smooth_window(3) == 0 and smooth_window(30) == 5 and smooth_window(1000) == 25
    y = np.array([1.0, np.nan, 3.0, 3.0, 3.0])
    assert np.allclose(moving_average(y, 3), [1.0, 2.0, 3.0, 3.0, 3.0])


def test_a_folder_of_runs_gets_one_report_linking_each(tmp_path, capsys):
    make_run(tmp_path / "demo" / "hygrpo", steps=6, rollout_steps=(6,))
    make_run(tmp_path / "demo" / "grpo", steps=6, rollout_steps=(6,))
    (tmp_path / "demo" / "summary.md").write_text("# poserft demo\n\n| metric | sft |\n|---|---|\n| x | 1 |\n")
    assert main(["report", str(tmp_path / "demo")]) == 0
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "| x | 1 |" in md and "(hygrpo/report.md)" in md and "(grpo/report.md)" in md
    for rel in _images(md):
        assert (tmp_path / "demo" / rel).is_file(), rel
    assert (tmp_path / "demo" / "report" / "compare_rewards.png").is_file()
    assert (tmp_path / "demo" / "hygrpo" / "report.md").is_file()


def test_learner_plot_shows_the_loss_terms_with_their_weights():
    """learner.png used to plot a rising "policy loss" whose token and pose parts were 0: it was all
    beta_c x kl_pose. The parts, KL terms included, now add up to the total."""
    from poserft.report.plots import loss_parts

    rows = [
        {"step": s, "loss_token": 0.0, "loss_pose": 0.0, "kl_token": 1e-4, "kl_pose": 8.0 + s, "loss": 0.05 * (8.0 + s)}
        for s in range(1, 6)
    ]
    parts = loss_parts(rows, {"rl": {"lambda_c": 1.0, "beta": 0.0, "beta_c": 0.05}})
    labels = [p[0] for p in parts]
    assert labels == ["token surrogate", "1 x pose surrogate (lambda_c)", "0.05 x pose KL (beta_c)"]
    total = np.array([r["loss"] for r in rows])
    assert np.allclose(sum(v for _, v, _ in parts), total)  # nothing of the loss is left unexplained
    # A run without config.yaml: the weights are unknown, the KL terms are the rest, and say so.
    parts = loss_parts(rows, {})
    assert "no config.yaml" in parts[-1][0] and np.allclose(parts[-1][1], total)


def test_mean_pose_reward_from_the_rollouts(tmp_path):
    """The joint reward of the head's mean pose, next to the sampled poses' reward, computed with the
    run's reward settings from config.yaml."""
    import torch
    import yaml

    from poserft.report.loading import read_task_rewards, rollout_files
    from poserft.reward_service.rewards import joint_reward

    run = make_run(tmp_path / "run", steps=3, rollout_steps=(2, 3))
    cfg = {"rewards": {"joint_tau_m": 0.2, "joint_align": "procrustes", "joint_root_share": 0.25}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rewards, read = read_task_rewards(rollout_files(run / "rollouts"), print, cfg)
    assert read == [2, 3] and "joint_mean_pose" not in rewards["text2pose"]
    steps, means = rewards["image2pose"]["joint_mean_pose"]
    table = pq.read_table(run / "rollouts" / "step_00003.parquet").to_pylist()
    sel = [r for r in table if r["task"] == "image2pose" and r["has_pose"]]
    mu = torch.tensor([r["mu"] for r in sel], dtype=torch.float64)
    target = torch.tensor([r["target_joints"] for r in sel], dtype=torch.float64).reshape(-1, 24, 3)
    expected = joint_reward(BodyModel(), mu, target, 0.2, "procrustes", 0.25).mean()
    assert steps.tolist() == [2, 3] and means[-1] == pytest.approx(float(expected), rel=1e-5)
    md = write_report(run, warn=lambda _: None).read_text()
    assert "| image2pose | joint of the mean pose |" in md
