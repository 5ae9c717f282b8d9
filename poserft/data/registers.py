"""Everyday registers for the synthetic captions (opt-in: `data.caption_registers: basic`).

The posecode captioner writes long, regular paragraphs ("The left knee is bent at a right
angle ..."); people say "a squat" or "lunging forward". With the switch on, a share of the
captions is rewritten in shorter registers:
- the name of the prior's canonical pose the body is nearest to (when it is near one), alone
  or before the paragraph's first sentence;
- only the paragraph's first one or two sentences.
The draw is per pose id (same seed and id, same caption). The names are ours, written for the
prior's named poses; the dev set in benchmarks/data/human_dev was written separately and is never
read here.
"""

from __future__ import annotations

import re

import numpy as np
import torch

P_NAME_ALONE, P_NAME_FIRST, P_SHORT = 0.2, 0.15, 0.15  # the rest keeps the paragraph
NAME_WITHIN_MM = 90.0  # a pose is named only when this near (yaw-aligned MPJPE) to a canonical one
NAME_MARGIN = 1.25  # ... and the second-nearest canonical pose is this many times farther

NAMES = {
    "t_pose": ("a T shape with the arms", "arms held out flat to each side"),
    "a_pose": ("an A shape, arms angled down from the body", "arms slanting down and away from the sides"),
    "standing": ("standing upright", "a plain standing posture", "stood still with the arms down"),
    "standing_relaxed": ("standing at ease", "a casual stance, weight on one leg"),
    "sitting": ("seated on a chair", "sitting with bent knees", "in a sitting position"),
    "sitting_on_floor": ("sitting on the ground with crossed legs", "seated cross-legged"),
    "kneeling": ("kneeling", "upright on both knees"),
    "kneeling_on_heels": ("kneeling back on the heels", "sitting on the heels"),
    "squatting": ("squatting", "crouched low on bent legs", "in a low squat"),
    "arms_up": ("both arms raised high", "arms up over the head"),
    "arms_behind_head": ("hands behind the head", "arms folded behind the head"),
    "lunge": ("lunging forward", "in a lunge"),
    "bending_forward": ("bent forward at the waist", "bending down towards the floor"),
    "bowing": ("bowing slightly", "a small bow"),
    "praying": ("hands together in prayer", "palms joined in front"),
    "walking": ("out for a walk", "mid-stride while walking"),
    "running": ("out on a run", "in a running stride"),
    "one_leg_stand": ("standing on one leg", "balancing on a single foot"),
    "kicking": ("kicking", "doing a kick"),
    "hands_on_hips": ("hands placed on the hips", "arms akimbo"),
    "arms_crossed": ("arms folded across the chest", "with crossed arms"),
    "waving": ("waving", "waving a hand"),
    "pointing": ("pointing at something", "pointing ahead"),
    "reaching_forward": ("reaching forward with both arms", "stretching the arms out ahead"),
    "jumping_star": ("a star shape, arms and legs apart", "jumping with the limbs spread"),
    "t_pose_lean": ("leaning sideways with the arms out", "tilted to one side, arms horizontal"),
    "side_stretch": ("stretching to the side", "a sideways stretch with one arm overhead"),
    "boxing_guard": ("boxing", "fists raised in a fighting stance"),
    "flexing_biceps": ("flexing the biceps", "showing off the arm muscles"),
    "lying_on_back": ("lying on the back", "lying face up"),
    "lying_on_side": ("lying on one side", "lying sideways"),
    "plank": ("holding a plank", "in a plank position"),
    "push_up_down": ("doing a push-up", "lowered in a push-up"),
    "warrior_two": ("warrior two pose", "a yoga warrior stance with the arms out wide", "a warrior II pose"),
    "tree_pose": ("the tree pose", "balancing on one leg in tree pose", "a yoga tree pose"),
    "downward_dog": ("downward dog", "a downward-facing dog", "bent into an upside-down V"),
    "child_pose": ("child pose", "curled forward over the knees, arms stretched ahead"),
    "cobra": ("cobra pose", "face down with the chest pushed up off the floor"),
    "bridge": ("a bridge", "lying on the back with the hips lifted", "doing a glute bridge"),
    "on_all_fours": ("on all fours", "on hands and knees", "crawling"),
    "handstand": ("a handstand", "doing a handstand", "upside down on the hands"),
    "cartwheel": ("a cartwheel", "doing a cartwheel", "halfway through a cartwheel"),
    "side_plank": ("a side plank", "holding a side plank"),
    "lying_on_stomach": ("lying on the stomach", "lying face down", "lying prone"),
    "sitting_legs_out": ("sitting with the legs straight out", "seated on the floor, legs stretched ahead"),
    "hugging_knees": ("hugging the knees", "sitting with the knees pulled to the chest"),
    "throwing": ("throwing", "about to throw a ball", "winding up for a throw"),
    "ready_stance": ("a ready stance", "in an athletic ready position", "crouched and ready"),
}


def nearest_named(joints_m: np.ndarray) -> list[str | None]:
    """(N, 24, 3) joints -> the canonical pose each is clearly near (see NAME_WITHIN_MM), or None."""
    from poserft.common.body import BodyModel
    from poserft.common.metrics import yaw_mpjpe
    from poserft.data.pose_prior import CANONICAL_POSES

    names = list(NAMES)
    canon = torch.from_numpy(BodyModel().joints_from_axis_angle(np.stack([CANONICAL_POSES[n] for n in names])))
    out = []
    for s in range(0, len(joints_m), 1024):
        d = yaw_mpjpe(torch.as_tensor(joints_m[s : s + 1024])[:, None], canon[None])  # (n, K)
        two = d.topk(2, dim=1, largest=False)
        for (d1, d2), (k, _) in zip(two.values.tolist(), two.indices.tolist()):
            out.append(names[k] if d1 < NAME_WITHIN_MM and d2 > NAME_MARGIN * d1 else None)
    return out


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if s]


def with_registers(captions: list[str], joints_m: np.ndarray, ids: list[int], seed: int) -> list[str]:
    """Rewrite a share of `captions` in the registers of the module docstring."""
    named = nearest_named(joints_m)
    out = []
    for caption, name, i in zip(captions, named, ids):
        rng = np.random.default_rng([seed, 1414, int(i)])
        u, pick = rng.random(), rng.random()
        first = _sentences(caption)
        if name is not None and u < P_NAME_ALONE + P_NAME_FIRST:
            phrase = NAMES[name][int(pick * len(NAMES[name]))]
            text = phrase[0].upper() + phrase[1:] + "."
            out.append(text if u < P_NAME_ALONE else f"{text} {first[0]}" if first else text)
        elif u > 1 - P_SHORT and len(first) > 1:
            out.append(" ".join(first[: 1 + int(pick * 2)]))
        else:
            out.append(caption)
    return out
