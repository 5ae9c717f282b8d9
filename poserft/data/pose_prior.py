"""A hand-built prior over SMPL body poses: joint limits, named canonical poses and a sampler.

Local frame of every joint (the rest pose is the T-pose, so all local frames start aligned with
the body frame of `body.py`): x from the body's right to its left, y up, z forward. A pose is
(24, 3) axis-angle; joint 0 is the global orientation and has no limits.

Sign conventions on the left side (the right side is the mirror image: x kept, y and z negated):
- hip: flexion (thigh forward) -x, abduction +z, external rotation (toes out) +y
- knee: flexion +x; ankle: plantarflexion (toes down) +x, eversion +z
- spine, neck, head: flexion (bend forward) +x, lateral bend to the body's right +z
- collar: elevation +z, protraction (forward) -y
- shoulder: raise the arm +z, lower it to the side -z, swing it forward -y,
  internal rotation of the humerus +x
- elbow: flexion (forearm forward from the T-pose) -y
- wrist: flexion (towards the palm, palms down) -z, radial deviation -y

Sampler mixture (`PosePrior.sample`), per pose:
- 40% "canonical": one canonical pose for the whole body, plus Gaussian noise.
- 40% "mixed": legs, trunk (spine, neck, head), left arm and right arm each take their own
  canonical pose (the right arm reuses the left arm's pose half of the time, keeping symmetric
  gestures); each group is, with probability 0.3, blended with a second canonical pose at a
  uniform weight in [0, 1] (legs only blend between poses with the same global tilt); plus
  Gaussian noise.
- 20% "random": every body-joint angle uniform in its limits, scaled towards the rest pose by an
  amplitude drawn uniformly from [0.1, 0.4].
Gaussian noise has a per-pose scale u ~ U(0.02, 0.10): sigma = u * (max - min) of each joint axis,
a third of that on joints whose rotation moves no other joint (toes, head, hands).
Everything is then clipped to `JOINT_LIMITS`. The global orientation is
R_yaw @ R_tilt @ R_base, with yaw uniform in [-pi, pi], R_tilt a pitch/roll rotation with
components N(0, 4 deg) (90% of poses) or N(0, 15 deg) (10%), clipped to +-45 deg, and R_base the
global orientation of the pose the legs came from (non-zero only for lying, plank, bending,
bowing, floor, yoga and upside-down poses).
"""

from __future__ import annotations

import numpy as np
import torch

from poserft.common.body import JOINT, NUM_JOINTS
from poserft.common.rotations import axis_angle_to_matrix, matrix_to_axis_angle

_D = np.pi / 180.0

# ---------------------------------------------------------------------------------------------
# Joint limits
# ---------------------------------------------------------------------------------------------
# Ranges of motion are the normal adult values of the American Academy of Orthopaedic Surgeons
# ("Joint Motion: Method of Measuring and Recording", AAOS 1965; the values tabulated in Norkin &
# White, "Measurement of Joint Motion: A Guide to Goniometry", appendix A), mapped onto the axes
# above. Values in degrees:
#   shoulder: flexion 180, extension 60, abduction 180, internal rotation 70, external rotation 90
#   elbow: flexion 150, extension 0; forearm: pronation 80, supination 80
#   wrist: flexion 80, extension 70, radial deviation 20, ulnar deviation 30
#   hip: flexion 120, extension 30, abduction 45, adduction 30, internal / external rotation 45
#     (external rotation widened to 55 on the axis-angle component: flexion with abduction, as in
#     cross-legged sitting, puts about 50 deg on it)
#   knee: flexion 135 (we allow 150: passive flexion when kneeling or squatting goes further)
#   ankle: plantarflexion 50, dorsiflexion 20; subtalar inversion 35, eversion 15
#   thoracolumbar spine: flexion 80, extension 25, lateral flexion 35, rotation 45
#   cervical spine: flexion 45, extension 45, lateral flexion 45, rotation 60
# Shares and joints the tables do not cover (ours):
# - spine1/2/3 each take a third of the thoracolumbar range; neck and head each take half of the
#   cervical range.
# - T-pose frame: the shoulder's 180 deg of abduction runs from -90 (arm at the side) to +90 at
#   the shoulder plus 30 deg of elevation at the collar; horizontal flexion 130 / extension 45.
# - forearm rotation is split evenly between the elbow and the wrist twist (x) axes; the elbow's
#   z axis (carrying angle) gets +-10.
# - knee tibial rotation +-15, varus/valgus +-5; foot abduction/adduction +-15; toes, hands and
#   collar twist small ranges (their rotations move no joint of the 24 or barely do).
# Limits act on the components of the axis-angle vector, which match Euler angles for moderate
# rotations and are an approximation for large combined ones.

