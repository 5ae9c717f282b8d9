"""Rule-based pose captions built from posecodes, after the recipe of PoseScript (ECCV 2022).

Pipeline, all vectorised over the batch except the final rendering of the text:

1. normalise: turn the body about the vertical axis so its pelvis faces +z (tilt is kept, so a
   lying body stays lying) and add virtual joints (torso centre, shoulder centre);
2. measure elementary quantities (joint angles, distances, relative positions, segment angles
   to the vertical, heights above the ground, lean, twist), add small uniform noise, then bin;
3. derive facts: a fact is one describable bin of one measurement, or a super-code that
   combines several (kneeling, lying on the back, arms in a T shape, ...);
4. select: drop some very common facts at random, keep rare ones, drop facts implied by other
   stated facts (kneeling already says the knees are on the ground), and keep at most
   `max_facts` per caption, drawn with priorities (posture always, limb detail often);
5. aggregate and render: left+right facts with the same meaning merge into "both ..."; facts
   about the same body part share a sentence; templates, subjects and transitions vary.

The randomness (noise, skipping, wording) of sample i comes from a generator seeded with
(seed, ids[i]), so a caption does not depend on which other poses share its batch.
The templates and word lists are this project's own.

Why one module of ~1,000 lines: the five stages share one vocabulary (the measurement bins, the
fact table and the word lists refer to each other by name), and most of the length is that
table; split across files, every change to a fact would touch three of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from poserft.common.body import JOINT, NUM_JOINTS, neutral_rest_joints

# ---- normalisation ----------------------------------------------------------------------

J = JOINT
VIRTUAL = ("torso", "shoulder_centre")
V = {name: NUM_JOINTS + i for i, name in enumerate(VIRTUAL)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _pelvis_frame(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body axes of the pelvis: lateral (to the body's left), up (towards the spine), forward."""
    lat = _unit(joints[:, J["left_hip"]] - joints[:, J["right_hip"]])
    up = joints[:, J["spine1"]] - joints[:, J["pelvis"]]
    up = _unit(up - (up * lat).sum(-1, keepdims=True) * lat)
    return lat, up, np.cross(lat, up)


def normalize_joints(joints_m: np.ndarray) -> np.ndarray:
    """(N, 24, 3) -> (N, 26, 3): rotated about y so the pelvis faces +z, plus the virtual joints
    torso (mean of pelvis, spine and neck) and shoulder_centre.

    The heading mixes the forward axis with the lateral axis turned by 90 degrees, so it stays
    defined for lying bodies (forward vertical) and bodies on their side (lateral vertical).
    """
    lat, _, fwd = _pelvis_frame(joints_m)
    hx = fwd[:, 0] - 0.5 * lat[:, 2]
    hz = fwd[:, 2] + 0.5 * lat[:, 0]
    yaw = np.arctan2(hx, hz)
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x, y, z = joints_m[..., 0], joints_m[..., 1], joints_m[..., 2]
    out = np.stack([c * x - s * z, y, s * x + c * z], axis=-1)
    torso = out[:, [J["pelvis"], J["spine1"], J["spine2"], J["spine3"], J["neck"]]].mean(1)
    shoulders = out[:, [J["left_shoulder"], J["right_shoulder"]]].mean(1)
    return np.concatenate([out, torso[:, None], shoulders[:, None]], axis=1)


# ---- elementary measurements --------------------------------------------------------------

# kind -> (bin edges, noise half-width). Values equal to an edge fall in the lower bin.
KINDS = {
    "angle": ((45.0, 75.0, 105.0, 135.0, 160.0), 3.0),  # degrees at a joint
    "dist": ((0.20, 0.40, 0.80), 0.015),  # metres between two joints
    "rel": ((-0.15, -0.05, 0.05, 0.15), 0.015),  # metres along one axis (bins 1 and 3 unused)
    "seg": ((10.0, 80.0, 100.0, 170.0), 3.0),  # degrees from pointing up: up/../horizontal/../down
    "ground": ((0.10,), 0.01),  # metres above the lowest joint
    "lean": ((-35.0, -15.0, 15.0, 35.0), 2.0),  # degrees of torso pitch (+ forward) / roll (+ left)
    "turn": ((-20.0, 20.0), 3.0),  # degrees of torso twist / head tilt (+ left or forward)
}
ANGLE_BINS = ("completely_bent", "bent_more", "right_angle", "bent_less", "slightly_bent", "straight")
DIST_BINS = ("close", "shoulder_width", "spread", "wide")
REL_BINS = ("neg", "neg_between", "aligned", "pos_between", "pos")
SEG_BINS = ("up", "up_oblique", "horizontal", "down_oblique", "down")
GROUND_BINS = ("on_ground", "off_ground")
LEAN_BINS = ("far_neg", "neg", "none", "pos", "far_pos")
TURN_BINS = ("neg", "none", "pos")
BIN_NAMES = {
    "angle": ANGLE_BINS,
    "dist": DIST_BINS,
    "rel": REL_BINS,
    "seg": SEG_BINS,
    "ground": GROUND_BINS,
    "lean": LEAN_BINS,
    "turn": TURN_BINS,
}


def _angle_at(j, a, b, c):
    u, v = _unit(j[:, a] - j[:, b]), _unit(j[:, c] - j[:, b])
    return np.degrees(np.arccos(np.clip((u * v).sum(-1), -1.0, 1.0)))


def _from_up(j, a, b):
    return np.degrees(np.arccos(np.clip(_unit(j[:, b] - j[:, a])[:, 1], -1.0, 1.0)))


