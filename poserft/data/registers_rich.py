"""Richer everyday registers for the synthetic captions (`data.caption_registers: rich`, which the
demo config uses; `poserft.data.dataset` adds them as extra train rows beside the paragraphs).

`poserft.data.registers` names a pose only when the whole body is near one canonical pose, with
two or three names each. This module adds, per pose id (same seed and id, same caption):
- whole-body names: the names of `registers.NAMES` plus more synonyms and activity words of ours
  (`MORE_NAMES`), and with `everyday` (`data.caption_registers: everyday`) the 375 phrasings of
  `poserft.data.everyday_phrases` too, inside short frames ("someone ...", "a person ...");
- part descriptions for the prior's mixed poses: the legs, the trunk and each arm are matched
  (joint angles, scaled by the prior's ranges) to the canonical pose whose part they are nearest
  to, and the parts that have a phrase are joined ("squatting, both arms up over the head");
  lying and face-down bodies are named from the joints (the trunk's direction);
- clause dropout: one to three sentences of the posecode paragraph, in their order.
The rest keep the paragraph. The phrases were written for the prior's canonical poses; the dev
set (benchmarks/data/human_dev) is never read here, and a unit test checks that no caption of a
sample of 1,500 poses is one of its or the blind set's descriptions. (Seven short names of ours
are, word for word: "tree pose", "a handstand", "a lunge", "a bow", "lying on the side", "on
hands and knees", "hands together in prayer"; they are the poses' names, so they stay.)
"""

from __future__ import annotations

import re

import numpy as np

from poserft.data.everyday_phrases import EVERYDAY_NAMES
from poserft.data.registers import NAMES, nearest_named

P_NAME, P_PARTS, P_CLAUSES = 0.3, 0.35, 0.15  # the rest keeps the paragraph