# (min, max) in degrees for x, y, z, left side and centre joints.
_LIMITS_DEG = {
    "left_hip": ((-120, 30), (-45, 55), (-30, 45)),
    "left_knee": ((0, 150), (-15, 15), (-5, 5)),
    "left_ankle": ((-20, 50), (-15, 15), (-35, 15)),
    "left_foot": ((-15, 15), (-5, 5), (-5, 5)),
    "spine1": ((-25 / 3, 80 / 3), (-15, 15), (-35 / 3, 35 / 3)),
    "spine2": ((-25 / 3, 80 / 3), (-15, 15), (-35 / 3, 35 / 3)),
    "spine3": ((-25 / 3, 80 / 3), (-15, 15), (-35 / 3, 35 / 3)),
    "neck": ((-22.5, 22.5), (-30, 30), (-22.5, 22.5)),
    "head": ((-22.5, 22.5), (-30, 30), (-22.5, 22.5)),
    "left_collar": ((-10, 10), (-20, 20), (-10, 30)),
    "left_shoulder": ((-90, 70), (-130, 45), (-90, 90)),
    "left_elbow": ((-40, 40), (-150, 0), (-10, 10)),
    "left_wrist": ((-40, 40), (-20, 30), (-80, 70)),
    "left_hand": ((-10, 10), (-10, 10), (-30, 10)),
}


def _build_limits() -> np.ndarray:
    lim = np.zeros((NUM_JOINTS, 3, 2))
    lim[0] = [[-np.pi, np.pi]] * 3  # global orientation: unlimited
    for name, axes in _LIMITS_DEG.items():
        lim[JOINT[name]] = np.array(axes, dtype=np.float64) * _D
        if name.startswith("left_"):
            right = lim[JOINT["right_" + name[5:]]]
            right[0] = lim[JOINT[name], 0]
            right[1:] = -lim[JOINT[name], 1:, ::-1]  # mirror: y and z negated, bounds swapped
    return lim


JOINT_LIMITS = _build_limits()
"""(24, 3, 2) radians: [joint, axis (x, y, z), (min, max)]; row 0 (global orientation) is +-pi."""
JOINT_LIMITS.setflags(write=False)


def clip_to_limits(pose):
    """Clip body joints 1..23 of a (..., 24, 3) axis-angle pose to JOINT_LIMITS.

    Returns a new array (numpy in, numpy out; torch in, torch out). The global orientation is
    left as it is.
    """
    is_torch = isinstance(pose, torch.Tensor)
    if not is_torch:
        pose = np.asarray(pose, dtype=np.float64)
    if tuple(pose.shape[-2:]) != (NUM_JOINTS, 3):
        raise ValueError(f"pose must have shape (..., 24, 3), got {tuple(pose.shape)}")
    if is_torch:
        lim = torch.tensor(JOINT_LIMITS[1:], dtype=pose.dtype, device=pose.device)
        out = pose.clone()
        out[..., 1:, :] = torch.minimum(torch.maximum(pose[..., 1:, :], lim[..., 0]), lim[..., 1])
        return out
    out = pose.copy()
    out[..., 1:, :] = np.clip(pose[..., 1:, :], JOINT_LIMITS[1:, :, 0], JOINT_LIMITS[1:, :, 1])
    return out


# ---------------------------------------------------------------------------------------------
# Canonical poses
# ---------------------------------------------------------------------------------------------
_AXES = {"x": 0, "y": 1, "z": 2}


def _rot(*steps: tuple[str, float]) -> np.ndarray:
    """Axis-angle (3,) of the rotation doing `steps` in order, each (axis, degrees) about the
    parent's fixed axes: _rot(("z", -80), ("y", -30)) lowers the left arm, then swings it forward."""
    m = torch.eye(3, dtype=torch.float64)
    for axis, deg in steps:
        v = torch.zeros(3, dtype=torch.float64)
        v[_AXES[axis]] = deg * _D
        m = axis_angle_to_matrix(v) @ m
    return matrix_to_axis_angle(m).numpy()


