"""Deployment artefacts: the KubeRay manifests in deploy/k8s against the CRD schemas, yamllint,
the role layout the placement code needs, the PodMonitor, and the Dockerfiles.

Fast and offline: the CRDs are copied in tests/data/kuberay (Apache-2.0, LICENSE beside them).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"
CRDS = ROOT / "tests" / "data" / "kuberay"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
ROLES = ("learner", "rollout", "reward")
APP_DIR = "/app/"  # WORKDIR of deploy/docker/Dockerfile.*; the entrypoint's config path is under it

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ---------------------------------------------------------------- loading


def _manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


@cache
def _documents() -> tuple[tuple[str, dict], ...]:
    out = []
    for path in _manifest_files():
        for doc in yaml.load_all(path.read_text(), Loader=Loader):
            if doc is not None:
                out.append((path.name, doc))
    return tuple(out)


def _kind(kind: str) -> list[dict]:
    return [copy.deepcopy(d) for _, d in _documents() if d.get("kind") == kind]


def _one(kind: str) -> dict:
    docs = _kind(kind)
    assert len(docs) == 1, f"expected exactly one {kind} in deploy/k8s, found {len(docs)}"
    return docs[0]


# ---------------------------------------------------------------- CRD schema -> JSON schema

_DROPPED = {
    "x-kubernetes-validations",
    "x-kubernetes-map-type",
    "x-kubernetes-list-type",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "nullable",
}


def to_json_schema(node: dict) -> dict:
    """A CRD structural schema as a draft-4 JSON schema that rejects what the API server would.

    - `x-kubernetes-int-or-string` -> anyOf integer/string (kept when the CRD already spells it out);
    - an object with `properties` and without `x-kubernetes-preserve-unknown-fields` gets
      `additionalProperties: false`: the API server prunes unknown keys silently, so a misspelt
      key would just vanish; here it fails;
    - `nullable` -> the type plus null; `x-kubernetes-list-type: set` -> uniqueItems;
      `x-kubernetes-list-type: map` keeps its keys for the `x-kubernetes-list-map-keys` check below;
    - CEL rules (`x-kubernetes-validations`) are dropped: they need a CEL evaluator.
    """
    if not isinstance(node, dict):
        return node
    out = {k: v for k, v in node.items() if k not in _DROPPED}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = to_json_schema(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [to_json_schema(s) for s in node[key]]
    return out


def _list_map_keys(validator, keys, instance, schema):
    """`x-kubernetes-list-type: map`: no two items may share the same values of the map keys
    (a missing key counts as its schema default, e.g. a port's protocol is TCP)."""
    if not validator.is_type(instance, "array"):
        return
    props = schema.get("items", {}).get("properties", {})
    seen = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        ident = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
        if ident in seen:
            key = dict(zip(keys, ident))
            yield jsonschema.ValidationError(f"items {seen[ident]} and {i} repeat the list-map key {key}")
        seen[ident] = i


_formats = jsonschema.FormatChecker()


@_formats.checks("int32")
def _int32(value) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_formats.checks("int64")
def _int64(value) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


CRDValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-kubernetes-list-map-keys": _list_map_keys})


@cache
def _crd_schema(kind: str, closed: bool = True) -> dict:
    crd = yaml.load((CRDS / CRD_FILES[kind]).read_text(), Loader=Loader)
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"], f"{kind} v1 is not served by this CRD"
    raw = version["schema"]["openAPIV3Schema"]
    return to_json_schema(raw) if closed else raw


def _validator(kind: str, closed: bool = True):
    schema = _crd_schema(kind, closed)
    cls = CRDValidator if closed else jsonschema.Draft4Validator
    return cls(schema, format_checker=_formats if closed else None)


def _errors(doc: dict, closed: bool = True) -> list[str]:
    v = _validator(doc["kind"], closed)
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in v.iter_errors(doc))


# ---------------------------------------------------------------- pod helpers


def _cluster_spec() -> dict:
    return _one("RayCluster")["spec"]


def _groups(spec: dict) -> dict[str, dict]:
    groups = {"head": spec["headGroupSpec"]}
    for g in spec.get("workerGroupSpecs", []):
        assert g["groupName"] not in groups, f"duplicate worker group {g['groupName']}"
        groups[g["groupName"]] = g
    return groups


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is the first one


