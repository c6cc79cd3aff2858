"""Typed config of `openseer pretrain`: defaults, shipped presets, key=value overrides, strict errors."""

from dataclasses import dataclass, field

import pytest

from openseer.config import (
    ConfigError,
    closest_key,
    dump_yaml,
    field_docs,
    key_paths,
    load_config,
    nested,
    parse_overrides,
    preset_names,
    read_yaml,
)
from openseer.data.multicrop import CropSpec
from openseer.models.config import ModelConfig
from openseer.train.config import OptimConfig, PretrainConfig


def test_defaults_follow_swav_imagenet_recipe():
    cfg = load_config(PretrainConfig)
    assert cfg == PretrainConfig()
    assert cfg.model.arch == "resnet50" and cfg.model.prototypes == 3000 and cfg.model.out_dim == 128
    assert cfg.swav.epsilon == 0.05 and cfg.swav.sinkhorn_iters == 3 and cfg.swav.temperature == 0.1
    assert cfg.swav.crops_for_assign == [0, 1] and cfg.swav.queue_length == 3840
    assert cfg.optim.base_lr == 0.3 and cfg.optim.final_lr == 0.0003 and cfg.optim.weight_decay == 1e-6
    assert [(c.size, c.count) for c in cfg.crops] == [(224, 2), (96, 6)]


def test_preset_names():
    assert {"cpu", "swav-rn50", "seer-rg256gf"} <= set(preset_names())


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()  # a user's photos, in the folder the command runs from
    monkeypatch.chdir(tmp_path)
    assert load_config(PretrainConfig, ["photos"]).optim.batch_size == "auto"


def test_seer_preset():
    cfg = load_config(PretrainConfig, ["seer-rg256gf"])
    m, s, o = cfg.model, cfg.swav, cfg.optim
    assert m.arch == "regnety_256gf"
    assert m.prototypes == 16000 and m.head_hidden == [8192, 8192] and not m.head_bn and m.out_dim == 256
    assert s.sinkhorn_iters == 10 and s.epsilon == 0.05 and s.temperature == 0.1 and s.queue_length == 0
    assert [(c.size, c.count) for c in cfg.crops] == [(224, 2), (96, 4)]
    assert o.name == "lars" and o.warmup_steps == 8000 and o.weight_decay == 1e-5 and o.epochs == 1
    assert o.base_lr == 0.3 and o.batch_size == 16
    # SEER: lr 0.3 x batch/256 = 9.6 at 512 GPUs x 16, warm-up from 0.15 and down to 0.0096
    global_batch = 512 * o.batch_size
    assert o.base_lr * global_batch / 256 == pytest.approx(9.6)
    assert o.start_lr * global_batch / 256 == pytest.approx(0.15)
    assert o.final_lr * global_batch / 256 == pytest.approx(0.0096)
    assert cfg.run.precision == "bf16"


def test_swav_rn50_preset():
    cfg = load_config(PretrainConfig, ["swav-rn50"])
    assert cfg.model.arch == "resnet50" and cfg.model.prototypes == 3000
    assert cfg.model.head_hidden == [2048] and cfg.model.head_bn and cfg.model.out_dim == 128
    # no queue at 64 GPUs x 64 (swav_400ep_pretrain.sh); main_swav.py would round 3,840 down to 0 anyway
    assert cfg.swav.queue_length == 0 and cfg.swav.local_queue_length(64, 64) == 0
    assert cfg.swav.sinkhorn_iters == 3 and cfg.swav.freeze_prototypes_iters == 313
    assert cfg.crops == [CropSpec(224, 2, (0.14, 1.0)), CropSpec(96, 6, (0.05, 0.14))]
    assert cfg.optim.epochs == 400 and cfg.optim.warmup_epochs == 10 and cfg.optim.weight_decay == 1e-6
    assert cfg.optim.base_lr * 64 * 64 / 256 == pytest.approx(4.8)


def test_cpu_preset():
    cfg = load_config(PretrainConfig, ["cpu"])
    assert cfg.model.arch == "regnety_200mf" and cfg.model.stem == "small" and cfg.model.output_stride == 8
    assert cfg.model.prototypes == 100
    assert cfg.data.cache_size == 32 and cfg.swav.queue_length == 0 and cfg.swav.temperature == 0.15
    assert cfg.swav.epsilon == 0.03  # sharper codes than SwAV's 0.05: +0.6 points after 196 steps, two seeds
    assert cfg.swav.freeze_prototypes_iters == 0  # about 200 steps in 5 minutes: none to spare
    assert cfg.optim.trust_coefficient == 0.005
    assert [(c.size, c.count) for c in cfg.crops] == [(32, 2)]
    assert isinstance(cfg.crops[0], CropSpec) and cfg.crops[0].scale == (0.2, 1.0)


