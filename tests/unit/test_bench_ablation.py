"""benchmarks/bench_ablation.py: the statistics (against hand-computed values), the metric keys
read from a demo summary.json, and the config check that decides whether a finished run can
stand for a seed."""

import json
import math

import pytest

from benchmarks.bench_ablation import (
    METRICS,
    T975,
    aggregate,
    blind_top1,
    config_mismatches,
    describe,
    extract_metrics,
    format_tables,
    paired_difference,
    recorded_seed,
    reuse_problem,
    seed_overrides,
    sft_reuse_problem,
    t975,
)


def _eval(pa, mpjpe, r10, mrecall, sim, top1):
    """One checkpoint's eval result with the layout of runs/demo/summary.json (extra keys kept)."""
    return {
        "ckpt": "runs/demo/sft/policy",
        "split": "test",
        "tasks": ["image2pose", "text2pose", "pose2text"],
        "image2pose": {
            "mpjpe_mm": mpjpe,
            "pa_mpjpe_mm": pa,
            "valid_pose_fraction": 1.0,
            "baseline_mean_pose_mpjpe_mm": 646.2,
            "baseline_mean_pose_pa_mpjpe_mm": 171.8,
            "n": 500,
            "format_validity": 1.0,
        },
        "text2pose": {
            "recall_at_1_t2p": 4.8,
            "recall_at_10_t2p": r10,
            "recall_at_10_p2t": 17.8,
            "mrecall": mrecall,
            "n": 500,
            "chance_recall_at_10": 2.0,
            "format_validity": 1.0,
        },
        "pose2text": {
            "text_similarity": sim,
            "text_similarity_other_reference": 0.82,
            "recall_at_10_p2t": 80.0 + top1,
            "mrecall": 55.0,
            "n": 500,
            "examples": [],
            "format_validity": 1.0,
        },
        "format_validity": 1.0,
        "descriptions": {"top1": top1, "top3": 9.0, "chance_top1": 2.13, "pa_mpjpe_mm": 197.3, "n": 166},
    }


SUMMARY = {
    "config": {"seed": 0, "run_dir": "runs/demo", "model": {"init_seed": 0}, "sft": {"seed": 0}, "rl": {"seed": 0}},
    "timings_s": {"sft": 610.4},
    "retrievers": {"evaluator": {"recall_at_10_t2p": 76.1, "mrecall": 51.4}},  # not the policy's numbers
    "sft": _eval(150.83, 235.89, 28.2, 13.3, 0.8433, 3.61),
    "hygrpo": _eval(148.01, 235.28, 31.4, 14.9, 0.8436, 4.22),
    "grpo": _eval(151.23, 238.52, 23.0, 11.43, 0.8437, 3.61),
}