MORE_NAMES = {
    "t_pose": ("the arms out level like a cross", "a T pose", "arms spread out wide at shoulder level"),
    "a_pose": ("an A pose", "arms held a little away from the body, pointing down"),
    "standing": ("standing", "standing still", "upright, doing nothing in particular", "on both feet, relaxed"),
    "standing_relaxed": ("standing casually", "a relaxed stance", "leaning on one hip"),
    "sitting": ("sitting", "seated", "sitting down on a seat", "perched on a bench"),
    "sitting_on_floor": ("sitting on the floor", "cross-legged on the ground", "sitting in a meditation position"),
    "kneeling": ("on both knees", "kneeling with the back straight", "kneeling on the floor"),
    "kneeling_on_heels": ("kneeling and sitting back", "seated on the heels, knees on the floor"),
    "squatting": ("a squat position", "crouching", "down in a crouch", "a deep knee bend"),
    "arms_up": ("arms raised overhead", "reaching up high with both hands", "both hands up in the air"),
    "arms_behind_head": ("hands clasped behind the head", "relaxing with the hands behind the neck"),
    "lunge": ("a lunge", "one leg stepped far forward and bent", "lunging"),
    "bending_forward": ("bending over", "bent over at the hips", "leaning down to the ground"),
    "bowing": ("a bow", "bowing to someone", "leaning forward politely"),
    "praying": ("praying", "palms pressed together", "hands joined in front of the chest"),
    "walking": ("walking along", "taking a step", "strolling along"),
    "running": ("running along", "jogging", "sprinting along"),
    "one_leg_stand": ("on one foot", "standing on a single leg", "one knee raised, balancing"),
    "kicking": ("a kick", "kicking a ball", "one leg swung forward in a kick"),
    "hands_on_hips": ("both hands on the hips", "standing with the hands on the waist", "arms akimbo, elbows out"),
    "arms_crossed": ("arms crossed", "folded arms", "crossing the arms in front"),
    "waving": ("waving hello", "waving goodbye", "a hand raised to wave"),
    "pointing": ("pointing", "pointing with one arm", "pointing the way"),
    "reaching_forward": ("reaching out", "both arms straight out in front", "reaching ahead with the hands"),
    "jumping_star": ("a jumping jack", "doing a star jump", "spread like a star"),
    "t_pose_lean": ("leaning to one side with the arms spread", "tilting sideways, arms out"),
    "side_stretch": ("a side bend", "stretching sideways with one arm up", "bending to the side"),
    "boxing_guard": ("a boxer's guard up", "fists up, ready to fight", "a fighting stance"),
    "flexing_biceps": ("flexing the arms", "showing the muscles", "a bodybuilder's double biceps"),
    "lying_on_back": ("lying down", "flat on the back", "lying face up on the floor"),
    "lying_on_side": ("lying on the side", "resting on one side", "lying sideways on the floor"),
    "plank": ("a plank", "a plank on straight arms", "holding the body straight, face down"),
    "push_up_down": ("a push-up", "at the bottom of a push-up", "lowered towards the floor, face down"),
    "warrior_two": (
        "warrior 2",
        "the second warrior pose from yoga",
        "a deep side lunge with the arms stretched level",
        "doing yoga, front knee bent, arms reaching both ways",
    ),
    "tree_pose": (
        "tree pose",
        "standing like a tree, hands joined overhead",
        "one foot resting on the inner thigh, balancing",
        "a one-legged yoga balance",
    ),
    "downward_dog": (
        "down dog",
        "downward dog pose",
        "hips high, hands and feet on the mat",
        "an inverted V on hands and feet",
    ),
    "child_pose": (
        "resting in child's pose",
        "kneeling with the forehead down and the arms forward",
        "folded over the knees on a yoga mat",
    ),
    "cobra": ("a cobra stretch", "the cobra", "pressing up from the floor, back arched", "a back bend lying face down"),
    "bridge": ("a bridge pose", "a hip raise", "pushing the hips up from the floor", "a glute bridge on the floor"),
    "on_all_fours": ("crawling on the floor", "on the hands and knees", "a tabletop position", "down on all fours"),
    "handstand": ("standing on the hands", "balancing upside down", "a handstand, legs straight up", "upside down"),
    "cartwheel": ("cartwheeling", "turning a cartwheel", "going over sideways on the hands, legs spread"),
    "side_plank": (
        "side plank",
        "propped up sideways on one arm",
        "a sideways plank with one arm up",
        "balancing sideways on one hand",
    ),
    "lying_on_stomach": (
        "on the stomach",
        "flat on the belly",
        "lying face down, head on the arms",
        "lying on the front",
    ),
    "sitting_legs_out": (
        "sitting with straight legs",
        "sitting on the floor, leaning back on the hands",
        "legs out in front, sitting on the ground",
        "a long sit on the floor",
    ),
    "hugging_knees": (
        "knees hugged to the chest",
        "sitting curled up",
        "arms wrapped around the legs",
        "sitting in a little ball",
    ),
    "throwing": ("a throw", "throwing a ball", "pitching", "the arm cocked back to throw", "about to throw"),
    "ready_stance": (
        "ready position",
        "an athletic stance",
        "a goalkeeper's ready stance",
        "knees bent, ready to move",
        "waiting to return a serve",
    ),
}

FRAMES = ("someone {x}", "a person {x}", "a figure {x}", "this person is {x}")  # for "-ing", "in ...", ...
_FRAMEABLE = ("in", "on", "at", "down", "bent", "seated", "upright", "lying", "standing", "kneeling")