def test_overrides_come_last_and_parse_yaml_values():
    cfg = load_config(
        PretrainConfig,
        ["cpu"],
        [
            "optim.base_lr=1.2",
            "optim.epochs=3",  # an int where a float is expected is accepted and converted
            "model.head_hidden=[64, 32]",
            "model.head_bn=false",
            "data.cache_size=null",
            "optim.warmup_steps=100",
            "crops=[{size: 32, count: 2, scale: [0.2, 1.0]}]",
        ],
    )
    assert cfg.optim.base_lr == 1.2
    assert cfg.optim.epochs == 3.0 and isinstance(cfg.optim.epochs, float)
    assert cfg.model.head_hidden == [64, 32] and cfg.model.head_bn is False
    assert cfg.data.cache_size is None and cfg.optim.warmup_steps == 100
    assert cfg.crops == [CropSpec(32, 2, (0.2, 1.0))]
    assert cfg.model.arch == "regnety_200mf"  # untouched keys keep the preset's values


def test_yaml_file_source(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  prototypes: 77\nswav:\n  epsilon: 0.03\n")
    cfg = load_config(PretrainConfig, ["cpu", path])
    assert cfg.model.prototypes == 77 and cfg.swav.epsilon == 0.03
    assert cfg.model.arch == "regnety_200mf"


def test_dump_and_reload_round_trip(tmp_path):
    cfg = load_config(PretrainConfig, ["seer-rg256gf"], ["optim.base_lr=0.5"])
    dump_yaml(cfg, tmp_path / "config.yaml")
    assert load_config(PretrainConfig, [tmp_path / "config.yaml"]) == cfg


def test_unknown_key_names_it_and_suggests_the_close_one():
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, overrides=["optim.base_lrr=0.1"])
    message = str(info.value)
    assert "unknown config key 'optim.base_lrr'" in message
    assert "did you mean 'optim.base_lr'?" in message
    with pytest.raises(ConfigError, match="unknown config key 'modle'; did you mean 'model'"):
        load_config(PretrainConfig, overrides=["modle.arch=resnet50"])


def test_a_key_at_the_wrong_level_names_the_one_below():
    with pytest.raises(ConfigError, match="unknown config key 'base_lr'; did you mean 'optim.base_lr'"):
        load_config(PretrainConfig, overrides=["base_lr=0.1"])
    with pytest.raises(ConfigError, match="unknown config key 'prototype'; did you mean 'model.prototypes'"):
        load_config(PretrainConfig, overrides=["prototype=10"])
    assert closest_key("nothing_like_it", key_paths(PretrainConfig)) is None


def test_positional_values_sit_between_files_and_overrides():
    cfg = load_config(
        PretrainConfig, ["cpu"], ["run.seed=2"], {"data": {"source": "yes"}, "run": {"seed": 1}}
    )
    assert cfg.data.source == "yes" and cfg.run.seed == 2  # values are not read as YAML; overrides win


def test_unknown_key_inside_a_list_of_crops():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'crops\[0\]\.sise'; did you mean 'crops\[0\]\.size'"
    ):
        load_config(PretrainConfig, overrides=["crops=[{sise: 32, count: 2, scale: [0.2, 1.0]}]"])


@pytest.mark.parametrize(
    "override,key,expected",
    [
        ("optim.batch_size=abc", "optim.batch_size", "expected int"),
        ("optim.batch_size=2.5", "optim.batch_size", "expected int"),
        ("model.head_bn=3", "model.head_bn", "expected bool"),
        ("optim.base_lr=fast", "optim.base_lr", "expected float"),
        ("run.precision=fp8", "run.precision", "expected one of 'fp32', 'bf16', 'fp16'"),
        ("model.head_hidden=512", "model.head_hidden", "expected a list of int"),
        ("data.cache_size=big", "data.cache_size", "expected int or null"),
        ("crops=[{size: 32, count: 2, scale: [0.2]}]", "crops[0].scale", "expected a list of 2 values"),
    ],
)
def test_wrong_type_names_key_and_expected_type(override, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, overrides=[override])
    message = str(info.value)
    assert f"config key '{key}'" in message
    assert expected in message


def test_crops_for_assign_out_of_range():
    with pytest.raises(
        ConfigError, match=r"swav\.crops_for_assign.*crop 6 asked for.*defines 2 \(indices 0\.\.1\)"
    ):
        load_config(PretrainConfig, ["cpu"], ["swav.crops_for_assign=[0, 6]"])
    with pytest.raises(ConfigError, match="crop -1"):
        load_config(PretrainConfig, ["cpu"], ["swav.crops_for_assign=[-1]"])


