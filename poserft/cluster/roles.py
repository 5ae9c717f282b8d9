"""The three roles the controller drives, as `Protocol`s, and `Roles`: which classes play them.

The controller only calls the methods below, always through Ray (`actor.method.remote(...)`), so
any class with these methods can stand in for a role: the real ones (`RolloutWorkerCore`,
`LearnerCore`, `RewardPool`) in training, and the simulated ones of `benchmarks/sim_roles.py`
in the scale benchmark. `tests/unit/test_roles.py` checks that both implement every method
with compatible signatures, so the simulation cannot drift from the real roles unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class RolloutWorkerRole(Protocol):
    """Generates G responses per prompt with the policy version it holds.

    Constructed as `cls(ckpt_dir, worker_id, engine, sampling, engine_kwargs, threads, **extra)`."""

    def get_version(self) -> int:
        """The policy version this worker generates with."""

    def generate(
        self, tasks: pa.Table, group_size: int, expected_version: int | None = None, seed: int = 0
    ) -> pa.Table:
        """RolloutRecord rows, `group_size` per task row. Raises `VersionMismatch` when it holds
        another version than `expected_version`."""

    def update_weights(self, version: int, state: dict) -> int:
        """Load a published state (full, or a LoRA update) as `version`; returns the version held."""


@runtime_checkable
class LearnerRole(Protocol):
    """One learner rank: trains on scored batches and publishes weights.

    Constructed as `cls(sft_ckpt, rl_settings, threads, resume_dir, model=..., rank=..., world_size=..., **extra)`."""

    def get_version(self) -> int:
        """The policy version after the last step."""

    def attach_peers(self, peers: list) -> int:
        """Rank 0 of a data-parallel learner: form the group with the other ranks."""

    def publish(self) -> tuple[int, Any]:
        """Put the current weights in the object store; returns (version, ref)."""

    def latest_weights(self) -> tuple[int, Any]:
        """(version, ref) of the weights last published."""

    def train_step(self, scored: pa.Table) -> dict:
        """One learner step on a scored batch; returns its metrics (losses, rewards, seconds)."""

    def save(self, out: str, extra_meta: dict | None = None) -> str:
        """Write a checkpoint atomically (with `extra_meta` in its `poserft.json`)."""


@runtime_checkable
class RewardPoolRole(Protocol):
    """Scores rollout rows (in the controller's process; it drives its own reward actors).

    Constructed as `factory(settings, num_workers=, batch_size=, timeout_s=, num_cpus=, resources=[, num_gpus=])`."""

    def score(self, table: pa.Table) -> pa.Table:
        """The rows with the reward columns appended, in the same order."""

    def shutdown(self) -> None:
        """Stop the reward actors."""


def _real_rollout_worker():
    from poserft.rollout_workers.worker import RolloutWorkerCore

    return RolloutWorkerCore


def _real_learner():
    from poserft.learner.learner import LearnerCore

    return LearnerCore


def _real_reward_pool():
    from poserft.reward_service.pool import RewardPool as Pool

    return Pool


@dataclass(frozen=True)
class Roles:
    """What runs each role (default: the real classes). The rollout and learner classes get the
    real constructor arguments plus their extra keyword arguments; `reward_pool` is called like
    `poserft.reward_service.pool.RewardPool`."""

    rollout_worker: type = field(default_factory=_real_rollout_worker)
    learner: type = field(default_factory=_real_learner)
    reward_pool: Callable[..., Any] = field(default_factory=_real_reward_pool)
    rollout_kwargs: dict = field(default_factory=dict)
    learner_kwargs: dict = field(default_factory=dict)