# Part phrases, keyed by the canonical pose whose part it is. Legs: canonical poses whose legs
# differ from plain standing. Arms: "{side}" is left or right; the pair form when both match.
LEG_PHRASES = {
    "standing": ("standing", "standing up", "on both feet"),
    "standing_relaxed": ("standing at ease", "weight on one leg"),
    "sitting": ("sitting", "seated", "sitting on a chair"),
    "sitting_on_floor": ("sitting cross-legged", "sitting on the floor, legs crossed"),
    "kneeling": ("kneeling", "on both knees"),
    "kneeling_on_heels": ("kneeling on the heels", "sitting back on the heels"),
    "squatting": ("squatting", "crouching low", "in a squat"),
    "lunge": ("lunging", "in a lunge", "one leg stepped forward and bent"),
    "bending_forward": ("bent forward at the hips",),
    "bowing": ("bowing",),
    "walking": ("walking along", "in mid-step", "stepping forward"),
    "running": ("running along", "in a running stride", "jogging"),
    "one_leg_stand": ("standing on one leg", "balancing on one foot", "one knee lifted"),
    "kicking": ("kicking", "one leg kicking forward"),
    "jumping_star": ("legs spread wide", "feet wide apart"),
    "side_stretch": ("feet apart",),
    "boxing_guard": ("in a fighting stance", "one foot forward, knees soft"),
    "warrior_two": (
        "feet wide, front knee bent",
        "in a wide warrior stance",
        "one knee bent out over the foot, the other leg straight",
    ),
    "tree_pose": ("standing on one leg, foot against the other thigh", "one foot tucked on the inner thigh"),
    "handstand": ("upside down", "upside down, legs pointing up"),
    "cartwheel": ("upside down, legs split wide", "cartwheeling"),
    "sitting_legs_out": (
        "sitting with the legs straight out",
        "legs stretched out in front",
        "sitting on the floor, legs straight",
    ),
    "hugging_knees": ("sitting with the knees drawn up", "knees pulled up to the chest, sitting"),
    "throwing": ("striding forward, weight on the back foot", "one foot planted ahead"),
    "ready_stance": ("in a ready stance", "knees bent, feet apart, ready to move", "in an athletic crouch"),
}
ARM_PHRASES = {  # name: (one arm with {side}, both arms)
    "t_pose": ("the {side} arm out to the side", "both arms straight out to the sides"),
    "a_pose": ("the {side} arm angled down and out", "arms angled down away from the body"),
    "standing": ("the {side} arm down", "arms hanging down"),
    "arms_up": ("the {side} arm raised overhead", "both arms up over the head"),
    "arms_behind_head": ("the {side} hand behind the head", "hands behind the head"),
    "praying": (None, "hands together in front"),
    "hands_on_hips": ("the {side} hand on the hip", "both hands on the hips"),
    "arms_crossed": (None, "arms folded"),
    "waving": ("waving with the {side} hand", None),
    "pointing": ("pointing with the {side} arm", None),
    "reaching_forward": ("the {side} arm reaching forward", "both arms reaching forward"),
    "jumping_star": ("the {side} arm up and out", "arms up and out in a V"),
    "side_stretch": ("the {side} arm over the head", None),
    "boxing_guard": ("the {side} fist raised", "fists raised in a guard"),
    "flexing_biceps": ("the {side} arm bent up, fist raised", "both arms bent up with the fists raised"),
    "tree_pose": ("the {side} arm up over the head, elbow bent", "palms together above the head"),
    "cobra": ("the {side} elbow bent, forearm pointing forward", "elbows bent at the sides, forearms forward"),
    "bridge": ("the {side} arm down and slightly back", "arms down, reaching back a little"),
    "lying_on_stomach": ("the {side} forearm folded in front of the face", "forearms folded in front of the face"),
    "hugging_knees": (None, "arms wrapped round in front, hands clasped"),
    "throwing": ("the {side} arm cocked back behind the head", None),
    "ready_stance": ("the {side} hand out in front, elbow bent", "both hands out in front, elbows bent"),
}
TRUNK_PHRASES = {
    "bending_forward": ("bending forward",),
    "t_pose_lean": ("leaning sideways",),
    "side_stretch": ("bent to one side",),
    "warrior_two": ("the head turned to the left", "looking to the left"),
    "child_pose": ("folded far forward",),
    "cobra": ("back arched, chest lifted", "arching the back"),
    "throwing": ("twisted round to one side", "the trunk turned away"),
}
BODY_PHRASES = {  # from the joints: the trunk horizontal and which way the chest faces
    "up": ("lying on the back", "lying face up"),
    "down": ("face down", "horizontal, face down"),
    "side": ("lying on one side", "lying sideways"),
}
PART_MARGIN = 1.2  # a part is named only when its second-nearest canonical part is this much farther
# ... and (when set) only when it is at most this far from the named one (the RMS of `nearest_parts`;
# None = no cap). Without a cap the median named part is as far from its canonical part as two
# canonical parts are from each other, so "hands on the hips" also names arms that are not.
PART_WITHIN: float | None = None


