import pytest

from poserft.common.config import Config, ConfigError, load_config, parse_override


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
