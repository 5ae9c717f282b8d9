"""Text-to-pose on descriptions people wrote: `poserft eval --descriptions FILE.jsonl`.

A descriptions file has one JSON object per line: `description` (text), `pose_id` (which of the
file's poses it describes) and `target_pose` (72 numbers: 24 x 3 SMPL axis-angle, radians, joint
0 the global orientation). The repository's dev set, `benchmarks/data/human_dev/`, is 47
hand-built poses with 166 descriptions in everyday words; it is for evaluation only.

For each description the policy generates greedily from the first text2pose prompt template (as
`poserft eval` does on the test split), and its pose mu is compared with every distinct pose of
the file by `yaw_mpjpe`:
- top-1 / top-3: is the described pose the nearest (among the 3 nearest) of the file's poses?
  Ties count against the description. Chance is 1 / (number of poses), 3 / (number of poses).
- yaw-aligned MPJPE to the described pose, and the same for the baseline that answers every
  description with the mean of the file's poses (the mean of their 6D rotations; FK
  re-orthonormalises); PA-MPJPE to the described pose.
A response without `<POSE>` counts with that mean pose, so an invalid answer is never free.

Why yaw alignment: a description fixes up and down, standing or lying, left and right of the
body, but rarely which way the person faces; the synthetic data draws the facing direction
uniformly. `yaw_mpjpe` subtracts the root and turns the prediction about the vertical (y) axis by
the angle that minimises the summed squared joint distance (closed form), then averages the
Euclidean joint distances. It is not PA-MPJPE: no scale, no tilt, so a lying pose stays lying.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from poserft.common.body import NUM_JOINTS, BodyModel
from poserft.common.metrics import pa_mpjpe, yaw_mpjpe
from poserft.common.rotations import axis_angle_to_rot6d

DEV_SET = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "human_dev" / "descriptions.jsonl"
BLIND_SET = DEV_SET.parents[1] / "human_blind" / "descriptions.jsonl"  # written blind to the training captions
TOP_K = (1, 3)


def default_descriptions() -> str | None:
    """The dev set's path when the repository has it (a source checkout), else None."""
    return str(DEV_SET) if DEV_SET.is_file() else None


@dataclass
class DescriptionSet:
    path: Path
    descriptions: list[str]
    pose_ids: list[str]  # the distinct poses, in order of first appearance
    target_index: np.ndarray  # (N,) index into pose_ids of each description's pose
    poses_aa: np.ndarray  # (P, 24, 3) radians