def _state_table(group: str):
    """Canonical part configurations of one group: (names, (K, J, 3) axis-angle, joint indices).

    Canonical poses that share a part are merged; the merged state takes the first of its poses
    that has a phrase for this group (the legs of the T-pose are "standing")."""
    from poserft.data.pose_prior import _GROUPS, CANONICAL_POSES

    table = LEG_PHRASES if group == "legs" else TRUNK_PHRASES if group == "trunk" else ARM_PHRASES
    idx = _GROUPS[group]
    members: list[list[str]] = []
    values: list[np.ndarray] = []
    for name, pose in CANONICAL_POSES.items():
        v = pose[idx]
        for k, w in enumerate(values):
            if np.abs(v - w).max() <= 0.05:
                members[k].append(name)
                break
        else:
            members.append([name])
            values.append(v)
    names = [next((n for n in m if n in table), m[0]) for m in members]
    return names, np.stack(values), idx


def nearest_parts(poses_aa: np.ndarray) -> dict[str, list[str | None]]:
    """(N, 24, 3) axis-angle -> per group (legs, trunk, left_arm, right_arm) the canonical pose
    each part is clearly nearest to, or None. Distances are RMS over the part's joint angles,
    each axis divided by its range of motion."""
    from poserft.data.pose_prior import JOINT_LIMITS

    span = np.maximum(JOINT_LIMITS[:, :, 1] - JOINT_LIMITS[:, :, 0], 1e-3)
    out = {}
    for group in ("legs", "trunk", "left_arm", "right_arm"):
        names, values, idx = _state_table(group)
        d = np.sqrt((((poses_aa[:, None, idx] - values[None]) / span[idx]) ** 2).mean((-1, -2)))  # (N, K)
        order = np.argsort(d, axis=1)
        first, second = order[:, 0], order[:, 1]
        rows = np.arange(len(d))
        ok = d[rows, second] > PART_MARGIN * d[rows, first]
        if PART_WITHIN is not None:
            ok &= d[rows, first] <= PART_WITHIN
        out[group] = [names[k] if good else None for k, good in zip(first, ok)]
    return out


def body_orientation(joints_m: np.ndarray) -> list[str | None]:
    """'up' / 'down' / 'side' for a horizontal body (which way the chest faces), None when the
    line from the feet to the neck is closer to vertical (standing, sitting, bending over) or the
    trunk itself is upright (sitting on the floor with the legs out in front)."""
    from poserft.common.body import JOINT

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)

    feet = (joints_m[:, JOINT["left_ankle"]] + joints_m[:, JOINT["right_ankle"]]) / 2
    length = unit(joints_m[:, JOINT["neck"]] - feet)
    up = unit(joints_m[:, JOINT["spine3"]] - joints_m[:, JOINT["pelvis"]])
    across = joints_m[:, JOINT["left_shoulder"]] - joints_m[:, JOINT["right_shoulder"]]
    chest = unit(np.cross(across, up))  # x to the body's left, y along the trunk -> z out of the chest
    out = []
    for along, trunk, c in zip(np.abs(length[:, 1]), up[:, 1], chest[:, 1]):
        upright = along > 0.6 or trunk > 0.8
        out.append(None if upright else "up" if c > 0.6 else "down" if c < -0.6 else "side")
    return out