def _head_offsets(j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head pitch (+ bowed forward) and roll (+ to the left) relative to the upper torso, degrees."""
    lat = _unit(j[:, J["left_shoulder"]] - j[:, J["right_shoulder"]])
    up = j[:, J["neck"]] - j[:, J["spine3"]]
    up = _unit(up - (up * lat).sum(-1, keepdims=True) * lat)
    fwd = np.cross(lat, up)
    h = j[:, J["head"]] - j[:, J["neck"]]
    hu = (h * up).sum(-1)
    return np.degrees(np.arctan2((h * fwd).sum(-1), hu)), np.degrees(np.arctan2((h * lat).sum(-1), hu))


_REST = normalize_joints(neutral_rest_joints()[None])
_REST_HEAD_PITCH, _REST_HEAD_ROLL = (float(a[0]) for a in _head_offsets(_REST))

SIDES = ("left", "right")
LYING_TILT = 55.0  # degrees of the torso from vertical ...
LYING_HEIGHT = 0.35  # ... with the torso centre this close to the ground (m): lying down


def _measurement_specs():
    """(name, kind, function of (joints, ctx), validity) for every elementary measurement.

    validity: None (always), "x"/"z" (the pelvis's lateral/forward axis is within 60 degrees of
    +x/+z, so world x/z mean the body's left/front), "upright" (not lying, not upside down: world
    "above" agrees with the body's "above"), "not_upright" (the opposite).
    """
    specs = []

    def add(name, kind, fn, valid=None):
        specs.append((name, kind, fn, valid))

    def rel(a, b, axis, sign=1.0):
        return lambda j, ctx: sign * (j[:, a, axis] - j[:, b, axis])

    def dist(a, b):
        return lambda j, ctx: np.linalg.norm(j[:, a] - j[:, b], axis=-1)

    def angle(a, b, c):
        return lambda j, ctx: _angle_at(j, J[a], J[b], J[c])

    def along_body(a, b):  # along the body's long axis (pelvis to neck)
        return lambda j, ctx: ((j[:, a] - j[:, b]) * ctx["axis"]).sum(-1)

    for side in SIDES:
        s = 1.0 if side == "left" else -1.0
        o = "right" if side == "left" else "left"
        add(f"{side}_knee_angle", "angle", angle(f"{side}_hip", f"{side}_knee", f"{side}_ankle"))
        add(f"{side}_elbow_angle", "angle", angle(f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"))
        add(f"{side}_hand_to_head", "dist", dist(J[f"{side}_hand"], J["head"]))
        add(f"{side}_hand_to_{o}_shoulder", "dist", dist(J[f"{side}_hand"], J[f"{o}_shoulder"]))
        add(f"{side}_hand_to_knee", "dist", dist(J[f"{side}_hand"], J[f"{side}_knee"]))
        add(f"{side}_hand_to_foot", "dist", dist(J[f"{side}_hand"], J[f"{side}_ankle"]))
        add(f"{side}_hand_to_hip", "dist", dist(J[f"{side}_hand"], J[f"{side}_hip"]))
        add(f"{side}_hand_y_shoulder", "rel", rel(J[f"{side}_hand"], J[f"{side}_shoulder"], 1), "upright")
        add(f"{side}_hand_y_head", "rel", rel(J[f"{side}_hand"], J["head"], 1), "upright")
        add(f"{side}_elbow_y_shoulder", "rel", rel(J[f"{side}_elbow"], J[f"{side}_shoulder"], 1), "upright")
        add(f"{side}_hand_past_head", "rel", along_body(J[f"{side}_hand"], J["head"]), "not_upright")
        add(f"{side}_hand_z_torso", "rel", rel(J[f"{side}_hand"], V["torso"], 2), "z")
        add(f"{side}_elbow_z_torso", "rel", rel(J[f"{side}_elbow"], V["torso"], 2), "z")
        add(f"{side}_hand_x_shoulder", "rel", rel(J[f"{side}_hand"], J[f"{side}_shoulder"], 0, s), "x")
        add(f"{side}_hand_x_centre", "rel", rel(J[f"{side}_hand"], V["shoulder_centre"], 0, s), "x")
        add(f"{side}_knee_y_hip", "rel", rel(J[f"{side}_knee"], J[f"{side}_hip"], 1), "upright")
        add(f"{side}_knee_z_hip", "rel", rel(J[f"{side}_knee"], J[f"{side}_hip"], 2), "z")
        add(f"{side}_foot_z_knee", "rel", rel(J[f"{side}_ankle"], J[f"{side}_knee"], 2), "z")
        add(f"{side}_foot_x_hip", "rel", rel(J[f"{side}_ankle"], J[f"{side}_hip"], 0, s), "x")
        add(f"{side}_thigh", "seg", lambda j, c, s=side: _from_up(j, J[f"{s}_hip"], J[f"{s}_knee"]))
        add(f"{side}_shin", "seg", lambda j, c, s=side: _from_up(j, J[f"{s}_knee"], J[f"{s}_ankle"]))
        add(f"{side}_upper_arm", "seg", lambda j, c, s=side: _from_up(j, J[f"{s}_shoulder"], J[f"{s}_elbow"]))
        add(f"{side}_forearm", "seg", lambda j, c, s=side: _from_up(j, J[f"{s}_elbow"], J[f"{s}_wrist"]))
        add(f"{side}_foot_height", "ground", lambda j, c, s=side: c["foot_h"][s])
        add(f"{side}_knee_height", "ground", lambda j, c, s=side: j[:, J[f"{s}_knee"], 1] - c["floor"])
        add(f"{side}_hand_height", "ground", lambda j, c, s=side: j[:, J[f"{s}_hand"], 1] - c["floor"])
    add("hands_distance", "dist", dist(J["left_hand"], J["right_hand"]))
    add("feet_distance", "dist", dist(J["left_ankle"], J["right_ankle"]))
    add("knees_distance", "dist", dist(J["left_knee"], J["right_knee"]))
    add("hands_y", "rel", rel(J["left_hand"], J["right_hand"], 1))
    add("hands_z", "rel", rel(J["left_hand"], J["right_hand"], 2), "z")
    add("hands_x", "rel", rel(J["left_hand"], J["right_hand"], 0), "x")
    add("feet_y", "rel", rel(J["left_ankle"], J["right_ankle"], 1))
    add("feet_z", "rel", rel(J["left_ankle"], J["right_ankle"], 2), "z")
    add("feet_x", "rel", rel(J["left_ankle"], J["right_ankle"], 0), "x")
    add("torso", "seg", lambda j, c: _from_up(j, J["pelvis"], J["neck"]))
    add("pelvis_height", "ground", lambda j, c: j[:, J["pelvis"], 1] - c["floor"])
    add("lean_pitch", "lean", lambda j, c: c["pitch"], "upright")
    add("lean_roll", "lean", lambda j, c: c["roll"], "upright")
    add("twist", "turn", lambda j, c: c["twist"])
    add("head_pitch", "turn", lambda j, c: c["head"][0] - _REST_HEAD_PITCH)
    add("head_roll", "turn", lambda j, c: c["head"][1] - _REST_HEAD_ROLL)
    return specs


SPECS = _measurement_specs()
MEASUREMENTS = tuple(s[0] for s in SPECS)
M = {name: k for k, name in enumerate(MEASUREMENTS)}
_KIND = [s[1] for s in SPECS]
MEASUREMENT_KIND = dict(zip(MEASUREMENTS, _KIND))  # name -> kind; BIN_NAMES[kind] decodes its bins
NOISE = np.array([KINDS[k][1] for k in _KIND])


def measure(joints_m: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw measurements (N, K) in MEASUREMENTS order, and a context of per-pose masks
    ("x", "z", "upright", "not_upright", "lying") and body-axis components for the rules."""
    j = normalize_joints(joints_m)
    floor = j[:, :NUM_JOINTS, 1].min(1)
    lat, _, fwd = _pelvis_frame(j)
    t = j[:, J["neck"]] - j[:, J["pelvis"]]
    s_lat = j[:, J["left_shoulder"]] - j[:, J["right_shoulder"]]
    ctx = {
        "floor": floor,
        "foot_h": {s: np.minimum(j[:, J[f"{s}_ankle"], 1], j[:, J[f"{s}_foot"], 1]) - floor for s in SIDES},
        "pitch": np.degrees(np.arcsin(np.clip(_unit(t)[:, 2], -1.0, 1.0))),  # towards the front
        "roll": np.degrees(np.arcsin(np.clip(_unit(t)[:, 0], -1.0, 1.0))),  # towards the body's left
        "twist": np.degrees(np.arctan2(-(s_lat * fwd).sum(-1), (s_lat * lat).sum(-1))),
        "head": _head_offsets(j),
        "axis": _unit(t),  # the body's long axis, pelvis to neck
    }
    values = np.stack([fn(j, ctx) for _, _, fn, _ in SPECS], axis=1)
    torso_from_up = values[:, M["torso"]]
    lying = (torso_from_up >= LYING_TILT) & (j[:, V["torso"], 1] - floor <= LYING_HEIGHT)
    upright = (torso_from_up < 120.0) & ~lying
    context = {
        "x": lat[:, 0] >= 0.5,
        "z": fwd[:, 2] >= 0.5,
        "upright": upright,
        "not_upright": ~upright,
        "lying": lying,
        "lat_y": lat[:, 1],  # > 0: the left hip is above the right one
        "fwd_y": fwd[:, 1],  # > 0: the pelvis faces up
    }
    return values, context


def bin_values(values: np.ndarray, valid: dict[str, np.ndarray]) -> np.ndarray:
    """(N, K) measurements -> (N, K) int bins; -1 where the measurement is not meaningful."""
    bins = np.empty(values.shape, dtype=np.int64)
    for kind, (edges, _) in KINDS.items():
        cols = [k for k, kd in enumerate(_KIND) if kd == kind]
        bins[:, cols] = np.digitize(values[:, cols], edges, right=True)
    for k, (_, _, _, v) in enumerate(SPECS):
        if v is not None:
            bins[~valid[v], k] = -1
    return bins


# ---- facts: describable codes and super-codes --------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One statement a caption can make: `<subject> is <phrase>`."""

    key: str
    entity: str  # body part noun ("knee"); "" for the whole person
    side: str | None  # "left", "right", "both" (a left-right pair or a merge) or None
    phrases: tuple[str, ...]  # interchangeable wordings, each fits "X is ..." and "has X ..."
    skip: float = 0.0  # probability of leaving the fact out when it holds
    mirror: str | None = None  # the same fact on the other side, for merging into "both"


_SIDE_WORD = re.compile(r"(?<![a-z])(left|right)(?![a-z])(?! angle)")  # "a right angle" is not a side


def swap_sides(text: str) -> str:
    """Exchange the words left and right (not inside other words such as "upright", nor the
    "right" of "a right angle")."""
    return _SIDE_WORD.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


class _Table:
    """Builder for the fact list, the rules that evaluate them and the implication pairs."""

    def __init__(self):
        self.facts: list[Fact] = []
        self.rules: list = []  # function(bins, values, ctx, truth) -> (N,) bool, in fact order
        self.merged: dict[str, tuple[str, ...]] = {}  # left key -> wording of the merged fact
        self.implies: list[tuple[str, str]] = []  # stating the first makes the second redundant

    def add(self, key, entity, side, phrases, rule, skip=0.0, both=None):
        mirror = swap_sides(key) if side in SIDES and both is not None else None
        if mirror is not None and side == "left":
            self.merged[key] = tuple(both)
        self.facts.append(Fact(key, entity, side, tuple(phrases), skip, mirror))
        self.rules.append(rule)

    def sided(self, key, entity, phrases, rule, skip=0.0, both=None):
        """Add the left fact as written and its mirror with left/right swapped."""
        for side in SIDES:
            tr = (lambda s: s) if side == "left" else swap_sides
            self.add(tr(key), entity, side, [tr(p) for p in phrases], rule(side), skip, both)


def _bin_is(meas, *bins_):
    return lambda b, v, c, t: np.isin(b[:, M[meas]], bins_)


def _side_bin_is(template, *bins_):
    """Rule maker for a sided fact: `template` names the measurement with {s} (side) and {o} (other)."""
    return lambda side: _bin_is(template.format(s=side, o=_other(side)), *bins_)


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


ANGLE_TEXT = (
    ("completely bent", "fully bent", "bent very tightly"),
    ("sharply bent", "deeply bent", "bent past a right angle"),
    ("bent at a right angle", "bent at about ninety degrees", "bent at roughly 90 degrees"),
    ("partly bent", "moderately bent", "bent at an open angle"),
    ("slightly bent", "a little bent", "nearly straight"),
    ("straight", "fully extended", "held straight"),
)


# Sided facts from one bin of one measurement, written for the left side (the right side is the
# mirror): key, entity, measurement ({s} = side, {o} = other side), bin, wording, wording when
# merged with the right side (None: the same), skip probability.
LIMB_RELATIONS = (
    (
        "left_hand_near_head",
        "hand",
        "{s}_hand_to_head",
        0,
        ("close to the head", "near the head", "by the head"),
        ("close to the head", "near the head", "on either side of the head"),
        0.0,
    ),
    (
        "left_hand_near_right_shoulder",
        "hand",
        "{s}_hand_to_{o}_shoulder",
        0,
        ("near the right shoulder", "close to the right shoulder"),
        ("near the opposite shoulders", "each close to the other shoulder"),
        0.0,
    ),
    (
        "left_hand_near_knee",
        "hand",
        "{s}_hand_to_knee",
        0,
        ("near the left knee", "close to the left knee"),
        ("near the knees", "close to the knees"),
        0.0,
    ),
    (
        "left_hand_near_foot",
        "hand",
        "{s}_hand_to_foot",
        0,
        ("near the left foot", "close to the left foot"),
        ("near the feet", "close to the feet"),
        0.0,
    ),
    (
        "left_hand_on_hip",
        "hand",
        "{s}_hand_to_hip",
        0,
        ("on the hip", "resting on the hip", "placed on the hip"),
        ("on the hips", "resting on the hips", "placed on the hips"),
        0.0,
    ),
    (
        "left_hand_below_shoulder",
        "hand",
        "{s}_hand_y_shoulder",
        0,
        ("below shoulder level", "lower than the shoulder"),
        ("below shoulder level", "lower than the shoulders"),
        0.6,
    ),
    (
        "left_hand_at_shoulder",
        "hand",
        "{s}_hand_y_shoulder",
        2,
        ("at shoulder height", "level with the shoulder"),
        ("at shoulder height", "level with the shoulders"),
        0.0,
    ),
    (
        "left_hand_above_shoulder",
        "hand",
        "{s}_hand_y_shoulder",
        4,
        ("raised above shoulder level", "higher than the shoulder"),
        ("raised above shoulder level", "higher than the shoulders"),
        0.0,
    ),
    ("left_hand_at_head", "hand", "{s}_hand_y_head", 2, ("at head height", "level with the head"), None, 0.0),
    (
        "left_hand_above_head",
        "hand",
        "{s}_hand_y_head",
        4,
        ("above the head", "raised above the head", "held up above the head"),
        None,
        0.0,
    ),
    (
        "left_hand_past_head",
        "hand",
        "{s}_hand_past_head",
        4,
        ("stretched out beyond the head", "reaching past the head"),
        None,
        0.0,
    ),
    (
        "left_elbow_at_shoulder",
        "elbow",
        "{s}_elbow_y_shoulder",
        2,
        ("at shoulder height", "level with the shoulder"),
        ("at shoulder height", "level with the shoulders"),
        0.0,
    ),
    (
        "left_elbow_above_shoulder",
        "elbow",
        "{s}_elbow_y_shoulder",
        4,
        ("raised above the shoulder", "higher than the shoulder"),
        ("raised above the shoulders", "higher than the shoulders"),
        0.0,
    ),
    (
        "left_hand_in_front",
        "hand",
        "{s}_hand_z_torso",
        4,
        ("in front of the body", "in front of the torso", "held forward"),
        None,
        0.0,
    ),
    ("left_hand_behind", "hand", "{s}_hand_z_torso", 0, ("behind the back", "behind the body"), None, 0.0),
    ("left_elbow_in_front", "elbow", "{s}_elbow_z_torso", 4, ("in front of the body", "pointing forward"), None, 0.0),
    (
        "left_elbow_behind",
        "elbow",
        "{s}_elbow_z_torso",
        0,
        ("pulled back behind the torso", "pointing backwards"),
        None,
        0.0,
    ),
    (
        "left_hand_out",
        "hand",
        "{s}_hand_x_shoulder",
        4,
        ("out to the side", "held out sideways", "away from the body to the side"),
        ("out to the sides", "held out sideways", "away from the body to the sides"),
        0.0,
    ),
    (
        "left_hand_across",
        "hand",
        "{s}_hand_x_centre",
        0,
        ("across the body", "reaching over to the right side"),
        ("across the body", "reaching over to the opposite side"),
        0.0,
    ),
    (
        "left_knee_above_hip",
        "knee",
        "{s}_knee_y_hip",
        4,
        ("raised above hip level", "lifted higher than the hip"),
        ("raised above hip level", "lifted higher than the hips"),
        0.0,
    ),
    ("left_knee_in_front", "knee", "{s}_knee_z_hip", 4, ("in front of the hips", "brought forward"), None, 0.0),
    ("left_knee_behind", "knee", "{s}_knee_z_hip", 0, ("behind the hips", "drawn back behind the hips"), None, 0.0),
    (
        "left_foot_behind_knee",
        "foot",
        "{s}_foot_z_knee",
        0,
        ("behind the knee", "tucked back behind the knee"),
        ("behind the knees", "tucked back behind the knees"),
        0.0,
    ),
    (
        "left_foot_in_front_of_knee",
        "foot",
        "{s}_foot_z_knee",
        4,
        ("in front of the knee", "ahead of the knee"),
        ("in front of the knees", "ahead of the knees"),
        0.0,
    ),
    (
        "left_foot_out",
        "foot",
        "{s}_foot_x_hip",
        4,
        ("out to the side", "placed out to the side"),
        ("out to the sides", "placed wide to the sides"),
        0.0,
    ),
    (
        "left_foot_across",
        "foot",
        "{s}_foot_x_hip",
        0,
        ("crossed over to the right side", "crossing the midline of the body"),
        ("crossed over to the opposite sides", "crossing the midline of the body"),
        0.0,
    ),
)


def _elementary(tb: _Table) -> None:
    for joint, limb in (("knee", "leg"), ("elbow", "arm")):
        for b, text in enumerate(ANGLE_TEXT):
            name = f"left_{limb}_straight" if b == 5 else f"left_{joint}_{ANGLE_BINS[b]}"
            rule = _side_bin_is(f"{{s}}_{joint}_angle", b)
            tb.sided(name, limb if b == 5 else joint, text, rule, 0.3 if b == 5 else 0.0, text)

    for key, entity, meas, bin_, phrases, merged, skip in LIMB_RELATIONS:
        tb.sided(key, entity, phrases, _side_bin_is(meas, bin_), skip, merged or phrases)

    up = ("pointing straight up", "vertical and pointing up")
    flat = ("horizontal", "parallel to the ground")
    for part, entity, down, skip_down in (
        ("thigh", "thigh", ("vertical", "upright"), 0.7),
        ("shin", "shin", ("vertical", "upright"), 0.7),
        ("upper_arm", "upper arm", ("hanging straight down", "vertical and pointing down"), 0.7),
        ("forearm", "forearm", ("hanging straight down", "vertical and pointing down"), 0.4),
    ):
        tb.sided(f"left_{part}_up", entity, up, _side_bin_is(f"{{s}}_{part}", 0), both=up)
        tb.sided(f"left_{part}_horizontal", entity, flat, _side_bin_is(f"{{s}}_{part}", 2), both=flat)
        tb.sided(f"left_{part}_down", entity, down, _side_bin_is(f"{{s}}_{part}", 4), skip_down, down)

    ground = ("on the ground", "resting on the ground", "touching the floor")
    tb.sided(
        "left_foot_on_ground",
        "foot",
        ("on the ground", "touching the ground", "resting on the floor"),
        _side_bin_is("{s}_foot_height", 0),
        0.5,
        ("on the ground", "touching the ground", "resting on the floor"),
    )
    tb.sided("left_knee_on_ground", "knee", ground, _side_bin_is("{s}_knee_height", 0), both=ground)
    tb.sided("left_hand_on_ground", "hand", ground, _side_bin_is("{s}_hand_height", 0), both=ground)
    tb.add("hips_on_ground", "hips", None, ("on the ground", "resting on the ground"), _bin_is("pelvis_height", 0))

    # left-right pairs: the subject is already both parts, so nothing to merge
    dist_text = {
        "hands": (
            ("close together", "near each other"),
            ("about shoulder-width apart", "roughly a shoulder width apart"),
            ("spread apart", "held apart"),
            ("wide apart", "far apart from each other"),
        ),
        "feet": (
            ("close together", "next to each other"),
            ("shoulder-width apart", "about a shoulder width apart"),
            ("spread apart", "set apart"),
            ("wide apart", "spread wide"),
        ),
        "knees": (
            ("close together", "near each other"),
            ("about shoulder-width apart", "a shoulder width apart"),
            ("spread apart", "held apart"),
            ("wide apart", "spread wide"),
        ),
    }
    for pair, entity in (("hands", "hand"), ("feet", "foot"), ("knees", "knee")):
        for b, text in enumerate(dist_text[pair]):
            skip = 0.3 if (pair, b) == ("feet", 1) else 0.0
            tb.add(f"{pair}_{DIST_BINS[b]}", entity, "both", text, _bin_is(f"{pair}_distance", b), skip)
    tb.add("hands_crossed", "hand", "both", ("crossed", "crossed over each other"), _bin_is("hands_x", 0))
    tb.add("legs_crossed", "leg", "both", ("crossed", "crossed over each other"), _bin_is("feet_x", 0, 1))
    for side, b in (("left", 4), ("right", 0)):
        o = "right" if side == "left" else "left"
        tb.add(
            f"{side}_hand_higher",
            "hand",
            side,
            (f"higher than the {o} one", f"higher than the {o} hand"),
            _bin_is("hands_y", b),
        )
        tb.add(
            f"{side}_hand_forward",
            "hand",
            side,
            (f"further forward than the {o} one", f"ahead of the {o} hand"),
            _bin_is("hands_z", b),
        )
        tb.add(
            f"{side}_foot_higher",
            "foot",
            side,
            (f"higher than the {o} one", f"raised higher than the {o} foot"),
            _bin_is("feet_y", b),
        )
        tb.add(
            f"{side}_foot_forward",
            "foot",
            side,
            (f"in front of the {o} one", f"ahead of the {o} foot"),
            _bin_is("feet_z", b),
        )

    tb.add("torso_upright", "torso", None, ("upright", "vertical", "held straight up"), _bin_is("torso", 0), 0.5)
    tb.add("torso_horizontal", "torso", None, ("horizontal", "parallel to the ground"), _bin_is("torso", 2))
    tb.add("torso_twist_left", "torso", None, ("twisted to the left", "turned to the left"), _bin_is("twist", 2))
    tb.add("torso_twist_right", "torso", None, ("twisted to the right", "turned to the right"), _bin_is("twist", 0))
    tb.add(
        "head_forward",
        "head",
        None,
        ("bowed forward", "tilted forward", "bent down towards the chest"),
        _bin_is("head_pitch", 2),
    )
    tb.add("head_back", "head", None, ("tilted back", "tipped backwards"), _bin_is("head_pitch", 0))
    tb.add("head_left", "head", None, ("tilted to the left", "leaning to the left"), _bin_is("head_roll", 2))
    tb.add("head_right", "head", None, ("tilted to the right", "leaning to the right"), _bin_is("head_roll", 0))
    tb.add("lean_far_back", "", None, ("leaning far back", "leaning well backwards"), _bin_is("lean_pitch", 0))
    tb.add("lean_back", "", None, ("leaning back", "leaning slightly backwards"), _bin_is("lean_pitch", 1))
    tb.add("lean_forward", "", None, ("leaning forward", "tilting the upper body forward"), _bin_is("lean_pitch", 3))
    tb.add("lean_far_forward", "", None, ("bending far forward", "bent forward at the waist"), _bin_is("lean_pitch", 4))
    tb.add("lean_left", "", None, ("leaning to the left", "tilting sideways to the left"), _bin_is("lean_roll", 3, 4))
    tb.add(
        "lean_right", "", None, ("leaning to the right", "tilting sideways to the right"), _bin_is("lean_roll", 0, 1)
    )


def _super(tb: _Table) -> None:
    """Super-codes: combinations of elementary measurements with their own wording."""

    def col(a, name):
        return a[:, M[name]]

    def lying_on(kind):
        def rule(b, v, c, t):
            f, lat = c["fwd_y"], c["lat_y"]
            facing = {"back": f >= 0.6, "front": f <= -0.6, "right": lat >= 0.6, "left": lat <= -0.6}
            facing["other"] = (np.abs(f) < 0.6) & (np.abs(lat) < 0.6)
            return c["lying"] & facing[kind]

        return rule

    tb.add(
        "lying_back", "", None, ("lying on their back", "lying face up", "lying flat on their back"), lying_on("back")
    )
    tb.add("lying_front", "", None, ("lying face down", "lying on their stomach", "lying prone"), lying_on("front"))
    tb.add("lying_left", "", None, ("lying on their left side", "lying down on the left side"), lying_on("left"))
    tb.add("lying_right", "", None, ("lying on their right side", "lying down on the right side"), lying_on("right"))
    tb.add("lying_other", "", None, ("lying down", "lying on the ground"), lying_on("other"))
    tb.add(
        "upside_down",
        "",
        None,
        ("upside down, with the head below the hips", "upside down"),
        lambda b, v, c, t: (col(v, "torso") >= 135.0) & ~c["lying"],
    )

    def kneeling(b, v, c, t):
        knees = t["left_knee_on_ground"] & t["right_knee_on_ground"]
        bent = (col(b, "left_knee_angle") <= 3) & (col(b, "right_knee_angle") <= 3)
        return knees & bent & ~c["lying"] & ~t["hips_on_ground"]

    def all_fours(b, v, c, t):
        return kneeling(b, v, c, t) & t["left_hand_on_ground"] & t["right_hand_on_ground"]

    tb.add("all_fours", "", None, ("on all fours", "on their hands and knees", "down on all fours"), all_fours)
    tb.add(
        "kneeling",
        "",
        None,
        ("kneeling", "kneeling on both knees", "on their knees"),
        lambda b, v, c, t: kneeling(b, v, c, t) & ~all_fours(b, v, c, t),
    )

    def kneel_one(side):
        o = _other(side)
        return lambda b, v, c, t: (
            t[f"{side}_knee_on_ground"]
            & (col(b, f"{side}_knee_angle") <= 3)
            & ~t[f"{o}_knee_on_ground"]
            & t[f"{o}_foot_on_ground"]
            & ~c["lying"]
            & ~t["hips_on_ground"]
        )

    for side in SIDES:
        tb.add(
            f"kneel_on_{side}", "", None, (f"kneeling on the {side} knee", f"down on the {side} knee"), kneel_one(side)
        )

    def squat(b, v, c, t):
        deep = (col(b, "left_knee_angle") <= 1) & (col(b, "right_knee_angle") <= 1)
        feet = t["left_foot_on_ground"] & t["right_foot_on_ground"]
        knees_up = ~t["left_knee_on_ground"] & ~t["right_knee_on_ground"]
        low = col(v, "pelvis_height") <= 0.55
        return deep & feet & knees_up & low & ~t["hips_on_ground"] & (col(v, "torso") < 70.0)

    tb.add("squatting", "", None, ("squatting", "crouching down", "in a deep squat"), squat)
    tb.add(
        "sitting_ground",
        "",
        None,
        ("sitting on the ground", "seated on the floor"),
        lambda b, v, c, t: t["hips_on_ground"] & (col(v, "torso") < 55.0),
    )

    def seated(b, v, c, t):
        thighs = (np.abs(col(v, "left_thigh") - 90.0) <= 30.0) & (np.abs(col(v, "right_thigh") - 90.0) <= 30.0)
        shins = (col(v, "left_shin") >= 145.0) & (col(v, "right_shin") >= 145.0)
        upright = col(v, "torso") < 35.0
        return thighs & shins & upright & ~t["hips_on_ground"] & ~kneeling(b, v, c, t) & ~squat(b, v, c, t)

    tb.add("seated", "", None, ("in a seated position", "sitting as if on a chair", "in a sitting posture"), seated)

    def standing(b, v, c, t):
        foot = t["left_foot_on_ground"] | t["right_foot_on_ground"]
        knees_up = ~t["left_knee_on_ground"] & ~t["right_knee_on_ground"]
        return (col(v, "pelvis_height") >= 0.7) & (col(v, "torso") <= 100.0) & foot & knees_up

    def on_one_leg(side):
        return lambda b, v, c, t: (
            standing(b, v, c, t) & t[f"{side}_foot_on_ground"] & (col(v, f"{_other(side)}_foot_height") >= 0.15)
        )

    def feet_apart(b, v, c, t):
        both_feet = t["left_foot_on_ground"] & t["right_foot_on_ground"]
        return standing(b, v, c, t) & both_feet & t["feet_shoulder_width"]

    def standing_plain(b, v, c, t):
        special = on_one_leg("left")(b, v, c, t) | on_one_leg("right")(b, v, c, t) | feet_apart(b, v, c, t)
        return standing(b, v, c, t) & ~special

    tb.add("standing", "", None, ("standing", "standing upright", "on their feet"), standing_plain, 0.5)
    apart = ("standing with the feet shoulder-width apart", "standing with feet about a shoulder width apart")
    tb.add("standing_feet_apart", "", None, apart, feet_apart)
    for side in SIDES:
        tb.add(
            f"standing_on_{side}",
            "",
            None,
            (f"standing on the {side} leg", f"balancing on the {side} leg", f"standing on the {side} foot"),
            on_one_leg(side),
        )

    def lunge(side):
        o, sign = _other(side), (1.0 if side == "left" else -1.0)

        def rule(b, v, c, t):
            raised = col(v, f"{side}_thigh") <= 135.0  # at least 45 degrees from hanging down
            front = (col(b, f"{side}_knee_angle") <= 3) & raised & (col(b, f"{side}_knee_z_hip") == 4)
            back = (col(v, f"{o}_knee_angle") >= 120.0) & (col(b, f"{o}_knee_z_hip") == 0)
            spread = c["z"] & (sign * col(v, "feet_z") >= 0.5)
            planted = t[f"{side}_foot_on_ground"] & (t[f"{o}_foot_on_ground"] | t[f"{o}_knee_on_ground"])
            return front & back & spread & planted & (col(v, "torso") <= 45.0)

        return rule

    for side in SIDES:
        tb.add(
            f"lunge_{side}",
            "",
            None,
            (f"in a lunge with the {side} leg forward", f"lunging forward on the {side} leg"),
            lunge(side),
        )

    # whole-limb codes (entity merge: upper arm + forearm + elbow -> arm, thigh + knee -> leg)
    def arm(kind):
        def make(side):
            def rule(b, v, c, t):
                straight = col(b, f"{side}_elbow_angle") >= 4
                if kind == "up":
                    return straight & (col(v, f"{side}_upper_arm") <= 25.0) & t[f"{side}_hand_above_head"]
                if kind == "down":  # "along the body" needs an upright torso
                    hanging = (col(v, f"{side}_upper_arm") >= 160.0) & (col(v, f"{side}_forearm") >= 155.0)
                    return straight & hanging & (col(v, "torso") <= 30.0)
                flat = t[f"{side}_upper_arm_horizontal"] & t[f"{side}_forearm_horizontal"] & straight
                if kind == "side":
                    return flat & t[f"{side}_hand_out"]
                return flat & t[f"{side}_hand_in_front"] & ~t[f"{side}_hand_out"]

            return rule

        return make

    up = ("raised straight up above the head", "stretched straight up above the head")
    tb.sided("left_arm_up", "arm", up, arm("up"), both=up)
    tb.sided(
        "left_arm_side",
        "arm",
        ("stretched out horizontally to the side", "held out sideways at shoulder height"),
        arm("side"),
        both=(
            "spread out horizontally to the sides in a T shape",
            "stretched horizontally out to the sides like a letter T",
        ),
    )
    front = ("stretched out horizontally in front", "held straight out in front at shoulder height")
    tb.sided("left_arm_front", "arm", front, arm("front"), both=front)
    tb.sided(
        "left_arm_down",
        "arm",
        ("hanging down by the side", "resting straight down along the body"),
        arm("down"),
        0.4,
        ("hanging down by the sides", "resting straight down along the body"),
    )

    def leg(kind):
        def make(side):
            def rule(b, v, c, t):
                straight_raised = (col(b, f"{side}_knee_angle") >= 4) & (col(v, f"{side}_thigh") <= 130.0)
                return straight_raised & (col(b, f"{side}_knee_z_hip") == (4 if kind == "front" else 0)) & ~c["lying"]

            return rule

        return make

    tb.sided(
        "left_leg_front",
        "leg",
        ("stretched out forward", "raised straight out in front"),
        leg("front"),
        both=("stretched out forward", "raised straight out in front"),
    )
    tb.sided(
        "left_leg_back",
        "leg",
        ("stretched out behind", "extended backwards"),
        leg("back"),
        both=("stretched out behind", "extended backwards"),
    )


def _implications(tb: _Table) -> None:
    imp = tb.implies.append
    for kind in ("back", "front", "left", "right", "other"):
        for b in ("hips_on_ground", "torso_horizontal", "sitting_ground", "lying_other"):
            imp((f"lying_{kind}", b))
    for b in ("kneeling", "left_knee_on_ground", "right_knee_on_ground", "left_hand_on_ground", "right_hand_on_ground"):
        imp(("all_fours", b))
    for b in ("left_knee_on_ground", "right_knee_on_ground"):
        imp(("kneeling", b))
    imp(("sitting_ground", "hips_on_ground"))
    for b in ("left_foot_on_ground", "right_foot_on_ground"):
        imp(("squatting", b))
        imp(("standing_feet_apart", b))
    imp(("standing_feet_apart", "feet_shoulder_width"))
    for s in ("standing", "standing_feet_apart", "standing_on_left", "standing_on_right"):
        imp((s, "torso_upright"))
    for side in SIDES:
        o = _other(side)
        imp((f"kneel_on_{side}", f"{side}_knee_on_ground"))
        imp((f"kneel_on_{side}", f"{o}_foot_on_ground"))
        imp((f"standing_on_{side}", f"{side}_foot_on_ground"))
        imp((f"standing_on_{side}", f"{o}_foot_higher"))
        imp((f"lunge_{side}", f"{side}_foot_forward"))
        imp(("seated", f"{side}_thigh_horizontal"))
        imp(("seated", f"{side}_shin_down"))
        straight = (f"{side}_elbow_slightly_bent", f"{side}_arm_straight")
        for b in (
            *straight,
            f"{side}_hand_above_head",
            f"{side}_hand_above_shoulder",
            f"{side}_elbow_above_shoulder",
            f"{side}_upper_arm_up",
            f"{side}_forearm_up",
        ):
            imp((f"{side}_arm_up", b))
        imp((f"{side}_arm_front", f"{side}_elbow_in_front"))
        for kind, extra in (("side", f"{side}_hand_out"), ("front", f"{side}_hand_in_front")):
            for b in (
                *straight,
                extra,
                f"{side}_upper_arm_horizontal",
                f"{side}_forearm_horizontal",
                f"{side}_hand_at_shoulder",
                f"{side}_elbow_at_shoulder",
            ):
                imp((f"{side}_arm_{kind}", b))
        for b in (*straight, f"{side}_upper_arm_down", f"{side}_forearm_down", f"{side}_hand_below_shoulder"):
            imp((f"{side}_arm_down", b))
        for kind, extra in (("front", f"{side}_knee_in_front"), ("back", f"{side}_knee_behind")):
            for b in (f"{side}_knee_slightly_bent", f"{side}_leg_straight", f"{side}_thigh_horizontal", extra):
                imp((f"{side}_leg_{kind}", b))
        imp((f"{side}_leg_front", f"{side}_foot_in_front_of_knee"))
        imp((f"{side}_leg_back", f"{side}_foot_behind_knee"))
        imp(("legs_crossed", f"{side}_foot_across"))
        imp((f"{side}_hand_above_head", f"{side}_hand_above_shoulder"))
        imp((f"{side}_hand_at_head", f"{side}_hand_above_shoulder"))
        imp((f"{side}_hand_on_ground", f"{side}_hand_below_shoulder"))


def _build_table() -> _Table:
    tb = _Table()
    _elementary(tb)
    _super(tb)
    _implications(tb)
    keys = [f.key for f in tb.facts]
    if len(set(keys)) != len(keys):
        raise RuntimeError("captioner fact table has duplicate keys")
    unknown = {k for pair in tb.implies for k in pair} - set(keys)
    if unknown:
        raise RuntimeError(f"captioner implications name unknown facts: {sorted(unknown)}")
    return tb


_TABLE = _build_table()
FACTS: tuple[Fact, ...] = tuple(_TABLE.facts)
FACT_KEYS: tuple[str, ...] = tuple(f.key for f in FACTS)
F = {k: i for i, k in enumerate(FACT_KEYS)}
_IMPLY = np.zeros((len(FACTS), len(FACTS)), dtype=np.float32)
for _a, _b in _TABLE.implies:
    _IMPLY[F[_a], F[_b]] = 1.0
_SKIP = np.array([f.skip for f in FACTS])
# a fact and its mirror share one random draw, so "left" and "right" are skipped together
_DRAW = np.array([F[f.mirror] if f.mirror and f.side == "right" else i for i, f in enumerate(FACTS)])
# merged facts ("both knees are bent"), appended after the side facts
_MERGES = [(F[k], F[FACTS[F[k]].mirror]) for k in _TABLE.merged]
MERGED: tuple[Fact, ...] = tuple(
    Fact("both" + k[len("left") :], FACTS[F[k]].entity, "both", _TABLE.merged[k]) for k in _TABLE.merged
)
ALL_FACTS = FACTS + MERGED

# When a caption holds more facts than its budget, facts are drawn without replacement with
# these weights (first matching pattern wins): posture is always said, the detail of the
# limbs usually, and the most common or redundant facts least often.
PRIORITY = (
    (r"^(lying|upside|all_fours|kneel|squatting|sitting|seated|standing_|lunge)", np.inf),
    (r"_arm_(up|side|front)$|_leg_(front|back)$|crossed$", 4.0),
    (r"^lean_|near_|on_hip|_above_head|_past_head|_at_head|_(knee|hand)_on_ground|hips_on_ground", 3.0),
    (r"_(knee|elbow)_(completely_bent|bent_more|right_angle|bent_less)$|_twist_|_across$", 3.0),
    (r"_(knee|elbow)_slightly_bent$|_horizontal$|_up$|_out$|_behind$|_in_front$|^head_", 2.0),
    (r"_(higher|forward)$|_down$|_below_shoulder$|_foot_on_ground$|^standing$|_upright$", 0.5),
    (r".", 1.0),
)
_PRIORITY = np.array([next(w for pat, w in PRIORITY if re.search(pat, f.key)) for f in ALL_FACTS])


def evaluate_facts(bins: np.ndarray, values: np.ndarray, ctx: dict) -> np.ndarray:
    """(N, K) bins and values -> (N, len(FACTS)) bool: which facts hold."""
    truth: dict[str, np.ndarray] = {}
    for fact, rule in zip(FACTS, _TABLE.rules):
        truth[fact.key] = np.asarray(rule(bins, values, ctx, truth), dtype=bool)
    return np.stack([truth[k] for k in FACT_KEYS], axis=1)


def remove_implied(stated: np.ndarray) -> np.ndarray:
    """Drop every fact that another stated fact already implies."""
    return stated & ~((stated.astype(np.float32) @ _IMPLY) > 0)


def merge_sides(stated: np.ndarray) -> np.ndarray:
    """(N, len(FACTS)) -> (N, len(ALL_FACTS)): left+right pairs become one 'both' fact."""
    out = np.concatenate([stated, np.zeros((stated.shape[0], len(MERGED)), dtype=bool)], axis=1)
    for m, (left, right) in enumerate(_MERGES):
        both = stated[:, left] & stated[:, right]
        out[:, len(FACTS) + m] = both
        out[:, left] &= ~both
        out[:, right] &= ~both
    return out


# ---- rendering --------------------------------------------------------------------------

PLURAL = {
    "knee": "knees",
    "foot": "feet",
    "hand": "hands",
    "elbow": "elbows",
    "arm": "arms",
    "leg": "legs",
    "thigh": "thighs",
    "shin": "shins",
    "upper arm": "upper arms",
    "forearm": "forearms",
}
SYNONYMS = {
    "forearm": ("forearm", "lower arm"),
    "shin": ("shin", "lower leg"),
    "torso": ("torso", "upper body", "trunk"),
}
REGION = {
    "": "body",
    "torso": "torso",
    "head": "head",
    "hips": "legs",
    "leg": "legs",
    "knee": "legs",
    "thigh": "legs",
    "shin": "legs",
    "foot": "legs",
    "arm": "arms",
    "elbow": "arms",
    "upper arm": "arms",
    "forearm": "arms",
    "hand": "arms",
}
ENTITY_ORDER = {
    "leg": 0,
    "knee": 1,
    "thigh": 2,
    "shin": 3,
    "foot": 4,
    "hips": 5,
    "arm": 0,
    "elbow": 1,
    "upper arm": 2,
    "forearm": 3,
    "hand": 4,
    "torso": 0,
    "head": 0,
    "": 0,
}
BODY_NOUNS = ("the person", "the figure", "this person", "the subject", "the individual")
GENERIC_TRANSITIONS = ("Also, ", "In addition, ", "Moreover, ", "Meanwhile, ", "Furthermore, ")
REGION_TRANSITIONS = ("As for the {r}, ", "Looking at the {r}, ", "Regarding the {r}, ", "When it comes to the {r}, ")
_PAIR_FACTS = {i for i, f in enumerate(ALL_FACTS) if f.side == "both" and i < len(FACTS)}
_BODY_LAST = {i for i, f in enumerate(FACTS) if f.key.startswith("lean_")}


class _Dice:
    """Cheap consumer of a pre-drawn list of uniforms (one list per sample)."""

    __slots__ = ("u", "i")

    def __init__(self, u: list[float]):
        self.u, self.i = u, 0

    def random(self) -> float:
        x = self.u[self.i % len(self.u)]
        self.i += 1
        return x

    def pick(self, seq):
        return seq[int(self.random() * len(seq))]


def _and_join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _noun(entity: str, d: _Dice, plural: bool = False) -> str:
    name = d.pick(SYNONYMS[entity]) if entity in SYNONYMS else entity
    if not plural:
        return name
    return " ".join(name.split()[:-1] + [PLURAL[name.split()[-1]]]) if name.split()[-1] in PLURAL else name


def _subject(entity: str, side: str | None, pair: bool, d: _Dice, possessive: bool) -> tuple[str, bool]:
    """Noun phrase for a body part, and whether it is plural."""
    if side in SIDES:
        det = d.pick(("their", "the")) if possessive else d.pick(("the", "the", "their"))
        return f"{det} {side} {_noun(entity, d)}", False
    if side == "both":
        pl = _noun(entity, d, plural=True)
        if pair:
            return d.pick((f"the {pl}", f"their {pl}", f"the two {pl}")), True
        return d.pick((f"both {pl}", f"the {pl}", f"their {pl}", f"both of their {pl}")), True
    return f"{d.pick(('the', 'their'))} {_noun(entity, d)}", entity == "hips"


class _Writer:
    """Turns one sample's stated facts into a paragraph."""

    def __init__(self, d: _Dice):
        self.d = d
        self.noun = d.pick(BODY_NOUNS)
        self.mentioned = False

    def person(self) -> tuple[str, str, str]:
        if self.mentioned and self.d.random() < 0.6:
            return "they", "are", "have"
        self.mentioned = True
        return self.noun, "is", "has"

    def phrases(self, facts: list[int]) -> str:
        """One wording per fact, joined; avoids starting two of them with the same word."""
        out, first_words = [], set()
        for i in facts:
            options = ALL_FACTS[i].phrases
            k = int(self.d.random() * len(options))
            for step in range(len(options)):
                text = options[(k + step) % len(options)]
                if text.split(" ", 1)[0] not in first_words:
                    break
            first_words.add(text.split(" ", 1)[0])
            out.append(text)
        return _and_join(out)

    def body_clauses(self, facts: list[int]) -> list[str]:
        facts = sorted(facts, key=lambda i: i in _BODY_LAST)
        out = []
        for k in range(0, len(facts), 3):
            subj, be, _ = self.person()
            out.append(f"{subj} {be} {self.phrases(facts[k : k + 3])}")
        return out

    def part_clauses(self, groups: list[tuple[tuple, list[int]]]) -> list[str]:
        d = self.d
        single = all(len(ix) == 1 for _, ix in groups)
        if 2 <= len(groups) <= 3 and single and d.random() < 0.35:  # "they have their X ..., their Y ... and ..."
            subj, _, have = self.person()
            parts = []
            for (entity, side), ix in groups:
                np_, _ = _subject(entity, side, any(i in _PAIR_FACTS for i in ix), d, possessive=True)
                parts.append(f"{np_} {self.phrases(ix)}")
            return [f"{subj} {have} {_and_join(parts)}"]
        clauses, sides, open_ = [], [], []
        for (entity, side), ix in groups:
            for k in range(0, len(ix), 3):
                text = self.phrases(ix[k : k + 3])
                if side in SIDES and clauses and open_[-1] and sides[-1] == side and d.random() < 0.6:
                    # entity merge within one limb: "the left elbow is bent, with the hand above the head"
                    clauses[-1] += f", with {d.pick(('the', f'the {side}'))} {_noun(entity, d)} {text}"
                    open_[-1] = False
                    continue
                np_, plural = _subject(entity, side, any(i in _PAIR_FACTS for i in ix), d, possessive=False)
                clauses.append(f"{np_} {'are' if plural else 'is'} {text}")
                sides.append(side)
                open_.append(True)
        out, k = [], 0
        while k < len(clauses):  # join some left/right neighbours into one sentence
            pair = sides[k : k + 2]
            if len(pair) == 2 and set(pair) == set(SIDES) and d.random() < 0.4:
                out.append(clauses[k] + d.pick((", while ", ", and ", "; ")) + clauses[k + 1])
                k += 2
            else:
                out.append(clauses[k])
                k += 1
        return out

    def paragraph(self, facts: list[int]) -> str:
        d = self.d
        by_region: dict[str, dict[tuple, list[int]]] = {}
        for i in facts:
            f = ALL_FACTS[i]
            by_region.setdefault(REGION[f.entity], {}).setdefault((f.entity, f.side), []).append(i)
        rank = {"left": 0, "right": 1, "both": 2, None: 0}
        if d.random() < 0.5:
            rank["left"], rank["right"] = 1, 0
        if d.random() < 0.4:
            rank["both"] = -1
        limbs = ["legs", "arms"] if d.random() < 0.5 else ["arms", "legs"]
        order = ["body", "torso", *limbs, "head"] if d.random() < 0.6 else ["body", "torso", "head", *limbs]
        sentences = []
        for region in order:
            groups = by_region.get(region)
            if not groups:
                continue
            if region == "body":
                clauses = self.body_clauses(groups[("", None)])
            else:
                items = sorted(groups.items(), key=lambda kv: (rank[kv[0][1]], ENTITY_ORDER[kv[0][0]]))
                clauses = self.part_clauses(items)
            for n, clause in enumerate(clauses):
                prefix = ""
                if sentences and n == 0 and region in ("legs", "arms") and d.random() < 0.3:
                    prefix = d.pick(REGION_TRANSITIONS).format(r=region)
                elif sentences and d.random() < 0.12:
                    prefix = d.pick(GENERIC_TRANSITIONS)
                sentences.append(_cap(prefix + clause) + ".")
        if not sentences:
            return _cap(self.noun) + " is in a neutral pose without any notable feature."
        return " ".join(sentences)


# ---- public API ---------------------------------------------------------------------------


@dataclass
class FactTable:
    """Facts per pose: `true[i, f]` holds for pose i; `stated[i, f]` is said by caption i.

    Columns follow FACT_KEYS (side facts; a caption's "both" wording states both side facts).
    """

    keys: tuple[str, ...]
    true: np.ndarray  # (N, F) bool
    stated: np.ndarray  # (N, F) bool


_RENDER_DRAWS = 128


def check_joints(joints_m, name: str = "joints_m") -> np.ndarray:
    try:
        arr = np.asarray(joints_m, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float array of shape (N, 24, 3), got {type(joints_m).__name__}") from None
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must have shape (N, 24, 3) in metres, got {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN/inf values (shape {tuple(arr.shape)})")
    return arr


def check_ids(ids, n: int) -> list[int]:
    if ids is None:
        return list(range(n))
    out = list(ids)
    if len(out) != n:
        raise ValueError(f"ids must have one entry per pose: got {len(out)} ids for joints_m of shape ({n}, 24, 3)")
    for i in out:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"ids must be non-negative integers, got {i!r}")
    return [int(i) for i in out]


class Captioner:
    """Posecode captioner. `caption(joints_m, ids)` -> one paragraph per pose.

    Sample i draws all its randomness (measurement noise, which common facts to skip, wording)
    from `np.random.default_rng([seed, ids[i]])`, so its caption depends only on (seed, ids[i],
    joints_m[i]). Without ids, the position in the batch is used as the id.
    `noise=False` bins the exact measurements; `skip=False` keeps every fact that holds.
    """

    def __init__(self, seed: int = 0, noise: bool = True, skip: bool = True, max_facts: int = 12):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(max_facts, (int, np.integer)) or max_facts < 1:
            raise ValueError(f"max_facts must be a positive integer, got {max_facts!r}")
        self.seed, self.noise, self.skip, self.max_facts = int(seed), bool(noise), bool(skip), int(max_facts)

    def _uniforms(self, ids: list[int]) -> np.ndarray:
        """Per sample: noise (K) | skip draws (F) | budget draws (F + merged) | wording draws."""
        width = len(MEASUREMENTS) + len(FACTS) + len(ALL_FACTS) + _RENDER_DRAWS
        if not ids:
            return np.zeros((0, width))
        return np.stack([np.random.default_rng([self.seed, i]).random(width) for i in ids])

    def _evaluate(self, joints: np.ndarray, u: np.ndarray | None):
        values, ctx = measure(joints)
        if u is not None and self.noise:
            values = values + (2.0 * u[:, : len(MEASUREMENTS)] - 1.0) * NOISE
        bins = bin_values(values, ctx)
        return values, bins, evaluate_facts(bins, values, ctx)

    def _state(self, truth: np.ndarray, u: np.ndarray) -> np.ndarray:
        stated = truth
        if self.skip:
            draws = u[:, len(MEASUREMENTS) : len(MEASUREMENTS) + len(FACTS)][:, _DRAW]
            stated = truth & (draws >= _SKIP)
        stated = remove_implied(stated)
        empty = ~stated.any(1)
        if empty.any():  # never leave a caption empty because of skipping
            stated[empty] = remove_implied(truth[empty])
        return stated

    def _shown(self, truth: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Side facts that hold -> (N, len(ALL_FACTS)) facts a caption states, merged and within budget."""
        shown = merge_sides(self._state(truth, u))
        start = len(MEASUREMENTS) + len(FACTS)
        with np.errstate(divide="ignore"):
            key = np.log(np.maximum(u[:, start : start + len(ALL_FACTS)], 1e-12)) / _PRIORITY
        key = np.where(shown, key, -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(order.shape[1])[None], axis=1)
        return shown & (rank < self.max_facts)

    def caption(self, joints_m: np.ndarray, ids=None) -> list[str]:
        """(N, 24, 3) joints in metres (any facing direction) -> N captions."""
        joints = check_joints(joints_m)
        ids = check_ids(ids, joints.shape[0])
        if not ids:
            return []
        u = self._uniforms(ids)
        _, _, truth = self._evaluate(joints, u)
        shown = self._shown(truth, u)
        render_u = u[:, -_RENDER_DRAWS:].tolist()
        return [_Writer(_Dice(render_u[n])).paragraph(np.flatnonzero(shown[n]).tolist()) for n in range(len(ids))]

    def posecodes(self, joints_m: np.ndarray, ids=None) -> dict[str, np.ndarray]:
        """Binned codes by name: each measurement -> (N,) int bin (-1: not meaningful for this
        pose; decode with BIN_NAMES[MEASUREMENT_KIND[name]]); each fact (elementary or super-code)
        as "fact/<key>" -> (N,) bool. Exact values without ids; with ids, the noisy values that
        the captions of those ids use."""
        joints = check_joints(joints_m)
        u = None if ids is None else self._uniforms(check_ids(ids, joints.shape[0]))
        _, bins, truth = self._evaluate(joints, u)
        out = {name: bins[:, k] for k, name in enumerate(MEASUREMENTS)}
        out.update({f"fact/{key}": truth[:, f] for f, key in enumerate(FACT_KEYS)})
        return out

    def facts(self, joints_m: np.ndarray, ids=None) -> FactTable:
        """What holds (exact measurements) and what each caption states (for ambiguity studies)."""
        joints = check_joints(joints_m)
        ids = check_ids(ids, joints.shape[0])
        u = self._uniforms(ids)
        _, _, exact = self._evaluate(joints, None)
        _, _, noisy = self._evaluate(joints, u)
        shown = self._shown(noisy, u)
        stated = shown[:, : len(FACTS)].copy()
        for m, (left, right) in enumerate(_MERGES):
            stated[:, left] |= shown[:, len(FACTS) + m]
            stated[:, right] |= shown[:, len(FACTS) + m]
        return FactTable(FACT_KEYS, exact, stated)
