"""Resource requests per role, placed through Ray placement groups.

Each actor gets its own placement group with one bundle of its role's CPUs, GPUs and custom
resources (for example `{"rollout_node": 1}` to pin rollout workers to nodes that declare it).
One group per actor lets rollout workers be added and removed one at a time.

A rollout worker's one bundle may hold several GPUs (tensor parallelism): its vLLM engine runs
the TP ranks as its own processes (`distributed_executor_backend="mp"`, see
`poserft.rollout_workers.engine.vllm_args`), which inherit the actor's GPUs. vLLM's Ray executor
is never asked to use the group (it accepts one GPU per bundle only).

A group that cannot be placed yet waits up to `rl.placement_timeout_s` (an autoscaler adding a
GPU node takes minutes) and prints a progress line every PROGRESS_EVERY_S seconds meanwhile.

Rollout workers added while training runs are asked for without waiting (`ask_group`): the loop
goes on with the pool it has, and the worker starts once its group is placed. A group that no
node can hold yet is pending demand, which Ray's autoscaler (KubeRay's, or `ray up`'s) answers by
adding a node; with `rl.rollout.autoscale` the controller also pre-requests the whole pool's
bundles (`request_capacity`, Ray's `request_resources`) and lowers the request when it shrinks,
so idle nodes can be removed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from poserft.common.config import ConfigError

DEFAULT_TIMEOUT_S = 1800.0  # rl.placement_timeout_s
PROGRESS_EVERY_S = 30.0


def bundle(num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, float]:
    b = {"CPU": float(num_cpus)}
    if num_gpus:
        b["GPU"] = float(num_gpus)
    b.update({k: float(v) for k, v in resources.items()})
    return {k: v for k, v in b.items() if v > 0} or {"CPU": 0.01}


# The config section that sets each role's request, so an infeasible request names its key.
ROLE_KEYS = {"rollout worker": "rl.rollout", "learner": "rl.learner", "reward worker": "rl.reward"}


def _resource_key(section: str, resource: str) -> str:
    if resource == "CPU":
        return f"{section}.num_cpus"
    if resource == "GPU":
        return f"{section}.num_gpus"
    return f"{section}.resources.{resource}"


def check_feasible(role: str, b: dict[str, float], key: str | None = None) -> None:
    """Fail early when no node of the cluster could ever fit the bundle `b` of `role`.

    The one-line error names the config key that asks for the missing resource (`key` is the
    role's config section; by default looked up in ROLE_KEYS)."""
    section = key or ROLE_KEYS.get(role, role)
    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
    if any(all(n.get(k, 0.0) >= v for k, v in b.items()) for n in nodes):
        return
    if not nodes:
        raise ConfigError(
            f"config key {section!r}: the {role} cannot be placed because the Ray cluster has no alive node"
        )
    have = ", ".join(sorted({k for n in nodes for k in n if not k.startswith("node:")})) or "none"
    for res, amount in b.items():
        most = max(n.get(res, 0.0) for n in nodes)
        if most < amount:
            res_key = _resource_key(section, res)
            raise ConfigError(
                f"config key {res_key!r}: the {role} requests {amount:g} {res}, but no node of the Ray cluster "
                f"has more than {most:g} (resources present: {have})"
            )
    keys = ", ".join(repr(_resource_key(section, res)) for res in b)
    raise ConfigError(
        f"config keys {keys}: the {role} requests {b} on one node, but no node of the Ray cluster has all of it "
        "together"
    )


def group_bundles(n: int, num_cpus: float, num_gpus: float, resources: dict[str, float]) -> list[dict[str, float]]:
    """One bundle per rank: each with num_cpus and num_gpus; the custom resources only in the first."""
    return [bundle(num_cpus, num_gpus, resources if i == 0 else {}) for i in range(n)]


def bundles_total(bundles: list[dict[str, float]]) -> dict[str, float]:
    """What a STRICT_PACK group of these bundles needs from one node."""
    whole: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            whole[k] = whole.get(k, 0.0) + v
    return whole


def placed_options(
    role: str, num_cpus: float, num_gpus: float, resources: dict[str, float], timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[dict, object]:
    """Actor options that run inside a fresh one-bundle placement group; returns (options, group)."""
    opts, pg = placed_group_options(role, 1, num_cpus, num_gpus, resources, timeout_s)
    return opts[0], pg


def placed_group_options(
    role: str,
    n: int,
    num_cpus: float,
    num_gpus: float,
    resources: dict[str, float],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[list[dict], object]:
    """Options for `n` actors (data-parallel ranks) packed on one node in one placement group:
    each bundle has num_cpus and num_gpus; the custom `resources` are asked once, in bundle 0
    (they pin the group to a node that declares them). Returns (options per rank, group)."""
    bundles = group_bundles(n, num_cpus, num_gpus, resources)
    whole = bundles_total(bundles)
    check_feasible(role, whole)
    pg = placement_group(bundles, strategy="STRICT_PACK")
    if not wait_placed(pg, role, whole, timeout_s):
        remove_placement_group(pg)
        raise TimeoutError(
            f"{role}: the cluster has no free room for {whole} on one node after {timeout_s:.0f} s "
            "(rl.placement_timeout_s); add nodes or lower the request"
        )
    return [bundle_options(b, pg, i) for i, b in enumerate(bundles)], pg


def bundle_options(b: dict[str, float], pg, index: int = 0) -> dict:
    """Actor options that run in bundle `index` (= `b`) of group `pg`."""
    return {
        "num_cpus": b.get("CPU", 0.0),
        "num_gpus": b.get("GPU", 0.0),
        "resources": {k: v for k, v in b.items() if k not in ("CPU", "GPU")},
        "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index),
    }


@dataclass
class PendingGroup:
    """A one-bundle group asked for and not waited for (see `ask_group`)."""

    bundle: dict[str, float]
    pg: object
    ready: object  # ObjectRef that resolves once the group is placed
    since: float = field(default_factory=time.monotonic)

    def placed(self) -> bool:
        done, _ = ray.wait([self.ready], timeout=0)
        return bool(done)

    def options(self) -> dict:
        return bundle_options(self.bundle, self.pg)


def ask_group(b: dict[str, float]) -> PendingGroup:
    """Create a one-bundle group without waiting for it: until a node has room it is pending
    demand for the autoscaler. The caller checks `placed()` and releases it on giving up."""
    pg = placement_group([b], strategy="STRICT_PACK")
    return PendingGroup(b, pg, pg.ready())


def request_capacity(bundles: list[dict[str, float]]) -> None:
    """Ask Ray's autoscaler to keep room for all of `bundles` at once (what runs in them counts);
    `[]` withdraws the request. One request per cluster: the last call wins. Without an autoscaler
    nothing reads it."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(b) for b in bundles])


def wait_placed(pg, role: str, whole: dict[str, float], timeout_s: float, every_s: float = PROGRESS_EVERY_S) -> bool:
    """Wait for the group up to timeout_s, printing a line every `every_s` seconds of waiting."""
    waited = 0.0
    while waited < timeout_s:
        chunk = min(every_s, timeout_s - waited)
        if pg.wait(timeout_seconds=chunk):
            return True
        waited += chunk
        if waited < timeout_s:
            print(f"{role}: waiting for room for {whole} on one node, {waited:.0f} s of {timeout_s:.0f} s", flush=True)
    return False


def release(pg) -> None:
    with contextlib.suppress(Exception):  # already removed with its job
        remove_placement_group(pg)
