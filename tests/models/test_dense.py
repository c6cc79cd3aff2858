"""The trunk for dense tasks: its standard stride-4..32 layout from any pretraining layout, its feature maps by
level, and torchvision's feature-pyramid backbone on it (which stages train, which BatchNorms are frozen)."""

from __future__ import annotations

import pytest
import torch
from support import assert_same_features, randomize_batchnorm
from timm.layers import FrozenBatchNormAct2d
from torch import nn

from openseer.config import ConfigError, load_config
from openseer.models import build_backbone
from openseer.models.config import ModelConfig
from openseer.models.dense import FeatureMaps, backbone_with_fpn, check_levels, dense_layout
from openseer.train.config import PretrainConfig


def _trunk(arch: str, stem: str = "imagenet", output_stride: int | None = None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(build_backbone(arch, stem, output_stride=output_stride), seed)


@pytest.mark.parametrize("arch", ["regnety_200mf", "resnet18"])
def test_levels_are_the_maps_at_stride_two_to_the_level(arch: str) -> None:
    x = torch.randn(2, 3, 64, 96)
    maps = FeatureMaps(_trunk(arch), levels=[1, 2, 3, 4, 5]).eval()
    with torch.no_grad():
        out = maps(x)
    assert list(out) == [1, 2, 3, 4, 5]
    for level, fmap in out.items():
        assert fmap.shape[-2:] == (64 // 2**level, 96 // 2**level), level
        assert fmap.shape[1] == maps.channels[level]


def test_the_last_level_pooled_is_the_pooled_feature() -> None:
    """Level 5 is the trunk's last stage: its global average is what the trunk's own forward returns."""
    trunk = _trunk("regnety_200mf")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        level5 = FeatureMaps(trunk, levels=[5]).eval()(x)[5]
        pooled = trunk.eval()(x)
    assert_same_features(level5.mean(dim=(2, 3)), pooled)


def test_the_cpu_presets_trunk_is_rebuilt_with_the_standard_strides_from_the_same_weights() -> None:
    """The cpu preset trains a small stem with its last stage unstrided (stride 8 in all); the dense layout keeps
    every tensor and strides the stem and every stage."""
    preset = load_config(PretrainConfig, ["cpu"]).model
    assert (preset.stem, preset.output_stride) == ("small", 8)
    dense = dense_layout(preset)
    assert (dense.stem, dense.output_stride, dense.arch) == ("imagenet", None, preset.arch)
    trained = _trunk(preset.arch, preset.stem, preset.output_stride)
    rebuilt = build_backbone(dense.arch, dense.stem, output_stride=dense.output_stride)
    rebuilt.load_state_dict(trained.state_dict())  # every key, every shape
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        as_trained = trained(x)  # the layout it was trained in still runs...
        strides = {
            level: 64 // m.shape[-1] for level, m in FeatureMaps(rebuilt, [1, 2, 3, 4, 5]).eval()(x).items()
        }
        trained_strides = {
            level: 64 // m.shape[-1] for level, m in FeatureMaps(trained, [1, 2, 3, 4, 5]).eval()(x).items()
        }
    assert as_trained.shape == (1, trained.num_features)
    assert strides == {1: 2, 2: 4, 3: 8, 4: 16, 5: 32}
    assert trained_strides == {
        1: 2,
        2: 2,
        3: 4,
        4: 8,
        5: 8,
    }  # ...with stages at the strides it was trained at


def test_a_resnet_small_stem_has_no_dense_layout() -> None:
    assert dense_layout(ModelConfig(arch="resnet50")) == ModelConfig(arch="resnet50")
    with pytest.raises(ConfigError, match="small stem .* has no stride-4..32 layout"):
        dense_layout(ModelConfig(arch="resnet50", stem="small"))


@pytest.mark.parametrize("levels", [[], [0], [6], [2, 7]])
def test_levels_outside_one_to_five_are_refused(levels: list[int]) -> None:
    with pytest.raises(ValueError, match="expected some of"):
        check_levels(levels)
    assert check_levels([4, 2, 2]) == [2, 4]


@pytest.mark.parametrize(
    ("trainable", "train"), [(0, []), (3, ["s2", "s3", "s4"]), (5, ["stem", "s1", "s2", "s3", "s4"])]
)
def test_fpn_backbone_trains_the_last_stages_with_frozen_batchnorm(trainable: int, train: list[str]) -> None:
    trunk = _trunk("regnety_200mf")
    fpn = backbone_with_fpn(trunk, out_channels=16, trainable_stages=trainable, frozen_batchnorm=True)
    stages = {name.split(".")[0] for name, p in fpn.body.named_parameters() if p.requires_grad}
    assert stages == set(train)
    assert all(p.requires_grad for p in fpn.fpn.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fpn.body.modules())
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in fpn.body.modules())
    with torch.no_grad():
        out = fpn.eval()(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[-1] for k, v in out.items()} == {"0": 16, "1": 8, "2": 4, "3": 2, "pool": 1}
    assert all(v.shape[1] == 16 for v in out.values())


def test_fpn_backbone_of_a_resnet_trains_its_stem_with_every_stage() -> None:
    fpn = backbone_with_fpn(_trunk("resnet18"), out_channels=8, trainable_stages=5, frozen_batchnorm=False)
    trained = {name.split(".")[0] for name, p in fpn.body.named_parameters() if p.requires_grad}
    assert trained == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert any(isinstance(m, nn.BatchNorm2d) for m in fpn.body.modules())  # not frozen: trained