def test_t_quantiles():
    assert t975(2) == pytest.approx(4.303, abs=1e-3)
    assert t975(2, use_scipy=False) == 4.303
    assert t975(1, use_scipy=False) == 12.706
    assert t975(10, use_scipy=False) == 2.228
    assert t975(100, use_scipy=False) == T975[-1]  # df > 30: the df-30 value
    for df in range(1, 31):  # the fallback table agrees with scipy
        assert t975(df, use_scipy=False) == pytest.approx(t975(df), abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_describe_hand_computed():
    st = describe([1.0, 2.0, 3.0], use_scipy=False)
    assert st["n"] == 3 and st["mean"] == 2.0 and st["std"] == 1.0
    assert st["ci95"] == pytest.approx(4.303 / math.sqrt(3))  # 2.484
    assert st["ci95"] == pytest.approx(2.484, abs=1e-3)
    assert (st["lo"], st["hi"]) == pytest.approx((2 - 2.484, 2 + 2.484), abs=1e-3)
    # n = 4: mean 5, std sqrt(((3-5)^2 + (4-5)^2 + (6-5)^2 + (7-5)^2) / 3) = sqrt(10/3)
    st = describe([3, 4, 6, 7])
    assert st["mean"] == 5 and st["std"] == pytest.approx(math.sqrt(10 / 3))
    assert st["ci95"] == pytest.approx(3.182 * math.sqrt(10 / 3) / 2, abs=1e-3)


def test_describe_small_samples():
    assert describe([]) == {"n": 0, "mean": None, "std": None, "ci95": None, "lo": None, "hi": None}
    st = describe([7.5, None, float("nan")])  # a missing value is left out, not counted
    assert st["n"] == 1 and st["mean"] == 7.5 and st["std"] is None and st["ci95"] is None


def test_paired_difference_hand_computed():
    base = {0: 10.0, 1: 12.0, 2: 14.0}
    other = {0: 11.0, 1: 14.0, 2: 17.0}  # differences 1, 2, 3
    p = paired_difference(base, other, better="higher", use_scipy=False)
    assert p["seeds"] == [0, 1, 2] and p["diffs"] == [1.0, 2.0, 3.0]
    assert p["mean"] == 2.0 and p["std"] == 1.0 and p["ci95"] == pytest.approx(2.484, abs=1e-3)
    assert p["rel_change_pct"] == pytest.approx(100 * 2 / 12)
    assert p["excludes_zero"] is False and p["verdict"] == "n.s."  # -0.48 .. 4.48


def test_paired_difference_direction_and_missing_seeds():
    base = {0: 100.0, 1: 110.0, 2: 120.0, 3: 130.0}
    other = {0: 90.0, 1: 99.0, 2: 111.0, 3: None}  # seed 3 failed: left out of the pairs
    p = paired_difference(base, other, better="lower", use_scipy=False)
    assert p["seeds"] == [0, 1, 2] and p["diffs"] == [-10.0, -11.0, -9.0]
    assert p["mean"] == -10.0 and p["std"] == 1.0 and p["ci95"] == pytest.approx(2.484, abs=1e-3)
    assert p["excludes_zero"] is True and p["verdict"] == "better"  # lower MPJPE is better
    assert p["rel_change_pct"] == pytest.approx(-100 * 10 / 110)
    assert paired_difference(base, other, better="higher", use_scipy=False)["verdict"] == "worse"
    one = paired_difference({0: 1.0}, {0: 2.0, 1: 3.0})
    assert one["n"] == 1 and one["mean"] == 1.0 and one["verdict"] == "n<2" and one["excludes_zero"] is None


def test_extract_metrics_reads_the_eval_keys():
    got = extract_metrics(SUMMARY)
    assert set(got) == {"sft", "hygrpo", "grpo"}
    assert got["sft"] == {
        "image2pose_pa_mpjpe_mm": 150.83,
        "image2pose_mpjpe_mm": 235.89,
        "text2pose_r10": 28.2,
        "text2pose_mrecall": 13.3,
        "pose2text_similarity": 0.8433,
        "pose2text_r10": 83.61,
        "dev_top1": 3.61,
        "dev_top3": 9.0,
        "blind_top1": None,  # not in summary.json: bench_ablation's --blind evaluates it
    }
    assert got["hygrpo"]["dev_top1"] == 4.22 and got["grpo"]["text2pose_mrecall"] == 11.43
    assert {m.key: m.better for m in METRICS} == {
        "image2pose_pa_mpjpe_mm": "lower",
        "image2pose_mpjpe_mm": "lower",
        "text2pose_r10": "higher",
        "text2pose_mrecall": "higher",
        "pose2text_similarity": "higher",
        "pose2text_r10": "higher",
        "dev_top1": "higher",
        "dev_top3": "higher",
        "blind_top1": "higher",
    }


def test_extract_metrics_missing_parts_are_none():
    partial = {"sft": {"image2pose": {"pa_mpjpe_mm": 1.0}}, "hygrpo": {"descriptions": None}}
    got = extract_metrics(partial)
    assert got["sft"]["image2pose_pa_mpjpe_mm"] == 1.0 and got["sft"]["dev_top1"] is None
    assert all(v is None for v in got["hygrpo"].values()) and all(v is None for v in got["grpo"].values())


def test_aggregate_and_tables():
    shifted = {
        m: {k: None if v is None else v + (1.0 if k != "pose2text_similarity" else 0.001) for k, v in row.items()}
        for m, row in extract_metrics(SUMMARY).items()
    }
    per_seed = {"0": extract_metrics(SUMMARY), "1": shifted, "2": None}  # seed 2 failed
    agg = aggregate(per_seed, use_scipy=False)
    st = agg["stats"]["sft"]["image2pose_pa_mpjpe_mm"]
    assert st["n"] == 2 and st["mean"] == pytest.approx(151.33) and st["std"] == pytest.approx(math.sqrt(0.5))
    assert st["ci95"] == pytest.approx(12.706 * math.sqrt(0.5) / math.sqrt(2))
    d = agg["paired"]["hygrpo-sft"]["image2pose_pa_mpjpe_mm"]
    assert d["diffs"] == pytest.approx([148.01 - 150.83] * 2) and d["std"] == pytest.approx(0, abs=1e-9)
    assert d["verdict"] == "better"  # a constant 2.82 mm drop: the interval has width 0
    assert set(agg["paired"]) == {"hygrpo-sft", "grpo-sft"}
    info = {"values": per_seed["0"], "error": None, "reused": True}
    text = format_tables({**agg, "per_seed": {"0": info, "1": {**info, "values": shifted}, "2": failed_seed()}})
    assert "| sft | 2 | 151.3 ± 6.4 |" in text
    assert "| hygrpo - sft | 2 | -2.8 ± 0.0 (-1.9 %) better |" in text
    assert "PA-MPJPE (mm) ↓" in text and "mRecall (%) ↑" in text
    assert "| 2 | failed: RuntimeError: boom |" in text


def failed_seed():
    return {"values": None, "error": "RuntimeError: boom", "reused": False}


def test_seed_overrides_and_recorded_seed():
    assert seed_overrides(2) == ["model.init_seed=2", "sft.seed=2", "rl.seed=2"]
    assert recorded_seed(SUMMARY["config"]) == 0
    assert recorded_seed({"model": {"init_seed": 1}, "sft": {"seed": 1}, "rl": {"seed": 0}}) is None


def test_config_mismatches():
    old = {"run_dir": "runs/demo", "data": {"dir": "data/synth", "seed": 0}, "sft": {"steps": 1150, "seed": 0}}
    new = {"run_dir": "runs/x", "data": {"dir": "elsewhere", "seed": 0}, "sft": {"steps": 1150, "seed": 0}}
    assert config_mismatches(old, new) == []  # only the run's own folders differ
    new["sft"]["seed"] = 1
    assert config_mismatches(old, new) == ["sft.seed: 0 in the run, 1 here"]
    # a field added after the run counts only when it is not at its default
    newer = {**old, "rl": {"weight_sync": "file"}}
    assert config_mismatches(old, newer, defaults={"rl": {"weight_sync": "file"}}) == []
    assert config_mismatches(old, newer, defaults={"rl": {"weight_sync": "ray"}}) == [
        "rl.weight_sync: not in the run, 'file' here"
    ]
    assert config_mismatches(old, newer) == ["rl.weight_sync: not in the run, 'file' here"]
    assert config_mismatches({**old, "gone": 1}, old) == ["gone: 1 in the run, gone here"]


def test_blind_top1_reads_kept_evals_of_that_file_only(tmp_path):
    """A kept SEED/eval_blind/METHOD/eval.json counts only when it was written for the same file;
    without `run` nothing is evaluated, and a missing one is None."""
    blind = tmp_path / "blind.jsonl"
    blind.write_text("{}\n")
    other = tmp_path / "other.jsonl"
    for method, file, top1 in (("sft", blind, 43.6), ("hygrpo", other, 40.4)):
        folder = tmp_path / "seed2" / "eval_blind" / method
        folder.mkdir(parents=True)
        (folder / "eval.json").write_text(json.dumps({"descriptions": {"file": str(file), "top1": top1}}))
    got = blind_top1(tmp_path / "seed2", blind, tmp_path / "data", run=False)
    assert got == {"sft": 43.6, "hygrpo": None, "grpo": None}


def test_a_demo_run_without_the_blind_column_can_stand_for_its_seed(tmp_path):
    """`make demo`'s summary.json has no blind-set top-1 (bench_ablation adds it), so its absence
    must not stop the reuse; a missing eval result still does."""
    summary = {**SUMMARY, "data": {"dir": str(tmp_path)}}
    assert reuse_problem(summary, SUMMARY["config"], {}, tmp_path) is None
    broken = {**summary, "hygrpo": {**SUMMARY["hygrpo"], "descriptions": None}}
    assert "lacks some eval results" in reuse_problem(broken, SUMMARY["config"], {}, tmp_path)


def test_sft_from_reuses_an_sft_only_when_its_inputs_match(tmp_path):
    """--sft-from: an earlier seed's init and SFT stand for a seed whose rl, rewards or eval differ,
    never for one whose seed, data, model or sft settings, or data folder, differ."""
    src = tmp_path / "old" / "seed0"
    for d in ("init", "sft/policy"):
        (src / d).mkdir(parents=True)
        (src / d / "poserft.json").write_text("{}")
    config = {**SUMMARY["config"], "data": {"dir": "data/synth", "seed": 0}, "rl": {"seed": 0, "steps": 40}}
    (src / "summary.json").write_text(json.dumps({"config": config, "data": {"dir": str(tmp_path)}}))
    rl_only = {**config, "rl": {"seed": 0, "steps": 40, "anchor": {"weight": 1.0}}, "eval": {"limit": 9}}
    assert sft_reuse_problem(src, rl_only, {}, tmp_path) is None
    other_sft = {**config, "sft": {"seed": 1}}
    assert sft_reuse_problem(src, other_sft, {}, tmp_path) == "its SFT's config differs: sft.seed: 0 in the run, 1 here"
    assert "init_seed" in sft_reuse_problem(src, {**config, "model": {"init_seed": 2}}, {}, tmp_path)
    assert "not " + str(tmp_path / "x") in sft_reuse_problem(src, config, {}, tmp_path / "x")
    assert "does not exist" in sft_reuse_problem(tmp_path / "old" / "seed1", config, {}, tmp_path)
    (src / "sft" / "policy" / "poserft.json").unlink()
    assert "lacks init/ or sft/policy/" in sft_reuse_problem(src, config, {}, tmp_path)