def _quantity(value) -> float:
    """A Kubernetes CPU/GPU quantity as a number (enough of the syntax for these manifests)."""
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def _ray_custom_resources(group: dict) -> dict[str, float]:
    """The `resources` ray start parameter as `ray start` receives it: KubeRay pastes the value into
    a `bash -c` command line (`--resources=<value>`), so shell quoting applies first."""
    raw = group.get("rayStartParams", {}).get("resources")
    if raw is None:
        return {}
    (arg,) = shlex.split(f"--resources={raw}")
    return {k: float(v) for k, v in json.loads(arg.split("=", 1)[1]).items()}


def _node_resources(group: dict) -> dict[str, float]:
    """What one pod of the group offers to Ray: CPUs and GPUs from the container limits (as KubeRay
    derives num-cpus/num-gpus), unless rayStartParams set them, plus the custom resources."""
    params = group.get("rayStartParams", {})
    limits = _ray_container(group).get("resources", {}).get("limits", {})
    res = {
        "CPU": _quantity(params.get("num-cpus", limits.get("cpu", 0))),
        "GPU": _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0))),
    }
    res.update(_ray_custom_resources(group))
    return res


def _gpus(group: dict, which: str = "limits") -> float:
    return _quantity(_ray_container(group).get("resources", {}).get(which, {}).get("nvidia.com/gpu", 0))


def _ports(group: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _ray_container(group).get("ports", []) if "name" in p}


def _entrypoint_argv() -> list[str]:
    return shlex.split(_one("RayJob")["spec"]["entrypoint"])


def _entrypoint_config():
    """The config the RayJob trains with: its --config (mapped from the image to this checkout)
    and --set overrides, loaded by poserft's own loader."""
    from poserft.cli import build_parser
    from poserft.common.config import load_config

    argv = _entrypoint_argv()
    assert argv[0] == "poserft", f"the entrypoint should run the poserft command, not {argv[0]!r}"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "train", args
    config = args.config
    if config.startswith(APP_DIR):
        config = str(ROOT / config[len(APP_DIR) :])
    return load_config(config, args.set or []), args


# ---------------------------------------------------------------- tests: files and yamllint


def test_manifests_present():
    names = {p.name for p in _manifest_files()}
    assert {"raycluster.yaml", "rayjob.yaml", "podmonitor.yaml", "rayservice.yaml"} <= names
    kinds = sorted(d["kind"] for _, d in _documents())
    assert kinds == ["PodMonitor", "RayCluster", "RayJob", "RayService"], kinds


def test_crd_copies_are_licensed():
    assert (CRDS / "LICENSE").is_file() and "Apache License" in (CRDS / "LICENSE").read_text()[:200]
    for name in CRD_FILES.values():
        assert (CRDS / name).is_file()


def test_yamllint_clean():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf_path = ROOT / "deploy" / ".yamllint"
    conf = YamlLintConfig(file=str(conf_path))
    problems = []
    for path in [*_manifest_files(), conf_path]:
        for p in linter.run(path.read_text(), conf, str(path)):
            problems.append(f"{path.relative_to(ROOT)}:{p.line}:{p.column} {p.level} {p.message} ({p.rule})")
    assert not problems, "\n".join(problems)


def test_yamllint_catches_problems():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf = YamlLintConfig(file=str(ROOT / "deploy" / ".yamllint"))
    bad = "---\nspec:\n   replicas: 1\n   replicas: 2\n   enabled: yes\n"
    rules = {p.rule for p in linter.run(bad, conf)}
    assert {"indentation", "key-duplicates", "truthy"} <= rules, rules


def test_metadata_names_are_dns_labels():
    for file, doc in _documents():
        name = doc.get("metadata", {}).get("name", "")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), f"{file}: bad metadata.name {name!r}"


# ---------------------------------------------------------------- tests: CRD schemas


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_manifest_matches_crd_schema(kind):
    doc = _one(kind)
    assert doc["apiVersion"] == "ray.io/v1"
    assert _errors(doc) == []