def _two_bone(upper_rest, lower_rest, upper, lower) -> np.ndarray:
    """Axis-angle of the rotation taking the rest directions of a limb's upper and lower bones
    (the lower one already flexed at the hinge) to the target directions `upper` and `lower`.
    Exact when the two pairs enclose the same angle; otherwise `upper` is met exactly and `lower`
    as nearly as the hinge allows."""

    def frame(a, b):
        e1 = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
        e2 = np.asarray(b, dtype=np.float64) - np.dot(b, e1) * e1
        e2 /= np.linalg.norm(e2)
        return np.stack([e1, e2, np.cross(e1, e2)], axis=1)

    m = frame(upper, lower) @ frame(upper_rest, lower_rest).T
    return matrix_to_axis_angle(torch.from_numpy(m)).numpy()


def _bend_angle(upper, lower) -> float:
    u, w = (np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in (upper, lower))
    return float(np.degrees(np.arccos(np.clip(np.dot(u, w), -1, 1))))


def _arm(upper, lower) -> dict:
    """Left shoulder and elbow rotations pointing the upper arm and forearm along the given
    directions (body frame, upright trunk, collar at rest)."""
    phi = _bend_angle(upper, lower)
    flexed = [np.cos(phi * _D), 0.0, np.sin(phi * _D)]  # elbow flexion -y swings the forearm to +z
    return {"shoulder": _two_bone([1, 0, 0], flexed, upper, lower), "elbow": [("y", -phi)]}


def _leg(thigh, shank) -> dict:
    """Left hip and knee rotations pointing the thigh and shank along the given directions."""
    phi = _bend_angle(thigh, shank)
    flexed = [0.0, -np.cos(phi * _D), -np.sin(phi * _D)]  # knee flexion +x swings the shank to -z
    return {"hip": _two_bone([0, -1, 0], flexed, thigh, shank), "knee": [("x", phi)]}


def _mirror(aa: np.ndarray) -> np.ndarray:
    """Left-side rotation -> the same motion on the right side."""
    return np.array([aa[0], -aa[1], -aa[2]])


def _pose(sym: dict | None = None, **joints) -> np.ndarray:
    """Build a (24, 3) pose. `sym` maps left-side joint names (without "left_") to rotations used
    on both sides; keyword arguments set single joints (and override `sym`). Values are (3,)
    axis-angle arrays or a list of (axis, degrees) steps."""
    pose = np.zeros((NUM_JOINTS, 3))

    def val(v):
        return _rot(*v) if isinstance(v, list) else np.asarray(v, dtype=np.float64)

    for name, v in (sym or {}).items():
        pose[JOINT["left_" + name]] = val(v)
        pose[JOINT["right_" + name]] = _mirror(val(v))
    for name, v in joints.items():
        pose[JOINT[name]] = val(v)
    return pose


def _spine(flex=0.0, bend=0.0, twist=0.0) -> dict:
    """Spread a trunk flexion / lateral bend / twist (degrees, totals) over spine1..3."""
    return {s: _rot(("x", flex / 3), ("z", bend / 3), ("y", twist / 3)) for s in ("spine1", "spine2", "spine3")}


_ARMS_DOWN = {"collar": [("z", -5)], "shoulder": [("z", -75)], "elbow": [("y", -10)]}


