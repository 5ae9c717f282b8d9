"""Example poses for the report: a few rollouts per task drawn over their targets, with the prompt
(decoded with the checkpoint's tokenizer), the response and its rewards in the caption."""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path

import numpy as np

from poserft.report.loading import CAPTION_CHARS, EXAMPLE_TASKS, EXAMPLES_PER_TASK, REWARDS
from poserft.report.plots import _figure, _save

# ----------------------------------------------------------------------------- example poses


def _prompt_decoder(run_dir: Path):
    """A function prompt_tokens -> readable prompt, from the checkpoint's tokenizer (None if unavailable)."""
    tok_path = run_dir / "checkpoints" / "latest" / "tokenizer.json"
    if not tok_path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_path))
    except Exception:  # noqa: BLE001 - an unreadable tokenizer only costs the decoded prompt
        return None

    def decode(ids) -> str:
        s = tok.decode(list(ids), skip_special_tokens=False)
        s = re.sub(r"(?:<image>\s*)+", "<image> ", s)
        s = s.replace("<s>", "").replace("</s>", "").replace("<pad>", "").strip()
        s = re.sub(r"^USER:\s*", "", s)
        s = re.sub(r"\s*ASSISTANT:\s*$", "", s)
        return " ".join(s.split())

    return decode


def pick_examples(table, per_task: int = EXAMPLES_PER_TASK) -> dict:
    """{task: [row, ...]}: sample 0 (else the first row) of the first `per_task` groups of each task."""
    rows = table.to_pylist()
    out: dict = {}
    for task in EXAMPLE_TASKS:
        groups: dict = {}
        for r in rows:
            if r.get("task") == task:
                groups.setdefault(r.get("group_id") or r.get("task_id") or id(r), []).append(r)
        chosen = []
        for members in groups.values():
            zero = [m for m in members if m.get("sample_index") == 0]
            responses = {m.get("sample_index") for m in members}  # rows per response: one per pose sample
            chosen.append(
                (zero or members)[0]
                | {"_group_size": len(responses), "_pose_samples": len(members) // max(1, len(responses))}
            )
            if len(chosen) == per_task:
                break
        if chosen:
            out[task] = chosen
    return out


def _joints_from_6d(body, pose) -> np.ndarray | None:
    import torch

    if pose is None:
        return None
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape != (144,) or not np.isfinite(arr).all():
        return None
    with torch.no_grad():
        return body.forward_kinematics(torch.from_numpy(arr).reshape(1, 144))[0].numpy()


def _fmt(v, digits=2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    """Wrapped lines, cut to `max_lines` with an ellipsis on the last one."""
    lines = textwrap.wrap(" ".join(text.split()), width)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 4].rstrip() + " ..."
    return lines


def _caption(r: dict, prompt: str, prompt_label: str, mpjpe_mm: float | None) -> str:
    head = f"{r.get('task')} | {r.get('task_id', '?')} | sample {r.get('sample_index', '?')} of {r['_group_size']}"
    if r.get("_pose_samples", 1) > 1:
        head += f" (pose {r.get('pose_sample_index') or 0} of {r['_pose_samples']})"
    if r.get("policy_version") is not None:
        head += f" | policy v{r['policy_version']}"
    lines = [head, ""] + _wrap(f"{prompt_label}: {prompt}", CAPTION_CHARS, 7)
    if prompt_label == "Prompt" and r.get("task") != "text2pose" and r.get("caption"):
        lines += [""] + _wrap(f"Target caption (not shown to the model): {r['caption']}", CAPTION_CHARS, 4)
    resp = str(r.get("text") or "").strip() or "(empty)"
    lines += [""] + _wrap(f"Response: {resp}", CAPTION_CHARS, 2)
    rewards = [
        f"{name} {_fmt(r.get(f'reward_{key}'))}" for key, name, _ in REWARDS if r.get(f"reward_{key}") is not None
    ]
    lines += ["", "Rewards: " + (", ".join(rewards) if rewards else "none (not scored)")]
    if r.get("reward_error"):
        lines.append(f"Reward error: {str(r['reward_error'])[:70]}")
    if mpjpe_mm is not None:
        lines.append(f"Mean joint error of the sampled pose: {mpjpe_mm:.0f} mm")
    return "\n".join(lines)


def _prompt_text(r: dict, decode) -> tuple[str, str]:
    """(text, label): the decoded prompt, else the caption the row carries."""
    if decode is not None and r.get("prompt_tokens") is not None:
        try:
            return decode(r["prompt_tokens"]), "Prompt"
        except Exception:  # noqa: BLE001 - ids the tokenizer does not know: fall back to the caption
            pass
    if r.get("caption"):
        return r["caption"], "Caption" if r.get("task") == "text2pose" else "Caption of the target"
    return "(not recorded)", "Prompt"


def plot_examples(task: str, examples: list[dict], decode, path: Path) -> Path:
    from PIL import Image

    from poserft.common.body import BodyModel
    from poserft.data.render import render_pil

    body = BodyModel()
    with_image = task == "image2pose"
    cols = ["input image"] if with_image else []
    cols += ["target pose", "sampled pose (colour)\nover the target (grey)", "prompt, response and rewards"]
    ratios = [1.0] * (len(cols) - 1) + [2.6]
    n = len(examples)
    fig = _figure(2.6 * (len(cols) - 1) + 6.8, 2.75 * n + 0.6)
    axes = fig.subplots(n, len(cols), squeeze=False, gridspec_kw={"width_ratios": ratios})
    for i, r in enumerate(examples):
        ax_row = list(axes[i])
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        if with_image:
            ax = ax_row.pop(0)
            try:
                img = Image.open(io.BytesIO(r["image"])).convert("RGB")
                ax.imshow(np.asarray(img), interpolation="nearest")
                ax.set_xlabel(f"{img.size[0]} x {img.size[1]} px", fontsize=8)
            except Exception:  # noqa: BLE001 - a missing/broken image is shown as such
                ax.text(0.5, 0.5, "no readable image", ha="center", va="center", fontsize=9)
        target = np.asarray(r.get("target_joints") or [], dtype=np.float64)
        target = target.reshape(24, 3) if target.size == 72 and np.isfinite(target).all() else None
        pred = _joints_from_6d(body, r.get("pose")) if r.get("has_pose", True) else None
        ax_t, ax_p, ax_c = ax_row
        if target is not None:
            ax_t.imshow(np.asarray(render_pil(target, size=220)))
        else:
            ax_t.text(0.5, 0.5, "no target joints", ha="center", va="center", fontsize=9)
        mpjpe = None
        if pred is not None:
            ax_p.imshow(np.asarray(render_pil(pred, size=220, overlay=target)))
            if target is not None:
                mpjpe = float(np.linalg.norm((pred - pred[:1]) - (target - target[:1]), axis=-1).mean() * 1000.0)
        else:
            ax_p.set_facecolor("black")
            ax_p.text(
                0.5,
                0.5,
                "no pose in the response\n(no valid <POSE>)",
                ha="center",
                va="center",
                color="white",
                fontsize=9,
            )
        prompt, label = _prompt_text(r, decode)
        ax_c.axis("off")
        ax_c.text(
            0.0, 0.98, _caption(r, prompt, label, mpjpe), va="top", ha="left", fontsize=9.5, transform=ax_c.transAxes
        )
        if i == 0:
            for ax, title in zip(axes[0], cols):
                ax.set_title(title, fontsize=10)
    fig.suptitle(
        f"{task}: example rollouts of the last step (sample 0 of the first {n} groups; left/right limbs orange/blue)",
        fontsize=11,
    )
    return _save(fig, path)


def _examples(run_dir, files, read_steps, out_dir):
    """Render the example figures from the newest readable parquet; returns (figures, note)."""
    import pyarrow.parquet as pq

    needed = {"task", "pose", "target_joints"}
    for step, path in reversed(files):
        if step not in read_steps:
            continue
        try:
            names = set(pq.read_schema(path).names)
            missing = needed - names
            if missing:
                return [], f"No example poses: {path.name} lacks the column(s) {', '.join(sorted(missing))}."
            wanted = [
                "task",
                "task_id",
                "group_id",
                "sample_index",
                "policy_version",
                "prompt_tokens",
                "text",
                "caption",
                "has_pose",
                "pose",
                "target_joints",
                "image",
                "reward_error",
            ] + [f"reward_{c}" for c, _, _ in REWARDS]
            table = pq.read_table(path, columns=[c for c in wanted if c in names])
        except Exception:  # noqa: BLE001 - fall back to an older file
            continue
        picked = pick_examples(table)
        if not picked:
            return [], f"No example poses: {path.name} has no text2pose or image2pose rows."
        decode = _prompt_decoder(run_dir)
        figs = []
        for task, examples in picked.items():
            p = plot_examples(task, examples, decode, out_dir / f"examples_{task}.png")
            figs.append(
                (
                    f"Example poses: {task}",
                    p,
                    f"{task} rollouts from `rollouts/{path.name}` (step {step}): target, sampled pose over the target, "
                    "prompt and rewards.",
                )
            )
        missing_tasks = [t for t in EXAMPLE_TASKS if t not in picked]
        msg = f"{path.name} has no {' or '.join(missing_tasks)} rows." if missing_tasks else ""
        return figs, msg
    return [], "No example poses: no rollout parquet could be read."