def test_schema_conversion_closes_objects_and_maps_int_or_string():
    schema = to_json_schema(
        {
            "type": "object",
            "properties": {
                "q": {"x-kubernetes-int-or-string": True},
                "open": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "maybe": {"type": "string", "nullable": True},
            },
        }
    )
    v = CRDValidator(schema)
    assert v.is_valid({"q": 3, "open": {"a": "x", "extra": 1}, "tags": ["a", "b"], "maybe": None})
    assert v.is_valid({"q": "500m"})
    assert not v.is_valid({"q": 0.5})
    assert not v.is_valid({"q": 1, "typo": 1})
    assert not v.is_valid({"tags": ["a", "a"]})


MISSPELT = [
    ("RayCluster", ("spec",), "enableInTreeAutoscaling", "enableInTreeAutoScaling"),
    ("RayCluster", ("spec", "workerGroupSpecs", 0), "maxReplicas", "maxReplica"),
    ("RayCluster", ("spec", "workerGroupSpecs", 0, "template", "spec"), "tolerations", "toleration"),
    ("RayCluster", ("spec", "headGroupSpec", "template", "spec", "containers", 0), "volumeMounts", "volumesMounts"),
    ("RayJob", ("spec",), "shutdownAfterJobFinishes", "shutdownAfterJobFinished"),
    ("RayJob", ("spec", "rayClusterSpec", "workerGroupSpecs", 1), "minReplicas", "minReplicaCount"),
]


def _at(doc, path):
    node = doc
    for step in path:
        node = node[step]
    return node


@pytest.mark.parametrize("kind,path,key,typo", MISSPELT, ids=[f"{k}:{t}" for k, _, _, t in MISSPELT])
def test_misspelt_key_fails_validation(kind, path, key, typo):
    doc = _one(kind)
    node = _at(doc, path)
    assert key in node, f"the fixture expects {key!r} at {path}"
    node[typo] = node.pop(key)
    errors = _errors(doc)
    assert any(f"{typo!r} was unexpected" in e for e in errors), errors


def test_misspelt_key_is_only_caught_because_objects_are_closed():
    """Without the additionalProperties step the raw CRD schema lets a typo through (the API
    server would prune it silently): the closing step is what makes the test above bite."""
    doc = _one("RayCluster")
    group = doc["spec"]["workerGroupSpecs"][0]
    group["rayStartParam"] = group.pop("rayStartParams")
    assert _errors(doc, closed=False) == []
    assert any("'rayStartParam' was unexpected" in e for e in _errors(doc))


WRONG_TYPES = [
    ("RayCluster", ("spec", "workerGroupSpecs", 1), "minReplicas", "1"),
    ("RayCluster", ("spec",), "enableInTreeAutoscaling", "true"),
    ("RayCluster", ("spec", "headGroupSpec", "rayStartParams"), "num-cpus", 0),
    (
        "RayCluster",
        ("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resources", "limits"),
        "cpu",
        0.5,
    ),
    ("RayCluster", ("spec", "headGroupSpec", "template", "spec", "containers", 0, "ports", 0), "containerPort", 2**40),
    ("RayJob", ("spec",), "shutdownAfterJobFinishes", "yes"),
    ("RayJob", ("spec",), "entrypoint", ["poserft", "train"]),
]


@pytest.mark.parametrize("kind,path,key,value", WRONG_TYPES, ids=[f"{k}:{key}={v!r}" for k, _, key, v in WRONG_TYPES])
def test_wrong_type_fails_validation(kind, path, key, value):
    doc = _one(kind)
    node = _at(doc, path)
    assert key in node
    node[key] = value
    errors = _errors(doc)
    assert any(key in e for e in errors), errors


def test_missing_required_and_duplicate_port_fail_validation():
    doc = _one("RayCluster")
    del doc["spec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e and "required" in e for e in _errors(doc))

    doc = _one("RayCluster")
    ports = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    ports.append({"name": "again", "containerPort": ports[0]["containerPort"]})
    assert any("list-map key" in e for e in _errors(doc))


# ---------------------------------------------------------------- tests: role layout


def test_groups_and_autoscaling():
    spec = _cluster_spec()
    assert spec["enableInTreeAutoscaling"] is True
    groups = _groups(spec)
    assert set(groups) == {"head", *ROLES}
    for name in ROLES:
        g = groups[name]
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], name
    rollout = groups["rollout"]
    assert 1 <= rollout["minReplicas"] < rollout["maxReplicas"]
    assert rollout["maxReplicas"] == 16
    assert groups["learner"]["minReplicas"] == groups["learner"]["maxReplicas"] == 1


