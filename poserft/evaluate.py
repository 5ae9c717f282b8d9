"""`poserft eval`: a checkpoint on the test split (greedy text, mean pose), with baselines.

Metrics:
- format_validity: share of all test responses that match their task's template (also per task);
- image2pose: MPJPE and PA-MPJPE (mm) of FK(mu); a response without `<POSE>` counts with the
  mean training pose (so an invalid answer is never free); valid share reported;
- text2pose: retrieval with the *evaluator* retriever between each caption and the pose
  generated from it: Recall@1/5/10 both ways and mRecall (over the full test split);
- pose2text: MiniLM cosine between generated and reference captions, beside the same cosine against
  another row's reference (how much of it any caption of the captioner's style gets), and retrieval
  with the evaluator retriever between each input pose and the text generated for it (P2T R@10,
  mRecall): a description that names the right pose ranks its pose high.
Baselines on the same split: the mean training pose (MPJPE / PA-MPJPE) and chance recall.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from poserft.common.body import BodyModel
from poserft.common.config import EVAL_MAX_NEW_TOKENS
from poserft.common.metrics import mpjpe, pa_mpjpe, retrieval_recalls
from poserft.common.rotations import axis_angle_to_rot6d
from poserft.data.dataset import load_split
from poserft.model.checkpoint import load_policy
from poserft.model.generation import generate, pose_from_response
from poserft.model.policy import PosePolicy
from poserft.reward_service.rewards import TextEmbedder, format_reward, text_similarity


def mean_training_pose(data_dir) -> torch.Tensor:
    """The mean training pose as (1, 144) 6D (mean of rotation-matrix columns, FK re-orthonormalises),
    over the image2pose training rows, or every training row when the data set has none (an
    imported text-only set such as PoseScript)."""
    train = load_split(data_dir, "train")
    image = train.filter(pa.compute.equal(train["task"], "image2pose"))
    table = image if image.num_rows else train
    aa = torch.from_numpy(
        np.array(table["target_pose"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 24, 3)
    )
    return axis_angle_to_rot6d(aa).mean(0).reshape(1, 144)


def _task_outputs(policy: PosePolicy, table, max_new_tokens: int) -> dict:
    prompts = [policy.encode_prompt(p) for p in table["prompt"].to_pylist()]
    images = table["image"].to_pylist()
    tasks = table["task"].to_pylist()
    pose_in = [
        np.asarray(p, dtype=np.float32) if t == "pose2text" else None
        for p, t in zip(table["target_pose"].to_pylist(), tasks)
    ]
    images = [im if t == "image2pose" else None for im, t in zip(images, tasks)]
    gen = generate(policy, prompts, images, pose_in, max_new_tokens=max_new_tokens)
    mu, log_std, has = pose_from_response(policy, prompts, gen.token_ids, images, pose_in)
    return {"texts": gen.texts, "mu": mu, "has_pose": has, "tasks": tasks}


def evaluate_policy(
    ckpt,
    data_dir,
    evaluator_dir,
    out_dir=None,
    limit: int | None = None,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    split: str = "test",
    examples: int = 6,
    descriptions: str | Path | None = None,
) -> dict:
    from poserft.reward_service.retriever import Retriever

    policy = load_policy(ckpt)
    evaluator = Retriever.load(evaluator_dir)
    body = BodyModel()
    embedder = TextEmbedder()
    mean6d = mean_training_pose(data_dir).float()
    res: dict = {"ckpt": str(ckpt), "split": split}
    texts_all, tasks_all = [], []
    figures = {}
    whole = load_split(data_dir, split)
    present = set(whole["task"].to_pylist())  # an imported set may hold only some tasks
    if not present:
        raise ValueError(f"the {split} split of {data_dir} has no rows to evaluate")
    res["tasks"] = [t for t in ("image2pose", "text2pose", "pose2text") if t in present]
    for task in res["tasks"]:
        table = whole.filter(pa.compute.equal(whole["task"], task))
        if limit:
            table = table.slice(0, limit)
        out = _task_outputs(policy, table, max_new_tokens)
        texts_all += out["texts"]
        tasks_all += out["tasks"]
        has = out["has_pose"]
        pose6d = torch.where(has[:, None], out["mu"], mean6d.expand_as(out["mu"]))
        target_j = torch.from_numpy(
            np.array(table["target_joints"].combine_chunks().flatten(), dtype=np.float64).reshape(-1, 24, 3)
        )
        if task == "image2pose":
            with torch.no_grad():
                pred_j = body.forward_kinematics(pose6d.double())
                base_j = body.forward_kinematics(mean6d.double()).expand_as(target_j)
            res["image2pose"] = {
                "mpjpe_mm": float(mpjpe(pred_j, target_j).mean()),
                "pa_mpjpe_mm": float(pa_mpjpe(pred_j, target_j).mean()),
                "valid_pose_fraction": float(has.float().mean()),
                "baseline_mean_pose_mpjpe_mm": float(mpjpe(base_j, target_j).mean()),
                "baseline_mean_pose_pa_mpjpe_mm": float(pa_mpjpe(base_j, target_j).mean()),
                "n": table.num_rows,
            }
            figures["image2pose"] = (
                pred_j[:examples].numpy(),
                target_j[:examples].numpy(),
                table["caption"].to_pylist()[:examples],
                table["image"].to_pylist()[:examples],  # the input the policy saw, shown above its pose
            )
        elif task == "text2pose":
            captions = table["caption"].to_pylist()
            rec = retrieval_recalls(evaluator.embed_text(captions), evaluator.embed_pose(pose6d), ks=(1, 5, 10))
            n = table.num_rows
            res["text2pose"] = {
                **rec,
                "valid_pose_fraction": float(has.float().mean()),
                "n": n,
                **{f"chance_recall_at_{k}": 100.0 * min(k, n) / n for k in (1, 5, 10)},
            }
            with torch.no_grad():
                figures["text2pose"] = (
                    body.forward_kinematics(pose6d[:examples].double()).numpy(),
                    target_j[:examples].numpy(),
                    captions[:examples],
                    None,
                )
        else:
            refs = table["reference_text"].to_pylist()
            sim = text_similarity(embedder, out["texts"], refs)
            other = text_similarity(embedder, out["texts"], refs[1:] + refs[:1]) if len(refs) > 1 else sim
            with torch.no_grad():
                src6d = axis_angle_to_rot6d(
                    torch.from_numpy(
                        np.array(table["target_pose"].combine_chunks().flatten(), dtype=np.float32).reshape(-1, 24, 3)
                    )
                ).reshape(-1, 144)
                rec = retrieval_recalls(evaluator.embed_text(out["texts"]), evaluator.embed_pose(src6d), ks=(1, 5, 10))
            res["pose2text"] = {
                "text_similarity": float(sim.mean()),
                "text_similarity_other_reference": float(other.mean()),
                "recall_at_10_p2t": rec["recall_at_10_p2t"],
                "mrecall": rec["mrecall"],
                "n": table.num_rows,
                "examples": [{"generated": g, "reference": r} for g, r in zip(out["texts"][:3], refs[:3])],
            }
        res[task]["format_validity"] = float(format_reward(out["texts"], out["tasks"]).mean())
    res["format_validity"] = float(format_reward(texts_all, tasks_all).mean())
    if descriptions is not None:  # human-written descriptions (poserft.describe_eval)
        from poserft.describe_eval import evaluate_descriptions

        res["descriptions"] = evaluate_descriptions(policy, descriptions, max_new_tokens, body)
    if out_dir is not None:
        write_eval_outputs(res, figures, Path(out_dir))
    return res


def eval_table(results: dict[str, dict]) -> str:
    """Markdown table, one column per evaluated checkpoint (name -> eval result)."""
    rows = [
        ("format validity (%)", lambda r: 100 * r["format_validity"]),
        *(
            (f"  {t}", lambda r, t=t: 100 * r[t].get("format_validity", float("nan")))
            for t in ("image2pose", "text2pose", "pose2text")
        ),
        ("image2pose MPJPE (mm)", lambda r: r["image2pose"]["mpjpe_mm"]),
        ("image2pose PA-MPJPE (mm)", lambda r: r["image2pose"]["pa_mpjpe_mm"]),
        ("  mean-pose baseline PA-MPJPE", lambda r: r["image2pose"]["baseline_mean_pose_pa_mpjpe_mm"]),
        ("text2pose R@10 t2p (%)", lambda r: r["text2pose"]["recall_at_10_t2p"]),
        ("text2pose mRecall (%)", lambda r: r["text2pose"]["mrecall"]),
        ("  chance R@10", lambda r: r["text2pose"]["chance_recall_at_10"]),
        ("pose2text text similarity", lambda r: r["pose2text"]["text_similarity"]),
        ("  same, against another row's reference", lambda r: r["pose2text"]["text_similarity_other_reference"]),
        ("pose2text R@10 p2t (%)", lambda r: r["pose2text"]["recall_at_10_p2t"]),
        ("pose2text mRecall (%)", lambda r: r["pose2text"]["mrecall"]),
    ]
    if all("descriptions" in r for r in results.values()):
        from poserft.describe_eval import table_rows

        rows += table_rows()
    rows.append(("rows evaluated (n): image2pose / text2pose / pose2text", _rows_per_task))
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, get in rows:
        cells = [_cell(get, results[n]) for n in names]
        lines.append(f"| {label} | " + " | ".join(c if isinstance(c, str) else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def _cell(get, result: dict):
    """A table cell; `-` for a task the evaluated split does not hold."""
    try:
        return get(result)
    except KeyError:
        return "-"


def _rows_per_task(r: dict) -> str:
    return " / ".join(str(r.get(t, {}).get("n", "-")) for t in ("image2pose", "text2pose", "pose2text"))


def checkpoint_name(ckpt) -> str:
    """A table column for a checkpoint: RUN/checkpoints/latest is named after the run, SFT_DIR/policy
    after SFT_DIR; never `latest` or `policy`."""
    ckpt = Path(ckpt).resolve()
    if ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent.name
    return ckpt.parent.name if ckpt.name == "policy" else ckpt.name


def _short(text: str, chars: int = 160) -> str:
    """At most `chars` characters, cut at a word boundary (never mid-word)."""
    import textwrap

    return textwrap.shorten(" ".join(str(text).split()), chars, placeholder=" ...")


def example_sheet(task: str, pred, target, captions, images=None, size: int = 256):
    """Predictions (bright, coloured by side) over their targets (dim grey), a legend on top, the
    caption under each panel, and for image2pose the input image above its pose."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    from poserft.data.render import BACKGROUND_RGB, CENTRE_RGB, LEFT_RGB, OVERLAY_RGB, RIGHT_RGB, render_grid

    grid = render_grid(list(pred), captions=[_short(c) for c in captions], size=size, overlay=list(target))
    cols = min(len(pred), 8)
    inputs = [Image.open(io.BytesIO(b)).convert("RGB").resize((size, size)) for b in images or [] if b]
    legend_h = 28
    sheet = Image.new("RGB", (grid.width, legend_h + (size if inputs else 0) + grid.height), BACKGROUND_RGB)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    x = 8
    for text, colour in (
        ("prediction (bright):", (230, 230, 230)),
        ("left", LEFT_RGB),
        ("right", RIGHT_RGB),
        ("centre", CENTRE_RGB),
        ("   target (dim grey, behind)", OVERLAY_RGB),
        (f"   {task}" + (": input image above its pose" if inputs else ": caption below"), (230, 230, 230)),
    ):
        draw.text((x, 6), text, fill=colour, font=font)
        x += int(draw.textlength(text + " ", font=font))
    for k, img in enumerate(inputs[:cols]):
        sheet.paste(img, (k * size, legend_h))
    sheet.paste(grid, (0, legend_h + (size if inputs else 0)))
    return sheet


def write_eval_outputs(res: dict, figures: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
    (out_dir / "eval.md").write_text(eval_table({checkpoint_name(res["ckpt"]): res}) + "\n")
    for task, (pred, target, captions, images) in figures.items():
        example_sheet(task, pred, target, captions, images).save(out_dir / f"{task}_examples.png")
