"""The real roles and the simulated ones of benchmarks/sim_roles.py implement the same
`Protocol`s, with the constructor calls the controller makes: a role that learns a new argument
(as the learner once learned `rank`) without its stand-in fails here, not in a benchmark."""

import inspect

import pytest

from benchmarks.sim_roles import SimLearner, SimRewardPool, SimRolloutWorker
from poserft.cluster.roles import LearnerRole, RewardPoolRole, RolloutWorkerRole
from poserft.learner.learner import LearnerCore
from poserft.reward_service.pool import RewardPool
from poserft.rollout_workers.worker import RolloutWorkerCore

PAIRS = [
    (RolloutWorkerRole, RolloutWorkerCore, SimRolloutWorker),
    (LearnerRole, LearnerCore, SimLearner),
    (RewardPoolRole, RewardPool, SimRewardPool),
]


def _protocol_methods(proto) -> list[str]:
    return [name for name, member in vars(proto).items() if inspect.isfunction(member) and not name.startswith("_")]


@pytest.mark.parametrize("proto,real,sim", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_both_implement_every_method_with_its_parameters(proto, real, sim):
    for cls in (real, sim):
        for name in _protocol_methods(proto):
            assert callable(getattr(cls, name, None)), f"{cls.__name__} has no {name}()"
            want = list(inspect.signature(getattr(proto, name)).parameters)
            got = list(inspect.signature(getattr(cls, name)).parameters)
            assert got[: len(want)] == want, f"{cls.__name__}.{name}{tuple(got)} does not take {tuple(want)}"


def test_constructors_take_the_controllers_arguments():
    """The argument shapes `Controller._new_worker`, `_start_learner` and `_start_rewards` use."""
    for cls in (RolloutWorkerCore, SimRolloutWorker):
        inspect.signature(cls).bind("ckpt", "rollout-0", "vllm", {}, {}, None)
    for cls in (LearnerCore, SimLearner):
        inspect.signature(cls).bind("sft", object(), None, None, model=object(), rank=1, world_size=8)
    for cls in (RewardPool, SimRewardPool):
        inspect.signature(cls).bind(
            object(), num_workers=1, batch_size=8, timeout_s=1.0, num_cpus=1, resources={}, num_gpus=1
        )


def test_a_missing_method_is_caught():
    class Partial:
        def get_version(self) -> int:
            return 0

    assert not isinstance(Partial(), RolloutWorkerRole)  # no generate / update_weights
