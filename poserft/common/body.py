"""The SMPL 24-joint skeleton: a built-in neutral body and an optional smplx backend.

Frame (same as SMPL and PoseScript): metres, y up, x from the body's right to its left, z
pointing forward out of the chest (towards a viewer facing the body). The rest pose is a
T-pose: legs straight, arms horizontal along +-x, palms down.

Built-in skeleton
-----------------
Segment lengths and landmark heights are fractions of body height H from the anthropometric
table of Drillis & Contini (1966), as reproduced in D. A. Winter, "Biomechanics and Motor
Control of Human Movement" (4th ed., Wiley 2009), Fig. 4.1. H = 1.70 m (a neutral adult).
Where the table has no landmark for an SMPL joint the choice is ours and is marked "(ours)".
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from poserft.common.checks import check_tensor
from poserft.common.rotations import axis_angle_to_matrix, rot6d_to_matrix

NUM_JOINTS = 24
POSE_6D_DIM = NUM_JOINTS * 6  # 144

JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
JOINT = {name: i for i, name in enumerate(JOINT_NAMES)}

HEIGHT_M = 1.70

# Drillis & Contini (1966) fractions of H (Winter 2009, Fig. 4.1).
_ANTHRO = {
    "eye_height": 0.936,
    "shoulder_height": 0.818,
    "chest_height": 0.720,  # nipple line
    "hip_height": 0.530,  # greater trochanter
    "knee_height": 0.285,
    "ankle_height": 0.039,
    "shoulder_width": 0.259,
    "hip_width": 0.191,
    "chest_width": 0.174,
    "upper_arm": 0.186,
    "forearm": 0.146,
    "hand_length": 0.108,
    "foot_length": 0.152,
}


def neutral_rest_joints(height_m: float = HEIGHT_M) -> np.ndarray:
    """Rest-pose (T-pose) joint positions, (24, 3) metres, pelvis at the origin."""
    f = {k: v * height_m for k, v in _ANTHRO.items()}
    hip_x = f["hip_width"] / 4  # hip joint centres a quarter of the bi-trochanteric width out (ours)
    sh_x = f["shoulder_width"] / 2 - 0.02 * height_m  # joint centre just inside the acromion (ours)
    pelvis_y = f["hip_height"] + 0.04 * height_m  # pelvis joint just above the hip joints (ours)
    neck_y = (f["shoulder_height"] + 0.870 * height_m) / 2  # between shoulders and chin (0.870 H)
    spine = np.linspace(pelvis_y, f["shoulder_height"], 5)[1:4]  # spine1..3 evenly spaced (ours)
    elbow_x = sh_x + f["upper_arm"]
    wrist_x = elbow_x + f["forearm"]
    hand_x = wrist_x + 0.5 * f["hand_length"]  # SMPL's hand joint sits mid-hand (ours)
    toe_z = 0.5 * f["foot_length"]  # ball of the foot, half a foot length ahead of the ankle (ours)
    pos = {
        "pelvis": (0, pelvis_y, 0),
        "left_hip": (hip_x, f["hip_height"], 0),
        "right_hip": (-hip_x, f["hip_height"], 0),
        "spine1": (0, spine[0], -0.01),
        "left_knee": (hip_x, f["knee_height"], 0.01),
        "right_knee": (-hip_x, f["knee_height"], 0.01),
        "spine2": (0, spine[1], -0.01),
        "left_ankle": (hip_x, f["ankle_height"], -0.02),
        "right_ankle": (-hip_x, f["ankle_height"], -0.02),
        "spine3": (0, spine[2], -0.01),
        "left_foot": (hip_x, 0.01, toe_z),
        "right_foot": (-hip_x, 0.01, toe_z),
        "neck": (0, neck_y, -0.02),
        "left_collar": (f["chest_width"] / 4, f["shoulder_height"] - 0.01 * height_m, -0.01),
        "right_collar": (-f["chest_width"] / 4, f["shoulder_height"] - 0.01 * height_m, -0.01),
        "head": (0, f["eye_height"], 0.0),
        "left_shoulder": (sh_x, f["shoulder_height"], -0.01),
        "right_shoulder": (-sh_x, f["shoulder_height"], -0.01),
        "left_elbow": (elbow_x, f["shoulder_height"], -0.01),
        "right_elbow": (-elbow_x, f["shoulder_height"], -0.01),
        "left_wrist": (wrist_x, f["shoulder_height"], -0.01),
        "right_wrist": (-wrist_x, f["shoulder_height"], -0.01),
        "left_hand": (hand_x, f["shoulder_height"], -0.01),
        "right_hand": (-hand_x, f["shoulder_height"], -0.01),
    }
    joints = np.array([pos[name] for name in JOINT_NAMES], dtype=np.float64)
    return joints - joints[0]


def pose_to_matrices(pose: torch.Tensor, name: str = "pose") -> torch.Tensor:
    """(N, 24, 3) axis-angle or (N, 144) 6D -> (N, 24, 3, 3) local rotation matrices."""
    if isinstance(pose, torch.Tensor) and pose.dim() == 2 and pose.shape[-1] == POSE_6D_DIM:
        check_tensor(name, pose, (POSE_6D_DIM,))
        return rot6d_to_matrix(pose.reshape(pose.shape[0], NUM_JOINTS, 6))
    if isinstance(pose, torch.Tensor) and pose.dim() == 3 and pose.shape[-2:] == (NUM_JOINTS, 3):
        check_tensor(name, pose, (NUM_JOINTS, 3))
        return axis_angle_to_matrix(pose)
    shape = tuple(pose.shape) if isinstance(pose, torch.Tensor) else type(pose).__name__
    raise ValueError(f"{name} must be (N, 24, 3) axis-angle or (N, 144) 6D, got {shape}")


class BodyModel:
    """Forward kinematics for the 24 SMPL joints.

    `BodyModel()` is the built-in neutral skeleton. `BodyModel(smpl_dir=DIR)` uses the `smplx`
    package with the SMPL model files in DIR (SMPL_NEUTRAL.pkl by default) and returns the same
    24 joints from the model's joint regressor.
    """

    def __init__(self, smpl_dir: str | os.PathLike | None = None, gender: str = "neutral"):
        self.smpl_dir = None if smpl_dir is None else Path(smpl_dir)
        self._smpl = None
        if self.smpl_dir is None:
            self.backend = "builtin"
            rest = torch.from_numpy(neutral_rest_joints())
        else:
            self.backend = "smplx"
            self._smpl = _load_smplx(self.smpl_dir, gender)
            with torch.no_grad():
                shaped = self._smpl.v_template + 0 * self._smpl.shapedirs[..., 0]
                rest = (self._smpl.J_regressor.double() @ shaped.double())[:NUM_JOINTS]
            rest = rest - rest[0]
        self.rest_joints = rest.double()  # (24, 3) metres
        parents = torch.tensor(PARENTS[1:])
        self._offsets = self.rest_joints.clone()
        self._offsets[1:] = self.rest_joints[1:] - self.rest_joints[parents]

    def forward_kinematics(self, pose: torch.Tensor) -> torch.Tensor:
        """(N, 24, 3) axis-angle or (N, 144) 6D -> joints (N, 24, 3) metres, root at origin."""
        rots = pose_to_matrices(pose)
        if self.backend == "smplx":
            return self._smplx_fk(rots)
        offsets = self._offsets.to(dtype=rots.dtype, device=rots.device)
        glob = [rots[:, 0]]
        pos = [offsets[0].expand(rots.shape[0], 3)]
        for j in range(1, NUM_JOINTS):
            p = PARENTS[j]
            glob.append(glob[p] @ rots[:, j])
            pos.append(pos[p] + (glob[p] @ offsets[j].unsqueeze(-1)).squeeze(-1))
        return torch.stack(pos, dim=1)

    def _smplx_fk(self, rots: torch.Tensor) -> torch.Tensor:
        n = rots.shape[0]
        model = self._smpl.to(dtype=rots.dtype, device=rots.device)
        out = model(
            global_orient=rots[:, :1],
            body_pose=rots[:, 1:],
            betas=torch.zeros(n, model.num_betas, dtype=rots.dtype, device=rots.device),
            pose2rot=False,
        )
        joints = out.joints[:, :NUM_JOINTS]
        rest_root = (model.J_regressor[:1] @ model.v_template).to(rots.dtype)
        return joints - rest_root  # root-relative to the rest pelvis, as the built-in backend

    def joints_from_axis_angle(self, pose_aa: np.ndarray) -> np.ndarray:
        """Numpy convenience: (N, 24, 3) axis-angle -> (N, 24, 3) joints, float64."""
        with torch.no_grad():
            return self.forward_kinematics(torch.as_tensor(pose_aa, dtype=torch.float64)).numpy()


def _load_smplx(smpl_dir: Path, gender: str):
    fname = smpl_dir / f"SMPL_{gender.upper()}.pkl"
    if not fname.is_file():
        raise FileNotFoundError(
            f"SMPL model file not found: expected {fname} (set body.smpl_dir to the folder holding "
            f"SMPL_{gender.upper()}.pkl)"
        )
    import smplx

    with open(fname, "rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    missing = [
        k
        for k in ("v_template", "J_regressor", "weights", "kintree_table", "shapedirs", "posedirs", "f")
        if k not in data
    ]
    if missing:
        raise ValueError(f"SMPL model file {fname} is missing keys {missing}")
    return smplx.SMPL(model_path=str(fname), gender=gender, batch_size=1, create_transl=False).double()
