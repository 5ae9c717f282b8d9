"""Loading a configuration: YAML file plus dotted `--set` overrides, validated against the schema.

    cfg = load_config("configs/tiny-cpu.yaml", ["data.train_poses=5000", "seed=3"])

Unknown keys, wrong types and impossible requests are errors (`ConfigError`) whose message is
one line naming the dotted key (`rl.rollout.num_gpus`) and where it was set (file or override).
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from poserft.common.config.schema import _RULE, Config, ConfigError


def _one_line(text: str) -> str:
    """Line breaks of any kind become spaces (keys inside reprs are escaped already)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _set_dotted(tree: dict, dotted: str, value: Any, model: type[BaseModel] | None = None) -> None:
    """Set `dotted` in `tree`. An override inside a mapping field the tree does not set yet (such as
    `rewards.weights.text2pose.semantic=0`) starts from that field's default mapping, so it changes
    one entry instead of replacing the whole mapping with a one-entry one."""
    keys = dotted.split(".")
    node = tree
    for i, k in enumerate(keys[:-1]):
        if k not in node and model is not None:
            default = _mapping_default(model, keys[: i + 1])
            if default is not None:
                node[k] = default
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is a value, not a section")
        node = nxt
    node[keys[-1]] = value


def _section(model: type[BaseModel] | None, part: str) -> type[BaseModel] | None:
    """The section model of field `part` of `model`; None when it is a value or does not exist."""
    field = model.model_fields.get(part) if model is not None else None
    ann = field.annotation if field is not None else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _mapping_default(model: type[BaseModel], loc: list[str]) -> dict | None:
    """A deep copy of the default of the field at `loc` when it is a mapping (not a section)."""
    for part in loc[:-1]:
        model = _section(model, part)
    field = model.model_fields.get(loc[-1]) if model is not None else None
    if field is None or _section(model, loc[-1]) is not None:
        return None
    default = field.get_default(call_default_factory=True)
    return copy.deepcopy(default) if isinstance(default, dict) else None


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
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        # Not YAML (or a YAML scalar that does not construct, such as `2001-13-01`): a string.
        return key, raw


def _short_repr(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except RecursionError:
        text = f"<recursive {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the section at `loc` (for "did you mean"); [] when it is not a section."""
    for part in loc:
        model = _section(model, part)
        if model is None:
            return []
    return list(model.model_fields)


def _origin(key: str, path: Path | None, sources: list[tuple[str, str]]) -> str:
    """Where `key` was set: the last override touching it, else the file."""
    for dotted, text in reversed(sources):
        if key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + "."):
            return f" (set by override {text!r})"
    return f" in {path}" if path is not None else ""


def _describe(err: ValidationError, model: type[BaseModel] = None, path: Path | None = None, sources=()) -> str:
    """The first validation error as one sentence naming the dotted key."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 1 and loc[-1] == "[key]" and first["type"] != "extra_forbidden":
        loc.pop()  # pydantic's marker for "the key itself (not its value) is invalid"
    ctx = first.get("ctx") or {}
    if first["type"] == _RULE:
        loc += [k for k in str(ctx.get("key", "")).split(".") if k]
        problem = _one_line(ctx.get("reason", first["msg"]))
    else:
        problem = f"{_one_line(first['msg'])} (got {_short_repr(first.get('input'))})"
    key = ".".join(loc) or "<root>"
    where = _origin(key, path, list(sources))
    if first["type"] == "extra_forbidden":
        hint = ""
        if model is not None and loc:
            close = difflib.get_close_matches(loc[-1], _fields_at(model, loc[:-1]), n=1)
            hint = f"; did you mean {'.'.join([*loc[:-1], close[0]])!r}?" if close else ""
        return _one_line(f"unknown config key {key!r}{where}{hint}")
    return _one_line(f"config key {key!r}{where}: {problem}")


# Keys that existed once: a config that still sets one gets an error naming what replaced it.
REMOVED_KEYS = {
    "model.freeze": "was replaced by model.train: set a part's multiplier to 0 to keep it fixed (e.g. "
    "model.train.vision: 0)",
    "rl.lr_scale": "was replaced by model.train: one learning-rate multiplier per part (e.g. model.train.lm: 0.1)",
    "rl.pose_loss_trains_trunk": "was replaced by model.train.pose_loss (all, or head for false)",
    "rl.optimizer": "was removed: the learner always uses AdamW (sgd was never used; NOTES.md)",
    "rl.pose_logprob_reduce": "was removed: the pose log-prob is always summed over its 144 numbers (mean showed no "
    "gain; NOTES.md)",
    "rl.dual_clip": "was removed: plain PPO clipping is used (dual clipping was never measured to help; NOTES.md)",
}


def _check_removed(tree: dict, path: Path | None, sources: list[tuple[str, str]]) -> None:
    for dotted, what in REMOVED_KEYS.items():
        node: Any = tree
        for key in dotted.split("."):
            node = node.get(key, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            raise ConfigError(f"config key {dotted!r}{_origin(dotted, path, sources)} {what}")


_MISSING = object()


def _validate(tree: Any, model: type[BaseModel], path: Path | None, sources: list[tuple[str, str]]) -> BaseModel:
    if not isinstance(tree, dict):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(tree).__name__}")
    if model is Config:
        _check_removed(tree, path, sources)
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err, model, path, sources)) from None
    except RecursionError:
        raise ConfigError(f"config{' file ' + str(path) if path else ''} is nested too deeply") from None


def validate_config(tree: dict, model: type[BaseModel] = Config) -> BaseModel:
    return _validate(tree, model, None, [])


class _Loader(yaml.SafeLoader):
    """SafeLoader whose value errors (`2001-13-01`, `!!int abc`) become YAML errors with a line."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as err:
            what = f" {_short_repr(node.value)}" if isinstance(node, yaml.ScalarNode) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value{what} ({_one_line(err)})", node.start_mark
            ) from None


def _check_duplicate_keys(node, path: Path, prefix: str = "", seen_nodes: set | None = None) -> None:
    """YAML keeps the last of two equal keys; in a config that silently drops a whole section."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # aliases may point back up the tree
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = f"{prefix}{key_node.value}"
                line = key_node.start_mark.line + 1
                if key_node.value in lines:
                    raise ConfigError(
                        f"config file {path}, line {line}: duplicate key {key!r} (first set on line "
                        f"{lines[key_node.value]}); a second entry would silently replace the first"
                    )
                lines[key_node.value] = line
                _check_duplicate_keys(value_node, path, key + ".", seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, path, f"{prefix}{i}.", seen_nodes)


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = ": ".join(p for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(err.position, 0)) + 1
        return f"line {line}: character U+{err.character:04X} is not allowed in YAML text"
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {_one_line(problem or err)}"
    return _one_line(err)


def _read_config_file(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {_one_line(err.strerror or err)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); is it a YAML file?"
        ) from None
    loader = None
    try:
        loader = _Loader(text)  # checks for unprintable characters already
        node = loader.get_single_node()
        if node is not None:
            _check_duplicate_keys(node, path)
        tree = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err, text)}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    finally:
        if loader is not None:
            loader.dispose()
    if tree is None:
        raise ConfigError(f"config file {path} is empty (no keys); leave out the config file to use the defaults")
    if not isinstance(tree, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys to values at the top level, not a {type(tree).__name__}"
        )
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, model: type[BaseModel] = Config):
    tree: dict = {}
    if path is not None:
        path = Path(path)
        tree = _read_config_file(path)
    sources: list[tuple[str, str]] = []
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, model)
        sources.append((key, text))
    return _validate(tree, model, path, sources)