def _build_canonical() -> dict[str, np.ndarray]:
    p = {}
    p["t_pose"] = _pose()
    p["a_pose"] = _pose({"shoulder": [("z", -45)]})
    p["standing"] = _pose(_ARMS_DOWN)
    p["standing_relaxed"] = _pose(
        {**_ARMS_DOWN, "hip": [("z", 6), ("y", 10)], "elbow": [("y", -20)]},
        left_knee=[("x", 10)],
        **_spine(bend=-4),
        neck=[("z", 4)],
    )
    p["sitting"] = _pose(
        {
            "hip": [("x", -90), ("z", 5)],
            "knee": [("x", 90)],
            "shoulder": [("z", -75), ("x", -35)],
            "elbow": [("y", -55)],
            "collar": [("z", -5)],
        },
        **_spine(flex=10),
    )
    p["sitting_on_floor"] = _pose(  # cross-legged: knees out to the sides, feet under the shins
        {
            **_leg([0.4, -0.2, 0.89], [-0.6, -0.4, -0.4]),
            "ankle": [("z", -20)],
            "shoulder": [("z", -70), ("x", -30)],
            "elbow": [("y", -50)],
        },
        **_spine(flex=15),
    )
    p["kneeling"] = _pose({**_ARMS_DOWN, "knee": [("x", 90)], "ankle": [("x", 50)]})
    p["kneeling_on_heels"] = _pose(
        {
            "hip": [("x", -60)],
            "knee": [("x", 150)],
            "ankle": [("x", 50)],
            "shoulder": [("z", -80), ("x", -25)],
            "elbow": [("y", -40)],
        },
        **_spine(flex=5),
    )
    p["squatting"] = _pose(
        {
            "hip": [("x", -110), ("z", 15)],
            "knee": [("x", 110)],
            "ankle": [("x", -20)],
            "shoulder": [("z", -10), ("y", -70)],
            "elbow": [("y", -10)],
        },
        pelvis=[("x", 20)],
        **_spine(flex=10),
    )
    p["arms_up"] = _pose({"collar": [("z", 20)], "shoulder": [("z", 65)]})
    p["arms_behind_head"] = _pose(
        {"collar": [("z", 10)], "shoulder": [("x", -90), ("z", 40), ("y", 20)], "elbow": [("y", -140)]}
    )
    p["lunge"] = _pose(
        _ARMS_DOWN,
        left_hip=[("x", -90)],
        left_knee=[("x", 90)],
        right_hip=[("x", 20)],
        right_knee=[("x", 85)],
        right_ankle=[("x", -15)],
    )
    p["bending_forward"] = _pose(
        {"hip": [("x", -75)], "shoulder": [("y", -90), ("x", -10)], "elbow": [("y", -5)]},
        pelvis=[("x", 75)],
        **_spine(flex=45),
        neck=[("x", -15)],
    )
    p["bowing"] = _pose({**_ARMS_DOWN, "hip": [("x", -30)]}, pelvis=[("x", 30)], **_spine(flex=15))
    p["praying"] = _pose(  # palms together in front of the chest
        {**_arm([0.03, -0.95, 0.3], [-0.75, 0.4, 0.55]), "wrist": [("z", 40)]}, neck=[("x", 15)]
    )
    p["walking"] = _pose(
        {"collar": [("z", -5)]},
        left_hip=[("x", -25)],
        left_knee=[("x", 10)],
        left_ankle=[("x", -5)],
        right_hip=[("x", 10)],
        right_knee=[("x", 35)],
        right_ankle=[("x", 20)],
        left_shoulder=[("z", -78), ("x", 20)],
        left_elbow=[("y", -15)],
        right_shoulder=_mirror(_rot(("z", -78), ("x", -25))),
        right_elbow=_mirror(_rot(("y", -35))),
    )
    p["running"] = _pose(
        {"collar": [("z", -5)]},
        pelvis=[("x", 10)],
        **_spine(flex=6),
        left_hip=[("x", -70)],
        left_knee=[("x", 90)],
        left_ankle=[("x", 10)],
        right_hip=[("x", 20)],
        right_knee=[("x", 60)],
        right_ankle=[("x", 30)],
        left_shoulder=[("z", -75), ("x", 40)],
        left_elbow=[("y", -90)],
        right_shoulder=_mirror(_rot(("z", -75), ("x", -45))),
        right_elbow=_mirror(_rot(("y", -95))),
    )
    p["one_leg_stand"] = _pose(
        {"shoulder": [("z", -30)]},
        left_hip=[("x", -90)],
        left_knee=[("x", 95)],
        left_ankle=[("x", 20)],
    )
    p["kicking"] = _pose(
        {"shoulder": [("z", -20), ("y", 15)]},
        right_hip=[("x", -75)],
        right_knee=[("x", 10)],
        **_spine(flex=-5),
    )
    p["hands_on_hips"] = _pose(_arm([0.67, -0.72, -0.15], [-0.7, -0.6, 0.35]))
    left_cross, right_cross = _arm([0.05, -0.75, 0.65], [-1, 0.15, 0.05]), _arm([0.05, -0.75, 0.65], [-1, 0.02, 0.1])
    p["arms_crossed"] = _pose(
        left_shoulder=left_cross["shoulder"],
        left_elbow=left_cross["elbow"],
        right_shoulder=_mirror(right_cross["shoulder"]),
        right_elbow=_mirror(_rot(*right_cross["elbow"])),
    )
    p["waving"] = _pose(
        left_collar=[("z", -5)],
        left_shoulder=[("z", -75)],
        left_elbow=[("y", -10)],
        right_collar=_mirror(_rot(("z", 10))),
        right_shoulder=_mirror(_rot(("x", -90), ("z", 10))),
        right_elbow=_mirror(_rot(("y", -100))),
        right_wrist=_mirror(_rot(("z", 20))),
    )
    p["pointing"] = _pose(
        left_collar=[("z", -5)],
        left_shoulder=[("z", -75)],
        left_elbow=[("y", -10)],
        right_shoulder=_mirror(_rot(("y", -80), ("z", 10))),
        **_spine(twist=-10),
    )
    p["reaching_forward"] = _pose({"shoulder": [("y", -85), ("z", 5)], "collar": [("y", -10)]}, **_spine(flex=15))
    p["jumping_star"] = _pose(
        {"shoulder": [("z", 45)], "hip": [("z", 30)], "knee": [("x", 5)], "ankle": [("x", 30)]},
    )
    p["t_pose_lean"] = _pose(**_spine(bend=30), neck=[("z", 10)])
    p["side_stretch"] = _pose(
        left_collar=[("z", 20)],
        left_shoulder=[("z", 85)],
        left_elbow=[("y", -20)],
        right_shoulder=_mirror(_rot(("z", -75))),
        **_spine(bend=30),
        right_hip=_mirror(_rot(("z", 10))),
    )
    p["boxing_guard"] = _pose(
        {"shoulder": [("x", -10), ("z", -65), ("y", -50)], "elbow": [("y", -135)]},
        left_hip=[("x", -15)],
        right_hip=[("x", 10)],
        left_knee=[("x", 20)],
        right_knee=[("x", 20)],
        **_spine(flex=10, twist=15),
    )
    p["flexing_biceps"] = _pose({"shoulder": [("x", -90)], "elbow": [("y", -110)]})
    p["lying_on_back"] = _pose(_ARMS_DOWN, pelvis=[("x", -90)])
    p["lying_on_side"] = _pose(
        {"hip": [("x", -35)], "knee": [("x", 45)]},
        pelvis=[("z", 90)],
        left_shoulder=[("z", -60)],
        left_elbow=[("y", -20)],
        right_shoulder=_mirror(_rot(("z", 10), ("y", -60))),
        right_elbow=_mirror(_rot(("y", -60))),
    )
    p["plank"] = _pose(
        {"shoulder": [("y", -90), ("x", 20)], "elbow": [("y", -5)]},
        pelvis=[("x", 70)],
        neck=[("x", -10)],
    )
    p["push_up_down"] = _pose(
        {"shoulder": [("z", -80), ("y", -20)], "elbow": [("y", -100)], "wrist": [("z", 70)]},
        pelvis=[("x", 85)],
        neck=[("x", -15)],
    )
    _add_more_poses(p)
    return p