def test_rollout_group_bounds_match_the_autoscaler():
    """The rollout group can hold the pool rl.rollout.autoscale may ask for, and keeps no pod
    the pool cannot use: minReplicas/maxReplicas equal min_workers/max_workers (one worker per pod)."""
    cfg, _ = _entrypoint_config()
    auto = cfg.rl.rollout.autoscale
    assert auto.enabled
    for spec in (_cluster_spec(), _one("RayJob")["spec"]["rayClusterSpec"]):
        rollout = _groups(spec)["rollout"]
        assert (rollout["minReplicas"], rollout["maxReplicas"]) == (auto.min_workers, auto.max_workers)
        assert auto.min_workers <= cfg.rl.rollout.num_workers <= auto.max_workers


def test_gpus_per_role():
    groups = _groups(_cluster_spec())
    assert _gpus(groups["head"]) == 0
    assert _gpus(groups["learner"]) == 8
    assert 1 <= _gpus(groups["rollout"]) <= 2
    assert _gpus(groups["reward"]) == 1
    for name in ROLES:
        assert _gpus(groups[name], "requests") == _gpus(groups[name]), f"{name}: GPU requests and limits differ"


def test_custom_resources_match_the_config():
    """Each role's group declares the Ray custom resource the role requests in
    configs/8xh100.yaml (with the RayJob's overrides), and nothing else declares it."""
    cfg, _ = _entrypoint_config()
    groups = _groups(_cluster_spec())
    declared = {name: _ray_custom_resources(g) for name, g in groups.items()}
    assert declared["learner"] == {"learner_node": 1.0}
    wanted = {role: getattr(cfg.rl, role).resources for role in ROLES}
    for role, res in wanted.items():
        assert res, f"rl.{role}.resources is empty: the role would not be pinned to its group"
        for key in res:
            holders = [name for name, d in declared.items() if key in d]
            assert holders == [role], f"custom resource {key!r} of rl.{role} is declared by {holders}"


