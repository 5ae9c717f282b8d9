"""Prometheus metrics of a training run, served by the controller (names as in docs/architecture.md §4).

The controller already writes one `line` per learner step to `metrics.jsonl` (stage times,
rewards, losses, counters). `StepMetrics.observe(line, scored)` turns that same line, plus the
scored Arrow batch, into Prometheus series, so the file and the dashboard never disagree.
Worker count and per-worker policy versions are set by `set_workers` wherever the pool changes,
and `autoscale_decision` counts each decision of `rl.rollout.autoscale`;
the controller's cumulative counters (dropped stale groups, re-queued prompts, worker failures)
are read at scrape time, so they are current even between steps.

Everything lives in its own `CollectorRegistry` (not prometheus_client's global one), exposed
over HTTP by `serve(port)`:
- `rl.metrics_port: null` (the default): no HTTP server; observing still works (cheap, in memory).
- `rl.metrics_port: 0`: the OS picks a free port; `StepMetrics.port` (and the controller's
  `get_status()["metrics_port"]`) tell which.
- `rl.metrics_port: N`: serve on port N.
The address bound is `POSERFT_METRICS_HOST` (default 0.0.0.0 so Prometheus can reach it from
another host; tests use 127.0.0.1). `docs/metrics.md` lists every metric.
"""

from __future__ import annotations

import json
import math
import os

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from poserft.cluster.autoscale import DECISION_KINDS
from poserft.common.schemas import REWARD_COMPONENTS, response_rows
from poserft.reward_service.rewards import REWARD_TIMING_KEY  # per-component seconds of one scorer call

HOST_ENV = "POSERFT_METRICS_HOST"
DEFAULT_HOST = "0.0.0.0"
# Stage latencies on CPU (tiny model) range from milliseconds to minutes.
STAGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0, 600.0)

# learner metrics key -> (gauge attribute, value of the `part` label)
LEARNER_GAUGES = {
    "loss": ("loss", "total"),
    "loss_token": ("loss", "token"),
    "loss_pose": ("loss", "pose"),
    "kl_token": ("kl", "token"),
    "kl_pose": ("kl", "pose"),
    "clip_frac_token": ("clip", "token"),
    "clip_frac_pose": ("clip", "pose"),
    "token_entropy": ("entropy", "token"),
    "pose_entropy": ("entropy", "pose"),
    "ratio_token_mean": ("ratio", "token"),
    "ratio_pose_mean": ("ratio", "pose"),
}

# The controller's cumulative counters exposed at scrape time: key -> (metric name without _total, help).
CONTROLLER_COUNTERS = {
    "dropped_stale_groups": (
        "poserft_controller_dropped_stale_groups",
        "Rollout groups dropped for being older than rl.max_staleness (their prompts are re-queued).",
    ),
    "requeued_prompts": (
        "poserft_controller_requeued_prompts",
        "Prompts put back in the queue (stale drops and failed rollout workers).",
    ),
    "worker_failures": (
        "poserft_controller_worker_failures",
        "Rollout workers that died or failed a call and were replaced.",
    ),
}