def _straight_leg(direction) -> dict:
    """Hip and knee of a nearly straight leg (a few degrees of knee bend) pointing along `direction`."""
    d = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    return _leg(d, d + np.array([0.0, 0.0, -0.09]))


def _sides(left: dict | None = None, right: dict | None = None) -> dict:
    """Keyword arguments of `_pose` for a left limb and a right limb built on the left side
    (`_arm` / `_leg` output): the right one is mirrored."""
    out = {}
    for side, limb in (("left", left), ("right", right)):
        for joint, v in (limb or {}).items():
            aa = _rot(*v) if isinstance(v, list) else np.asarray(v, dtype=np.float64)
            out[f"{side}_{joint}"] = aa if side == "left" else _mirror(aa)
    return out


_ARMS_OVERHEAD = {"collar": [("z", 20)], "shoulder": [("z", 65)]}  # the arms of "arms_up"
_ARM_FORWARD = {"collar": [("y", -10)], "shoulder": [("y", -85), ("z", 5)]}  # an arm of "reaching_forward"


def _add_more_poses(p: dict) -> None:
    """Yoga, floor, inverted, sport and gesture poses (added after the first 33). Arms and trunks
    that match an earlier pose's part use its exact values, so the part phrases of
    `registers_rich` see one state, not two near-duplicates."""
    # Yoga, standing: feet wide, front (left) knee bent over the ankle, back leg straight, arms level
    # (the T-pose's arms), head turned to look over the left hand.
    p["warrior_two"] = _pose(
        **_sides(_leg([0.75, -0.2, 0.6], [0.05, -1, 0.05]), _straight_leg([0.55, -0.8, -0.2])),
        neck=[("y", 25)],
        head=[("y", 20)],
    )
    # Yoga, on the right leg: left sole against the inner right thigh, knee out; palms together overhead.
    over = _arm([0.25, 0.95, 0.15], [-0.75, 0.6, 0.05])
    p["tree_pose"] = _pose(
        {"collar": [("z", 15)], **over},
        **_sides(_leg([0.65, -0.6, 0.45], [-0.5, -0.25, -0.4])),
        left_ankle=[("z", -20)],
    )
    # Yoga, inverted V: hands and feet on the floor, hips the highest point, legs and arms straight.
    p["downward_dog"] = _pose(
        {"hip": [("x", -95)], "knee": [("x", 3)], "ankle": [("x", -15)], **_ARMS_OVERHEAD},
        pelvis=[("x", 130)],
    )
    # Yoga, kneeling: sitting back on the heels, trunk folded over the thighs, arms stretched ahead on the floor.
    p["child_pose"] = _pose(
        {"hip": [("x", -120)], "knee": [("x", 150)], "ankle": [("x", 50)], **_ARMS_OVERHEAD},
        pelvis=[("x", 60)],
        **_spine(flex=60),
        neck=[("x", 10)],
    )
    # Yoga, face down: hips and legs on the floor, chest lifted on the hands, elbows bent at the ribs, head up.
    p["cobra"] = _pose(
        {"hip": [("x", 30)], "ankle": [("x", 45)], "shoulder": [("z", -80)], "elbow": [("y", -100)]},
        pelvis=[("x", 60)],
        **_spine(flex=-25),
        neck=[("x", -20)],
        head=[("x", -15)],
    )
    # On the back, knees bent and feet flat, hips lifted off the floor; arms flat on the floor.
    p["bridge"] = _pose(
        {
            "hip": [("x", 13), ("z", 5)],
            "knee": [("x", 124)],
            "ankle": [("x", -18)],
            "shoulder": [("z", -75), ("x", 35)],
            "elbow": [("y", -5)],
        },
        pelvis=[("x", -120)],
    )
    # Hands and knees: thighs and arms vertical, back level, shins on the floor.
    p["on_all_fours"] = _pose(
        {"hip": [("x", -75), ("z", 5)], "knee": [("x", 90)], "ankle": [("x", 40)], **_ARM_FORWARD},
        pelvis=[("x", 75)],
        neck=[("x", -15)],
    )
    # Upside down on straight arms, legs straight up together.
    p["handstand"] = _pose(
        {**_ARMS_OVERHEAD, "ankle": [("x", 30)]},
        pelvis=[("x", 180)],
        neck=[("x", -15)],
    )
    # Sideways and upside down on the hands, arms and legs spread like a star.
    p["cartwheel"] = _pose(
        {"shoulder": [("z", 45)], "hip": [("z", 45)], "ankle": [("x", 30)]},  # the arms of "jumping_star"
        pelvis=[("z", 150)],
    )
    # Body straight and sideways, propped on the right hand, left arm straight up.
    p["side_plank"] = _pose(
        pelvis=[("z", 58)],
        left_shoulder=[("z", 30)],
        right_shoulder=_mirror(_rot(("z", -30))),  # the arm of "one_leg_stand"
        left_hip=[("z", 3)],
    )
    # Face down, flat; forearms folded under the forehead, elbows out.
    pillow = _arm([0.65, 0.6, 0.3], [-0.85, 0.3, 0.35])
    p["lying_on_stomach"] = _pose({**pillow, "ankle": [("x", 40)]}, pelvis=[("x", 90)])
    # Sitting on the floor, legs straight out in front, leaning back a little on the hands.
    p["sitting_legs_out"] = _pose(
        {"hip": [("x", -75)], "knee": [("x", 5)], "shoulder": [("z", -75), ("x", 35)], "elbow": [("y", -5)]},
        pelvis=[("x", -15)],
    )
    # Sitting on the floor, knees drawn up to the chest, arms wrapped around the shins.
    hug = _arm([0.2, -0.35, 0.92], [-0.85, -0.2, 0.45])
    p["hugging_knees"] = _pose(
        {"hip": [("x", -112)], "knee": [("x", 150)], "ankle": [("x", -10)], **hug},
        pelvis=[("x", -40)],
        **_spine(flex=45),
        neck=[("x", -15)],
    )
    # Overarm throw, wound up: left foot forward, left arm at the target, right hand cocked behind the head.
    cocked = {"shoulder": [("x", -90), ("z", 5), ("y", 25)], "elbow": [("y", -95)]}
    p["throwing"] = _pose(
        **_sides(_ARM_FORWARD, cocked),
        left_hip=[("x", -35), ("z", 5)],
        left_knee=[("x", 10)],
        right_hip=[("x", 15), ("z", -8)],
        right_knee=[("x", 20)],
        **_spine(flex=-8, twist=-30),
    )
    # Athletic ready stance: feet wide, knees and hips bent, trunk leaning forward, hands out in front.
    ready = _arm([0.3, -0.55, 0.75], [0.1, -0.2, 0.97])
    p["ready_stance"] = _pose(
        {"hip": [("x", -70), ("z", 15)], "knee": [("x", 70)], "ankle": [("x", -20)], **ready},
        pelvis=[("x", 35)],
        neck=[("x", -15)],
    )