def test_each_role_fits_its_group():
    """The placement bundle each actor asks for (poserft.cluster.placement.bundle) fits one pod of
    its group, and the configured worker counts fit the groups' maximum sizes."""
    from poserft.cluster.placement import bundle

    cfg, _ = _entrypoint_config()
    rl = cfg.rl
    groups = _groups(_cluster_spec())
    asks = {
        "learner": (bundle(rl.learner.num_cpus, rl.learner.num_gpus, rl.learner.resources), 1),
        "rollout": (bundle(rl.rollout.num_cpus, rl.rollout.num_gpus, rl.rollout.resources), rl.rollout.num_workers),
        "reward": (bundle(rl.reward.num_cpus, rl.reward.num_gpus, rl.reward.resources), cfg.rewards.num_workers),
    }
    for role, (b, count) in asks.items():
        node = _node_resources(groups[role])
        per_pod = min(int(node.get(k, 0.0) // v) for k, v in b.items())
        assert per_pod >= 1, f"{role} asks {b}; a {role} pod offers {node}"
        most = groups[role]["maxReplicas"]
        assert per_pod * most >= count, f"{count} {role} actors do not fit {most} pods of {per_pod}"
    assert rl.rollout.num_gpus == rl.rollout.tensor_parallel_size
    # the head runs the driver and the 0-CPU controller only
    assert _node_resources(groups["head"])["CPU"] == 0


def test_the_config_alone_keeps_reward_workers_off_rollout_pods():
    """configs/8xh100.yaml as shipped (no --set) sends the reward workers to the reward group:
    their bundle asks for a custom resource only the reward pods declare."""
    from poserft.cluster.placement import bundle
    from poserft.common.config import load_config

    cfg = load_config(ROOT / "configs" / "8xh100.yaml")
    groups = _groups(_cluster_spec())
    rw = cfg.rl.reward
    custom = {k for k in bundle(rw.num_cpus, rw.num_gpus, rw.resources) if k not in ("CPU", "GPU")}
    assert custom, "reward workers without a custom resource can land on any GPU pod"
    for name in ("learner", "rollout"):
        offered = set(_node_resources(groups[name]))
        assert not custom & offered, f"a {name} pod offers {custom & offered}: reward workers could take it"
    assert custom <= set(_node_resources(groups["reward"]))
    assert not any("rl.reward.resources" in a for a in _entrypoint_argv())  # the job needs no override


def test_gpu_pods_tolerate_and_select_gpu_nodes():
    groups = _groups(_cluster_spec())
    for name in ROLES:
        pod = groups[name]["template"]["spec"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), name
        assert "nvidia.com/gpu.product" in pod.get("nodeSelector", {}), name


def test_every_pod_has_shm_env_and_the_same_image():
    groups = _groups(_cluster_spec())
    images = set()
    for name, g in groups.items():
        pod = g["template"]["spec"]
        c = _ray_container(g)
        images.add(c["image"])
        shm = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        assert len(shm) == 1, f"{name}: no /dev/shm mount"
        (vol,) = [v for v in pod.get("volumes", []) if v["name"] == shm[0]["name"]]
        assert vol["emptyDir"]["medium"] == "Memory", name
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("HF_HUB_OFFLINE") == "1", name
    assert len(images) == 1, images


def test_head_ports():
    head = _groups(_cluster_spec())["head"]
    ports = _ports(head)
    assert ports["dashboard"] == 8265
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert _gpus(head) == 0


# ---------------------------------------------------------------- tests: RayJob


def test_rayjob_runs_poserft_train_on_the_same_cluster():
    job = _one("RayJob")["spec"]
    assert job["rayClusterSpec"] == _cluster_spec(), "rayjob.yaml's rayClusterSpec drifted from raycluster.yaml"
    assert job["shutdownAfterJobFinishes"] is True
    assert job.get("ttlSecondsAfterFinished", 0) > 0
    cfg, args = _entrypoint_config()
    assert args.init.startswith("/shared/") and args.run_dir.startswith("/shared/")
    assert cfg.rl.metrics_port is not None
    env = yaml.safe_load(job["runtimeEnvYAML"])
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"


# ---------------------------------------------------------------- tests: PodMonitor


def _job_relabels(endpoint: dict) -> list[str]:
    return [r.get("replacement") for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]


def test_podmonitor_scrapes_poserft_and_ray_metrics():
    pm = _one("PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    spec = pm["spec"]
    endpoints = {e["port"]: e for e in spec["podMetricsEndpoints"]}
    assert {"metrics", "poserft-metrics"} <= set(endpoints)
    cfg, _ = _entrypoint_config()
    for name, g in _groups(_cluster_spec()).items():
        labels = g["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), f"the PodMonitor misses the {name} pods"
        ports = _ports(g)
        assert ports["poserft-metrics"] == cfg.rl.metrics_port, name
        assert ports["metrics"] == int(g["rayStartParams"].get("metrics-export-port", 8080)), name
    assert _job_relabels(endpoints["poserft-metrics"]) == ["poserft-controller"]


def test_podmonitor_job_matches_the_grafana_dashboard():
    dash = ROOT / "deploy" / "grafana" / "poserft.json"
    if not dash.is_file():
        pytest.skip("deploy/grafana/poserft.json not present")
    variables = {v["name"]: v for v in json.loads(dash.read_text()).get("templating", {}).get("list", [])}
    if "job" not in variables:
        pytest.skip("the dashboard has no job variable")
    default = variables["job"].get("current", {}).get("value")
    endpoints = {e["port"]: e for e in _one("PodMonitor")["spec"]["podMetricsEndpoints"]}
    assert "poserft-metrics" in endpoints, sorted(endpoints)
    jobs = _job_relabels(endpoints["poserft-metrics"])
    assert default in jobs, f"the dashboard's default job {default!r} is not the PodMonitor's {jobs}"


# ---------------------------------------------------------------- tests: Dockerfiles

INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments skipped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word, rest.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return out


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.mark.parametrize("flavour", ["gpu", "cpu"])
def test_dockerfile_shape(flavour):
    path = DOCKER / f"Dockerfile.{flavour}"
    assert path.is_file()
    ins = _instructions(path)
    unknown = [w for w, _ in ins if w not in INSTRUCTIONS]
    assert not unknown, f"{path.name}: unknown instructions {unknown}"
    assert ins[0][0] in ("FROM", "ARG") and any(w == "FROM" for w, _ in ins)
    entry = [rest for w, rest in ins if w == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["poserft"], entry
    runs = " ".join(rest for w, rest in ins if w == "RUN")
    assert f'".[{flavour}]"' in runs or f".[{flavour}]" in runs
    ignored = _dockerignore()
    for w, rest in ins:
        if w == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{path.name}: COPY source {src} missing"
                assert src.rstrip("/") not in ignored, f"{path.name}: COPY source {src} is excluded by .dockerignore"


def test_gpu_dockerfile_base_and_constraints():
    text = (DOCKER / "Dockerfile.gpu").read_text()
    base = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M)).get("CUDA_IMAGE", "")
    assert base.startswith("nvidia/cuda:12."), base
    assert "python3.11" in text
    assert "requirements/lock.txt" in text and "-c /tmp/constraints-gpu.txt" in text


def test_cpu_dockerfile_removes_cuda_vision_packages():
    ins = _instructions(DOCKER / "Dockerfile.cpu")
    assert ins[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for w, rest in ins if w == "RUN")
    m = re.search(r"pip uninstall -y ([^&]+)", runs)
    assert m and {"torchvision", "torchaudio", "torchcodec"} <= set(m.group(1).split()), runs
    assert runs.index("pip install") < runs.index("pip uninstall")


def test_dockerignore_excludes_local_state():
    assert {".venv", "data", "runs", "benchmarks/results"} <= set(_dockerignore())


# ---------------------------------------------------------------- tests: RayService (poserft serve)


def _serve_app() -> dict:
    (app,) = yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"])["applications"]
    return app


def test_rayservice_misspelt_key_fails_validation():
    doc = _one("RayService")
    doc["spec"]["serveConfigV3"] = doc["spec"].pop("serveConfigV2")
    assert any("'serveConfigV3' was unexpected" in e for e in _errors(doc))
    doc = _one("RayService")
    group = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["maxReplica"] = group.pop("maxReplicas")
    assert any("'maxReplica' was unexpected" in e for e in _errors(doc))


def test_rayservice_builds_the_poserft_app():
    """The import path is poserft's builder and its args are ones the deployment takes (building
    the application binds the deployment; nothing starts)."""
    import inspect

    from poserft.inference import server

    app = _serve_app()
    assert app["import_path"] == "poserft.inference.server:build_app" and app["route_prefix"] == "/"
    args = dict(app["args"])
    built = server.build_app(args)
    assert type(built).__name__ == "Application"
    kwargs = {k: v for k, v in args.items() if k not in ("num_cpus", "replicas", "autoscaling")}
    inspect.signature(server.PoseService.func_or_class.__init__).bind(None, **kwargs)
    auto = args["autoscaling"]
    assert 1 <= auto["min_replicas"] <= auto["max_replicas"]
    assert auto["target_ongoing_requests"] <= args["max_batch_size"]
    assert args["ckpt"].startswith("/shared/") and "token" not in args


def test_rayservice_pods_get_the_token_from_a_secret_and_fit_the_replicas():
    spec = _one("RayService")["spec"]["rayClusterConfig"]
    args = _serve_app()["args"]
    (serve_group,) = spec["workerGroupSpecs"]
    env = {e["name"]: e for e in _ray_container(serve_group)["env"]}
    assert env["POSERFT_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert "value" not in env["POSERFT_SERVE_TOKEN"]
    per_pod = _node_resources(serve_group)["CPU"] // args["num_cpus"]
    assert per_pod >= 1 and per_pod * serve_group["maxReplicas"] >= args["autoscaling"]["max_replicas"]
    assert _node_resources(spec["headGroupSpec"])["CPU"] == 0  # no model replica on the head
    assert _ports(spec["headGroupSpec"])["serve"] == 8000
