"""`poserft generate`: inputs from the command line or a JSONL file -> response text and pose files.

Layout of --out: one input writes its files straight into OUT (`pose.npz`, `pose.json`,
`pose.png`, `pose.bvh`, and `response.txt`); with `--samples N` (N > 1) each draw goes to
OUT/sample_XX/. A batch (`--batch FILE.jsonl`, one input per line: {"text": ...},
{"image": PATH} or {"pose": PATH or 72 numbers}) writes one folder per line, OUT/0000, OUT/0001, ...
with the same layout inside. Relative paths in the JSONL are relative to the JSONL's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from poserft.inference.exports import check_axis_angle, write_exports
from poserft.inference.pipeline import PoseResult, Request, Settings, image_request, pose_request, text_request

CHUNK = 16  # inputs per engine call in batch mode


def read_pose_file(path: str | Path) -> np.ndarray:
    """An axis-angle pose from .npz (key axis_angle), .json (a list or {"axis_angle": ...}) or .npy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pose file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as z:
            if "axis_angle" not in z:
                raise ValueError(f"pose file {path} has no 'axis_angle' array (it has {', '.join(z.files)})")
            pose = z["axis_angle"]
    elif suffix == ".npy":
        pose = np.load(path)
    elif suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"pose file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
        pose = doc.get("axis_angle") if isinstance(doc, dict) else doc
    else:
        raise ValueError(f"pose file {path} must be .npz, .npy or .json, got {suffix or 'no suffix'}")
    return check_axis_angle(pose, f"the pose in {path}")


def read_batch(path: str | Path) -> list[Request]:
    """One `Request` per JSONL line; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"batch file {path} does not exist")
    reqs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        keys = [k for k in ("text", "image", "pose") if isinstance(item, dict) and k in item]
        if len(keys) != 1:
            raise ValueError(
                f'{path}:{n}: each line needs exactly one of "text", "image", "pose", got {line.strip()[:80]}'
            )
        value = item[keys[0]]
        try:
            if keys[0] == "text":
                reqs.append(text_request(value))
            elif keys[0] == "image":
                reqs.append(image_request(path.parent / str(value)))
            else:
                pose = read_pose_file(path.parent / value) if isinstance(value, str) else value
                reqs.append(pose_request(pose))
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    if not reqs:
        raise ValueError(f"batch file {path} has no inputs")
    return reqs


def write_result(res: PoseResult, out: Path) -> list[Path]:
    """response.txt, and the four pose files per pose (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "response.txt").write_text(res.text + "\n")
    if len(res.poses) == 1:
        return write_exports(res.record(0), out)
    return [p for k in range(len(res.poses)) for p in write_exports(res.record(k), out / f"sample_{k:02d}")]


def run_generate(
    pipe, requests: list[Request], settings: Settings, out: str | Path, progress: bool = True
) -> list[PoseResult]:
    """Run the inputs in chunks, print each response, write the files; returns the results."""
    from tqdm import tqdm

    out = Path(out)
    results: list[PoseResult] = []
    batch = len(requests) > 1
    bar = tqdm(total=len(requests), desc="generate", unit="input", disable=not (progress and batch))
    for start in range(0, len(requests), CHUNK):
        chunk = requests[start : start + CHUNK]
        # every chunk is one engine call per task (the prompts of a task share a template)
        by_task: dict[str, list[int]] = {}
        for k, r in enumerate(chunk):
            by_task.setdefault(r.task, []).append(k)
        chunk_res: list[PoseResult | None] = [None] * len(chunk)
        for idx in by_task.values():
            for k, res in zip(idx, pipe.run([chunk[k] for k in idx], settings)):
                chunk_res[k] = res
        for k, res in enumerate(chunk_res):
            folder = out / f"{start + k:04d}" if batch else out
            files = write_result(res, folder)
            tag = f"[{start + k}] " if batch else ""
            note = f"  ({len(files)} files in {folder})" if files else "  (no <POSE> in the response: no pose files)"
            bar.write(f"{tag}{res.text}{note if res.task != 'pose2text' else ''}")
            results.append(res)
        bar.update(len(chunk))
    bar.close()
    return results