CANONICAL_POSES: dict[str, np.ndarray] = _build_canonical()
"""Named, hand-made (24, 3) float64 axis-angle poses; joint 0 is zero unless the pose is tilted."""


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------
_ARM_PARTS = ("collar", "shoulder", "elbow", "wrist", "hand")
_GROUPS = {  # body parts that take their rotations from one canonical pose in a mixed sample
    "legs": [JOINT[f"{side}_{k}"] for side in ("left", "right") for k in ("hip", "knee", "ankle", "foot")],
    "trunk": [JOINT[n] for n in ("spine1", "spine2", "spine3", "neck", "head")],
    "left_arm": [JOINT[f"left_{k}"] for k in _ARM_PARTS],
    "right_arm": [JOINT[f"right_{k}"] for k in _ARM_PARTS],
}
_LEAVES = [JOINT[n] for n in ("left_foot", "right_foot", "head", "left_hand", "right_hand")]

P_CANONICAL, P_MIXED, P_RANDOM = 0.4, 0.4, 0.2
P_BLEND = 0.3  # chance that a group of a mixed pose is blended with a second canonical pose
P_SAME_ARMS = 0.5  # chance that a mixed pose's right arm follows the left arm's canonical pose
NOISE_SCALE = (0.02, 0.10)  # per-pose noise sigma as a fraction of each joint axis range
RANDOM_AMPLITUDE = (0.1, 0.4)
TILT_SIGMA_DEG = (4.0, 15.0)  # small / large pitch-roll noise; the large one on 10% of poses
P_LARGE_TILT = 0.1
MAX_TILT_DEG = 45.0