def _pick(rng, seq):
    return seq[int(rng.random() * len(seq))]


def _arms(rng, left: str | None, right: str | None) -> str | None:
    if left is not None and left == right and ARM_PHRASES.get(left, (None, None))[1]:
        return ARM_PHRASES[left][1]
    parts = []
    for side, name in (("left", left), ("right", right)):
        one = ARM_PHRASES.get(name, (None, None))[0] if name else None
        if one and name != "standing":
            parts.append(one.format(side=side))
    if not parts:
        return None
    if len(parts) == 2 and rng.random() < 0.5:
        parts.reverse()
    return " and ".join(parts)


def part_description(rng, parts: dict, i: int, lying: str | None) -> str | None:
    """The named parts of pose i joined into one phrase, or None when no part has a phrase."""
    pieces = []
    if lying is not None:
        pieces.append(_pick(rng, BODY_PHRASES[lying]))
    else:
        legs = parts["legs"][i]
        if legs in LEG_PHRASES:
            pieces.append(_pick(rng, LEG_PHRASES[legs]))
        trunk = parts["trunk"][i]
        if trunk in TRUNK_PHRASES:
            pieces.append(_pick(rng, TRUNK_PHRASES[trunk]))
    arms = _arms(rng, parts["left_arm"][i], parts["right_arm"][i])
    if arms:
        pieces.append(arms)
    if len(pieces) < 1 or (len(pieces) == 1 and pieces[0] in LEG_PHRASES["standing"]):
        return None
    if arms and len(pieces) == 1:  # arms only: the legs are plain standing or unnamed
        return _pick(rng, (arms, f"with {arms}", f"standing with {arms}"))
    if len(pieces) > 1 and rng.random() < 0.3:
        return f"{pieces[-1]}, {', '.join(pieces[:-1])}"
    joiner = ", " if rng.random() < 0.5 else " with "
    return pieces[0] + (joiner + ", ".join(pieces[1:]) if len(pieces) > 1 else "")


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if s]


def _framed(text: str, rng) -> str:
    """`text` alone half of the time, else in a frame when its first word allows one."""
    first = text.split(" ", 1)[0]
    if rng.random() < 0.5 or not (first.endswith("ing") or first in _FRAMEABLE or text.startswith("with ")):
        return text
    return _pick(rng, FRAMES).format(x=text)


def _finish(text: str, rng) -> str:
    text = text[0].upper() + text[1:] if rng.random() < 0.6 else text
    return text + "." if rng.random() < 0.6 else text


def with_rich_registers(
    captions: list[str], poses_aa: np.ndarray, joints_m: np.ndarray, ids: list[int], seed: int, everyday: bool = False
) -> list[str]:
    """Rewrite a share of `captions` in the registers of the module docstring (`everyday`: the
    whole-body names include `EVERYDAY_NAMES`)."""
    named = nearest_named(joints_m)
    parts = nearest_parts(poses_aa)
    lying = body_orientation(joints_m)
    out = []
    for j, (caption, name, i) in enumerate(zip(captions, named, ids)):
        rng = np.random.default_rng([seed, 1415, int(i)])
        u = rng.random()
        partial = part_description(rng, parts, j, lying[j])
        if name is not None and u < P_NAME:
            phrase = _pick(
                rng, NAMES[name] + MORE_NAMES.get(name, ()) + (EVERYDAY_NAMES.get(name, ()) if everyday else ())
            )
            out.append(_finish(_framed(phrase, rng), rng))
        elif partial is not None and u < P_NAME + P_PARTS:
            out.append(_finish(_framed(partial, rng), rng))
        elif u > 1 - P_CLAUSES and len(sents := _sentences(caption)) > 1:
            keep = sorted(rng.choice(len(sents), size=min(len(sents), 1 + int(rng.random() * 3)), replace=False))
            out.append(" ".join(sents[k] for k in keep))
        else:
            out.append(caption)
    return out
