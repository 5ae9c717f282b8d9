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
    assert cfg.model.train.parts() == {"lm": 0.1, "vision": 0.0, "projector": 1.0, "pose_in": 1.0, "head": 1.0}
    with pytest.raises(ConfigError, match="model.train.*keeps every part fixed"):
        load_config(None, [f"model.train.{p}=0" for p in ("lm", "vision", "projector", "pose_in", "head")])
    with pytest.raises(ConfigError, match="model.train.lm.*lora.enabled"):
        load_config(None, ["model.train.lm=0", "model.lora.enabled=true"])
    with pytest.raises(ConfigError, match="model.train.pose_loss"):
        load_config(None, ["model.train.pose_loss=trunk"])
