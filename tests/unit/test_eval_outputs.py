"""`poserft eval`'s outputs without a model: the example PNGs (legend, the input image for
image2pose, captions cut at a word), the table (named after the run, n per task)."""

import json

import numpy as np
from PIL import Image

from poserft.common.body import BodyModel
from poserft.data.render import LEFT_RGB, render_skeleton
from poserft.evaluate import _short, checkpoint_name, eval_table, example_sheet, write_eval_outputs


def _result(ckpt: str) -> dict:
    task = {"format_validity": 1.0}
    return {
        "ckpt": ckpt,
        "format_validity": 0.99,
        "image2pose": {**task, "mpjpe_mm": 150.0, "pa_mpjpe_mm": 90.0, "baseline_mean_pose_pa_mpjpe_mm": 120.0, "n": 7},
        "text2pose": {**task, "recall_at_10_t2p": 30.0, "mrecall": 20.0, "chance_recall_at_10": 10.0, "n": 8},
        "pose2text": {**task, "text_similarity": 0.5, "n": 9},
    }


def _poses(n: int, seed: int = 0) -> np.ndarray:
    aa = np.random.default_rng(seed).normal(0, 0.3, size=(n, 24, 3))
    return BodyModel().joints_from_axis_angle(aa)


def test_checkpoint_names_the_run_not_latest():
    assert checkpoint_name("runs/demo/hygrpo/checkpoints/latest") == "hygrpo"
    assert checkpoint_name("runs/demo/sft/policy") == "sft"
    assert checkpoint_name("some/ckpt") == "ckpt"


def test_table_shows_n_per_task_and_eval_md_is_named_after_the_run(tmp_path):
    table = eval_table({"hygrpo": _result("x"), "sft": _result("y")})
    assert "| rows evaluated (n): image2pose / text2pose / pose2text | 7 / 8 / 9 | 7 / 8 / 9 |" in table
    ckpt = str(tmp_path / "myrun" / "checkpoints" / "latest")
    pred = _poses(3)
    figures = {"image2pose": (pred, _poses(3, 1), ["a caption"] * 3, [render_skeleton(p, size=64) for p in pred])}
    write_eval_outputs(_result(ckpt), figures, tmp_path / "eval")
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert md.startswith("| metric | myrun |") and "latest" not in md.splitlines()[0]
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["ckpt"] == ckpt


def test_captions_are_cut_at_a_word():
    text = "The person raises the left arm above the head " * 10
    short = _short(text, 160)
    assert len(short) <= 160 and short.endswith(" ...")
    kept = short[: -len(" ...")].split()
    assert all(w in text.split() for w in kept)  # every kept word is whole
    assert _short("short caption") == "short caption"


def test_example_sheet_has_a_legend_and_the_input_images():
    pred, target = _poses(4), _poses(4, 1)
    images = [render_skeleton(t, size=64) for t in target]
    with_images = example_sheet("image2pose", pred, target, ["caption"] * 4, images, size=128)
    without = example_sheet("text2pose", pred, target, ["caption"] * 4, None, size=128)
    assert with_images.height == without.height + 128  # one row of input images above the poses
    assert with_images.width == without.width == 4 * 128
    legend = np.asarray(without.convert("RGB"))[:28]
    assert (np.abs(legend.astype(int) - np.array(LEFT_RGB)).sum(-1) < 60).any()  # the legend's "left" swatch
    top_row = np.asarray(with_images.convert("RGB"))[28 : 28 + 128, :128]
    assert top_row.any()  # the first input image is pasted there
    assert isinstance(with_images, Image.Image)
