"""Configuration: the schema (`schema`: pydantic sections with defaults) and the loader
(`loader`: YAML plus dotted overrides, one-line errors). Import from here.
"""

from poserft.common.config.loader import load_config, parse_override, validate_config
from poserft.common.config.schema import (
    EVAL_MAX_NEW_TOKENS,
    AutoscaleConfig,
    BodyConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    LearnerResources,
    LoggingConfig,
    LoRAConfig,
    ModelConfig,
    RetrieverTrainConfig,
    RewardsConfig,
    RLConfig,
    RoleResources,
    RolloutConfig,
    SamplingConfig,
    Section,
    SFTConfig,
)

__all__ = [
    "EVAL_MAX_NEW_TOKENS",
    "AutoscaleConfig",
    "BodyConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LearnerResources",
    "LoRAConfig",
    "LoggingConfig",
    "ModelConfig",
    "RLConfig",
    "RetrieverTrainConfig",
    "RewardsConfig",
    "RoleResources",
    "RolloutConfig",
    "SFTConfig",
    "SamplingConfig",
    "Section",
    "load_config",
    "parse_override",
    "validate_config",
]