def test_semantic_checks():
    with pytest.raises(ConfigError, match="SwAV needs at least 2"):
        load_config(PretrainConfig, overrides=["crops=[{size: 32, count: 1, scale: [0.2, 1.0]}]"])
    with pytest.raises(ConfigError, match=r"crops\[0\]"):
        load_config(PretrainConfig, overrides=["crops=[{size: 32, count: 2, scale: [0.5, 0.2]}]"])
    with pytest.raises(ConfigError, match="swav.sinkhorn_iters"):
        load_config(PretrainConfig, overrides=["swav.sinkhorn_iters=0"])
    with pytest.raises(ConfigError, match="swav.epsilon"):
        load_config(PretrainConfig, overrides=["swav.epsilon=0"])
    with pytest.raises(ConfigError, match="data.holdout"):
        load_config(PretrainConfig, overrides=["data.holdout=1.0"])


def test_output_stride_checks_name_the_key_and_what_is_allowed():
    assert load_config(PretrainConfig, ["cpu"], ["model.output_stride=8"]).model.output_stride == 8
    with pytest.raises(
        ConfigError, match=r"'model.output_stride': got 32, expected one of 2, 4, 8, 16 .*'small'"
    ):
        load_config(PretrainConfig, ["cpu"], ["model.output_stride=32"])
    with pytest.raises(ConfigError, match=r"'model.output_stride': only RegNet trunks .*'resnet50'"):
        load_config(PretrainConfig, overrides=["model.output_stride=16"])


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, ["seer-huge"])
    message = str(info.value)
    assert "unknown preset 'seer-huge'" in message
    for name in ("cpu", "seer-rg256gf", "swav-rn50"):
        assert name in message


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")


def test_malformed_overrides():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.base_lr"])
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides(["optim..base_lr=1"])
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=x"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}


def test_nested_and_later_overrides_win():
    assert nested("a.b.c", 1) == {"a": {"b": {"c": 1}}} and nested("d", [1]) == {"d": [1]}
    # a later pair wins over an earlier one; a key inside a section keeps the section's other keys
    assert parse_overrides(["a.b=1", "a.b=2", "a.c=3"]) == {"a": {"b": 2, "c": 3}}


def test_one_merge_layers_base_sources_values_strings_and_typed_pairs():
    """load_config is the merge of the command line (positional values before key=value) and of the Python API
    (a config instance as the base, keyword pairs after the strings)."""
    base = load_config(PretrainConfig, ["cpu"], ["run.seed=5"])
    cfg = load_config(base, overrides=["model.prototypes=50"])
    assert cfg.run.seed == 5 and cfg.model.arch == "regnety_200mf" and cfg.model.prototypes == 50
    assert base.model.prototypes == 100  # the base is not changed
    # in order: values, then each override, a string (its value read as YAML) or a typed (key, value) pair
    assert load_config(PretrainConfig, [], ["run.seed=2"], {"run.seed": 1}).run.seed == 2
    cfg = load_config(
        PretrainConfig,
        ["cpu"],
        ["run.seed=2", ("run.seed", 3), "data.cache_size=null", ("run", {"out_dir": "x"})],
        {"run.seed": 1, "data.source": "null", "run.out_dir": "a=b"},
    )
    assert cfg.run.seed == 3 and cfg.run.out_dir == "x" and cfg.run.checkpoint_every == 200
    assert cfg.data.cache_size is None and cfg.data.source == "null"  # a typed value is never read as YAML
    # a dataclass instance sets the whole section
    model = ModelConfig(arch="regnety_200mf", prototypes=20)
    assert load_config(PretrainConfig, ["cpu"], [("model", model)]).model.network() == model
    with pytest.raises(ConfigError, match="unknown config key 'run.seeed'; did you mean 'run.seed'"):
        load_config(PretrainConfig, overrides=[("run.seeed", 1)])
    with pytest.raises(ConfigError, match="list of 'key=value' strings, got the string 'run.seed=1'"):
        load_config(PretrainConfig, overrides="run.seed=1")  # type: ignore[arg-type]


@dataclass
class _Base:
    size: int = 1
    """Side of the base."""
    plain: int = 2


@dataclass
class _Derived(_Base):
    size: int = 3
    """Side of the derived one."""
    extra: list[int] = field(default_factory=list)
    """An extra key,
    over two lines."""


def test_field_docs_are_the_attribute_docstrings():
    assert field_docs(_Base) == {"size": "Side of the base."}
    assert field_docs(_Derived) == {
        "size": "Side of the derived one.",
        "extra": "An extra key, over two lines.",
    }


def test_learning_rates_scale_with_the_global_batch():
    # swav's linear scaling: rates are given for 256 images; 64 per process on 8 processes is twice that
    assert OptimConfig(batch_size=64).lr_scale(8) == 2.0
    assert OptimConfig(batch_size=256).lr_scale(1) == 1.0