class PosePrior:
    """Sampler of varied, plausible SMPL poses; deterministic for a given seed."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.names = tuple(CANONICAL_POSES)
        self.bases = np.stack([CANONICAL_POSES[k] for k in self.names])  # (K, 24, 3)
        span = JOINT_LIMITS[:, :, 1] - JOINT_LIMITS[:, :, 0]  # (24, 3)
        span[0] = 0.0
        span[_LEAVES] /= 3
        self._noise_span = span

    def sample(self, n: int) -> np.ndarray:
        """(n, 24, 3) float64 axis-angle poses (see the module docstring for the mixture)."""
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n, rng, k = int(n), self.rng, len(self.bases)
        # Draw every random array for all n poses in a fixed order, then select: deterministic.
        mode = rng.choice(3, size=n, p=[P_CANONICAL, P_MIXED, P_RANDOM])
        first = rng.integers(0, k, size=(len(_GROUPS), n))
        same_arms = rng.random(n) < P_SAME_ARMS
        second = rng.integers(0, k, size=(len(_GROUPS), n))
        blend = np.where(rng.random((len(_GROUPS), n)) < P_BLEND, rng.random((len(_GROUPS), n)), 0.0)
        noise = rng.standard_normal((n, NUM_JOINTS, 3)) * rng.uniform(*NOISE_SCALE, size=(n, 1, 1))
        uniform = rng.random((n, NUM_JOINTS, 3))
        amplitude = rng.uniform(*RANDOM_AMPLITUDE, size=(n, 1, 1))
        yaw = rng.uniform(-np.pi, np.pi, size=n)
        tilt_sigma = np.where(rng.random(n) < P_LARGE_TILT, TILT_SIGMA_DEG[1], TILT_SIGMA_DEG[0]) * _D
        tilt = np.clip(rng.standard_normal((n, 2)) * tilt_sigma[:, None], -MAX_TILT_DEG * _D, MAX_TILT_DEG * _D)

        canonical = mode == 0
        first[:, canonical] = first[0, canonical]  # one pose for all groups
        blend[:, canonical] = 0.0
        first[3, same_arms] = first[2, same_arms]
        second[3, same_arms] = second[2, same_arms]
        base_tilt = self.bases[:, 0]
        legs_tilt_differs = np.abs(base_tilt[first[0]] - base_tilt[second[0]]).sum(-1) > 0
        blend[0, legs_tilt_differs] = 0.0

        pose = np.zeros((n, NUM_JOINTS, 3))
        for g, joints in enumerate(_GROUPS.values()):
            w = blend[g][:, None, None]
            pose[:, joints] = (1 - w) * self.bases[first[g]][:, joints] + w * self.bases[second[g]][:, joints]
        pose += noise * self._noise_span

        lo, hi = JOINT_LIMITS[:, :, 0], JOINT_LIMITS[:, :, 1]
        random_pose = (lo + uniform * (hi - lo)) * amplitude
        is_random = mode == 2
        pose[is_random] = random_pose[is_random]
        pose = clip_to_limits(pose)

        base_global = np.where(is_random[:, None], 0.0, base_tilt[first[0]])  # (n, 3)
        pose[:, 0] = _compose_global(yaw, tilt, base_global)
        return pose


def _quat(aa: np.ndarray) -> np.ndarray:
    """(n, 3) axis-angle -> (n, 4) unit quaternions (w, x, y, z)."""
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half) / angle, with its series near 0
    scale = np.where(angle < 1e-6, 0.5 - angle**2 / 48, np.sin(half) / np.where(angle < 1e-6, 1.0, angle))
    return np.concatenate([np.cos(half), aa * scale], axis=-1)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, av, bw, bv = a[:, :1], a[:, 1:], b[:, :1], b[:, 1:]
    return np.concatenate([aw * bw - (av * bv).sum(-1, keepdims=True), aw * bv + bw * av + np.cross(av, bv)], axis=-1)


def _quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = np.where(q[:, :1] < 0, -q, q)  # w >= 0: angle in [0, pi]
    w, v = q[:, :1], q[:, 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    small = s < 1e-8
    ratio = np.where(small, 2.0 / np.maximum(w, 1e-12), 2.0 * np.arctan2(s, w) / np.where(small, 1.0, s))
    return v * ratio


def _compose_global(yaw: np.ndarray, tilt: np.ndarray, base: np.ndarray) -> np.ndarray:
    """R_y(yaw) @ R(pitch, 0, roll) @ R(base) as (n, 3) axis-angle (numpy quaternions: fast)."""
    n = len(yaw)
    yaw_aa = np.zeros((n, 3))
    yaw_aa[:, 1] = yaw
    tilt_aa = np.stack([tilt[:, 0], np.zeros(n), tilt[:, 1]], axis=-1)
    q = _quat_mul(_quat_mul(_quat(yaw_aa), _quat(tilt_aa)), _quat(np.asarray(base, dtype=np.float64)))
    return _quat_to_axis_angle(q)