def load_descriptions(path: str | Path) -> DescriptionSet:
    """Read and check a descriptions file; errors name the file, the line and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"descriptions file not found: {path}")
    texts, index, pose_ids, poses = [], [], [], []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with description, pose_id, target_pose")
        for key in ("description", "pose_id", "target_pose"):
            if key not in row:
                raise ValueError(f"{where}: missing key '{key}'")
        text, pid = row["description"], row["pose_id"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: 'description' must be a non-empty string")
        if not isinstance(pid, str) or not pid:
            raise ValueError(f"{where}: 'pose_id' must be a non-empty string")
        pose = _pose_values(row["target_pose"], where)
        if pid not in seen:
            seen[pid] = len(pose_ids)
            pose_ids.append(pid)
            poses.append(pose)
        elif not np.allclose(poses[seen[pid]], pose, atol=1e-5):
            raise ValueError(f"{where}: 'target_pose' differs from the earlier line with pose_id {pid!r}")
        texts.append(text)
        index.append(seen[pid])
    if not texts:
        raise ValueError(f"{path}: no descriptions (expected JSON lines with description, pose_id, target_pose)")
    return DescriptionSet(path, texts, pose_ids, np.array(index), np.stack(poses))


def _pose_values(value, where: str) -> np.ndarray:
    ok = (
        isinstance(value, list)
        and len(value) == NUM_JOINTS * 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not ok:
        raise ValueError(
            f"{where}: 'target_pose' must be a list of {NUM_JOINTS * 3} numbers (24 x 3 axis-angle, radians)"
        )
    pose = np.array(value, dtype=np.float64).reshape(NUM_JOINTS, 3)
    if not np.isfinite(pose).all():
        raise ValueError(f"{where}: 'target_pose' has NaN or infinite values")
    return pose


# ---- metrics ---------------------------------------------------------------------------------


def target_ranks(dist: torch.Tensor, target_index) -> torch.Tensor:
    """(N, P) distances to every pose and (N,) true pose indices -> (N,) ranks, 0 = nearest.

    Poses exactly as near as the true one count against it."""
    target_index = torch.as_tensor(np.asarray(target_index), dtype=torch.long)
    own = dist.gather(1, target_index[:, None])
    return (dist < own).sum(1) + (dist == own).sum(1) - 1


def describe_metrics(pred_m: torch.Tensor, poses_m: torch.Tensor, target_index, mean_m: torch.Tensor) -> dict:
    """Metrics of predicted joints (N, 24, 3) against the file's poses (P, 24, 3), metres.

    `mean_m` (24, 3) is the baseline pose. Returns the figures of the module docstring."""
    target_index = torch.as_tensor(np.asarray(target_index), dtype=torch.long)
    n, n_poses = pred_m.shape[0], poses_m.shape[0]
    dist = yaw_mpjpe(pred_m[:, None], poses_m[None])  # (N, P)
    ranks = target_ranks(dist, target_index)
    own = dist.gather(1, target_index[:, None]).squeeze(1)
    target_m = poses_m[target_index]
    baseline = yaw_mpjpe(mean_m.expand_as(target_m), target_m)
    res = {f"top{k}": float((ranks < k).double().mean() * 100) for k in TOP_K}
    res |= {f"chance_top{k}": 100.0 * min(k, n_poses) / n_poses for k in TOP_K}
    res |= {
        "yaw_mpjpe_mm": float(own.mean()),
        "pa_mpjpe_mm": float(pa_mpjpe(pred_m, target_m).mean()),
        "baseline_mean_pose_yaw_mpjpe_mm": float(baseline.mean()),
        "n": n,
        "poses": n_poses,
    }
    return res


# ---- evaluation ------------------------------------------------------------------------------


def evaluate_descriptions(policy, path: str | Path, max_new_tokens: int, body: BodyModel | None = None) -> dict:
    """Generate a pose for every description of `path` and score it (see the module docstring)."""
    from poserft.data.dataset import PROMPTS
    from poserft.model.generation import generate, pose_from_response

    ds = load_descriptions(path)
    body = body or BodyModel()
    prompts = [policy.encode_prompt(PROMPTS["text2pose"][0].format(caption=d)) for d in ds.descriptions]
    gen = generate(policy, prompts, max_new_tokens=max_new_tokens)
    mu, _, has = pose_from_response(policy, prompts, gen.token_ids)
    with torch.no_grad():
        poses_6d = axis_angle_to_rot6d(torch.from_numpy(ds.poses_aa))  # (P, 24, 6)
        mean_6d = poses_6d.mean(0).reshape(1, -1)
        pred_6d = torch.where(has[:, None], mu.double(), mean_6d.expand(len(ds.descriptions), -1))
        pred_m = body.forward_kinematics(pred_6d)
        poses_m = body.forward_kinematics(poses_6d.reshape(len(ds.pose_ids), -1))
        mean_m = body.forward_kinematics(mean_6d)[0]
    res = describe_metrics(pred_m, poses_m, ds.target_index, mean_m)
    dist = yaw_mpjpe(pred_m[:, None], poses_m[None])
    nearest = dist.argmin(1).tolist()
    res = {
        "file": str(ds.path),
        **res,
        "baseline": "mean of the file's poses",
        "valid_pose_fraction": float(has.float().mean()),
        "per_description": [
            {
                "description": d,
                "pose_id": ds.pose_ids[t],
                "nearest_pose_id": ds.pose_ids[j],
                "yaw_mpjpe_mm": round(float(dist[i, t]), 1),
            }
            for i, (d, t, j) in enumerate(zip(ds.descriptions, ds.target_index.tolist(), nearest))
        ],
    }
    return res


def table_rows() -> list:
    """Rows for `poserft.evaluate.eval_table` (label, result -> number)."""
    return [
        ("descriptions top-1 (%)", lambda r: r["descriptions"]["top1"]),
        ("descriptions top-3 (%)", lambda r: r["descriptions"]["top3"]),
        ("  chance top-1", lambda r: r["descriptions"]["chance_top1"]),
        ("descriptions yaw-MPJPE (mm)", lambda r: r["descriptions"]["yaw_mpjpe_mm"]),
        ("  mean of the file's poses yaw-MPJPE", lambda r: r["descriptions"]["baseline_mean_pose_yaw_mpjpe_mm"]),
        ("descriptions PA-MPJPE (mm)", lambda r: r["descriptions"]["pa_mpjpe_mm"]),
    ]