class _ControllerCounters(Collector):
    """Reads the controller's counters dict on every scrape (it is only ever updated in place)."""

    def __init__(self, counters: dict):
        self.counters = counters

    def collect(self):
        for key, (name, doc) in CONTROLLER_COUNTERS.items():
            fam = CounterMetricFamily(name, doc)
            fam.add_metric([], float(self.counters.get(key, 0)))
            yield fam


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class StepMetrics:
    def __init__(self, counters: dict | None = None, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.port: int | None = None
        self.host: str | None = None
        self._server = None
        self._workers: set[str] = set()
        self._warned: set[str] = set()
        r = self.registry

        def counter(name, doc, labels=()):
            return Counter(name, doc, labels, registry=r)

        def gauge(name, doc, labels=()):
            return Gauge(name, doc, labels, registry=r)

        def hist(name, doc, labels=()):
            return Histogram(name, doc, labels, buckets=STAGE_BUCKETS_S, registry=r)

        # throughput (rates come from these)
        self.samples = counter("poserft_rollout_samples_total", "Rollout samples (responses) scored and trained on.")
        self.tokens = counter("poserft_rollout_tokens_total", "Response tokens of the samples trained on.")
        self.groups = counter("poserft_rollout_groups_total", "Rollout groups (one prompt, G samples) trained on.")
        self.steps = counter("poserft_learner_steps_total", "Learner steps finished.")
        self.unscored = counter(
            "poserft_learner_dropped_unscored_rows_total", "Rows the learner skipped: null reward or a rollout error."
        )
        # stage latencies
        self.generate_s = hist(
            "poserft_rollout_generate_seconds",
            "Engine time of one rollout batch (prompt embeddings + sampling), as the worker records it.",
        )
        self.batch_s = hist(
            "poserft_rollout_batch_seconds",
            "Controller-side round trip of one rollout batch: dispatch to result (generation, pose-head prefill, "
            "transfer, waiting).",
        )
        self.reward_s = hist("poserft_reward_seconds", "Whole reward stage of one batch (the reward pool call).")
        self.reward_component_s = hist(
            "poserft_reward_component_seconds",
            "One reward component for one scorer call (first chunk of each batch).",
            ["component"],
        )
        for component in REWARD_COMPONENTS:  # series exist (at 0) from the first scrape, so rate() has a start point
            self.reward_component_s.labels(component=component)
        self.learner_s = hist(
            "poserft_learner_step_seconds", "Learner compute of one step (old/ref log-probs, updates, weight publish)."
        )
        self.sync_s = hist("poserft_weight_sync_seconds", "Pushing new weights to every rollout worker after a step.")
        # state
        self.version = gauge(
            "poserft_policy_version",
            'Policy version held by the learner (worker="learner") and by each rollout worker.',
            ["worker"],
        )
        self.workers = gauge("poserft_rollout_workers", "Rollout workers alive (including ones retiring once idle).")
        self.workers_target = gauge(
            "poserft_rollout_workers_target", "Rollout workers asked for (config or `poserft scale`)."
        )
        self.autoscale = counter(
            "poserft_autoscale_decisions_total",
            "Rollout-pool changes decided by rl.rollout.autoscale, by direction (up, down) and reason.",
            ["direction", "reason"],
        )
        for direction, reason in DECISION_KINDS:  # series exist (at 0) from the first scrape, so increase() works
            self.autoscale.labels(direction=direction, reason=reason)
        self.queue_depth = gauge(
            "poserft_controller_queue_depth_batches",
            "Scored batches waiting for the learner when the last batch started training.",
        )
        self.staleness = gauge(
            "poserft_controller_staleness_versions",
            "Policy versions between the weights that generated the last trained batch and the learner's.",
        )
        self.last_step_time = gauge(
            "poserft_learner_last_step_timestamp_seconds", "Unix time the last learner step finished."
        )
        self.reward_mean = gauge(
            "poserft_reward_mean",
            "Mean reward of the last trained batch, per component (and total) and task.",
            ["component", "task"],
        )
        # learner
        self.loss = gauge("poserft_learner_loss", "HyGRPO loss of the last step (part: total, token, pose).", ["part"])
        self.kl = gauge(
            "poserft_learner_kl_nats", "KL to the SFT reference (part: token k3 estimate, pose closed form).", ["part"]
        )
        self.clip = gauge(
            "poserft_learner_clip_ratio", "Fraction of tokens / poses where the clip cut the gradient.", ["part"]
        )
        self.entropy = gauge(
            "poserft_learner_entropy_nats", "Policy entropy (part: token, pose = Gaussian head).", ["part"]
        )
        self.ratio = gauge("poserft_learner_importance_ratio", "Mean importance ratio pi_theta / pi_old.", ["part"])
        self.grad_norm = gauge("poserft_learner_grad_norm", "Gradient norm before clipping, last update of the step.")
        self.pose_valid = gauge(
            "poserft_learner_pose_valid_ratio", "Fraction of trained responses with exactly one <POSE>."
        )
        if counters is not None:
            r.register(_ControllerCounters(counters))

    # ---- HTTP exporter ----
    def serve(self, port: int | None, host: str | None = None) -> StepMetrics:
        """Start the exporter (daemon thread); no-op when port is None. Returns self."""
        if port is None:
            return self
        host = host or os.environ.get(HOST_ENV) or DEFAULT_HOST
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise OSError(
                f"cannot serve Prometheus metrics on {host}:{port} (rl.metrics_port): {err.strerror or err}; "
                "pick a free port, or 0 for any"
            ) from err
        self.host, self.port = host, int(self._server.server_address[1])
        print(f"Prometheus metrics on http://{host}:{self.port}/metrics", flush=True)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- updates ----
    def set_workers(self, versions: dict[str, int], target: int | None = None) -> None:
        """The live rollout workers and the policy version each holds; forgets removed ones."""
        for gone in self._workers - set(versions):
            self.version.remove(gone)
        for wid, v in versions.items():
            self.version.labels(worker=wid).set(v)
        self._workers = set(versions)
        self.workers.set(len(versions))
        if target is not None:
            self.workers_target.set(target)

    def autoscale_decision(self, direction: str, reason: str) -> None:
        self.autoscale.labels(direction=direction, reason=reason).inc()

    def observe(self, line: dict, scored: pa.Table) -> None:
        """One finished step: the metrics.jsonl `line` and the scored batch it trained on.
        A metrics problem is reported once and never stops training."""
        try:
            self._observe(line, scored)
        except Exception as err:  # noqa: BLE001 - observability must not kill the run
            key = f"{type(err).__name__}: {err}"
            if key not in self._warned:
                self._warned.add(key)
                print(f"warning: Prometheus metrics not updated for step {line.get('step')}: {key}", flush=True)

    def _observe(self, line: dict, scored: pa.Table) -> None:
        # Counted from the batch itself: in `line`, "samples"/"tokens" are the run's cumulative counters.
        self.steps.inc()
        responses = response_rows(scored)
        self.samples.inc(responses.num_rows)
        if "response_tokens" in scored.schema.names:
            self.tokens.inc(pc.sum(pc.list_value_length(responses["response_tokens"])).as_py() or 0)
        if "group_id" in scored.schema.names:
            self.groups.inc(pc.count_distinct(scored["group_id"]).as_py())
        if _finite(line.get("dropped_unscored_rows")):
            self.unscored.inc(line["dropped_unscored_rows"])
        if "version" in line:
            self.version.labels(worker="learner").set(line["version"])
        if _finite(line.get("time")):
            self.last_step_time.set(line["time"])
        for key, gauge in (
            ("queue_depth", self.queue_depth),
            ("staleness", self.staleness),
            ("grad_norm", self.grad_norm),
            ("pose_valid_frac", self.pose_valid),
        ):
            if _finite(line.get(key)):
                gauge.set(line[key])
        # stage latencies
        if "generation_seconds" in scored.schema.names:
            self.generate_s.observe(float(pc.sum(scored["generation_seconds"]).as_py() or 0.0))
        for key, hist in (("gen_s", self.batch_s), ("reward_s", self.reward_s), ("sync_s", self.sync_s)):
            if _finite(line.get(key)):
                hist.observe(line[key])
        learner_s = line.get("learner_seconds", line.get("train_s"))
        if _finite(learner_s):
            self.learner_s.observe(learner_s)
        timing = (scored.schema.metadata or {}).get(REWARD_TIMING_KEY)
        if timing:
            for component, seconds in json.loads(timing).get("seconds", {}).items():
                self.reward_component_s.labels(component=component).observe(seconds)
        # learner scalars
        for key, (attr, part) in LEARNER_GAUGES.items():
            if _finite(line.get(key)):
                getattr(self, attr).labels(part=part).set(line[key])
        self._reward_means(scored)

    def _reward_means(self, scored: pa.Table) -> None:
        cols = [f"reward_{c}" for c in (*REWARD_COMPONENTS, "total") if f"reward_{c}" in scored.schema.names]
        if "task" not in scored.schema.names or not cols:
            return
        means = scored.select(["task", *cols]).group_by("task").aggregate([(c, "mean") for c in cols])
        for row in means.to_pylist():
            for c in cols:
                v = row[f"{c}_mean"]
                if v is not None and math.isfinite(v):  # null: the component does not apply to this task
                    self.reward_mean.labels(component=c[len("reward_") :], task=row["task"]).set(v)
