"""A trunk for dense tasks: its feature maps at strides 4 to 32, and the trunk as a torchvision detection backbone.

Levels follow the feature-pyramid convention (Lin et al. 2017, FPN): level ``l`` is the map at stride ``2**l``,
so levels 2..5 are the outputs of the four stages (stride 4, 8, 16, 32) and level 1 that of the stem (stride 2).
Detection heads are built for those strides (torchvision's anchor sizes 32..512 over P2..P6), so a dense trunk
always has the standard layout: the stem and every stage halve the resolution.

A trunk pretrained in another layout (``model.stem: small``, or a ``model.output_stride`` below the stem's, as
the ``cpu`` preset's: stride 8 in all) is rebuilt in the standard layout from the same weights
(:func:`dense_layout`): a RegNet's layouts differ only in which convolutions are strided, never in a weight's
shape. Its filters then see the image at the standard resolution of each stage, not the finer one they were
trained at: for small images, feed them larger (``model.min_size`` of ``openseer detect``).

The stages are taken by name (timm's ``feature_info``) with torchvision's ``IntermediateLayerGetter``, and the
feature pyramid is torchvision's ``BackboneWithFPN``: nothing here walks the stages by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from openseer.config import ConfigError
from openseer.models.config import ModelConfig
from openseer.models.regnet import REGNETY

LEVELS = (1, 2, 3, 4, 5)
"""Level l is the feature map at stride 2**l: 1 the stem's, 2..5 the four stages'."""
FPN_LEVELS = (2, 3, 4, 5)
"""The levels a feature pyramid is built on (torchvision's detection backbones take the same four stages)."""
TRAINABLE_STAGES = 5
"""Stages that can be trained in a detector: the stem and the four stages (torchvision's ``trainable_layers``)."""


def dense_layout(model: ModelConfig) -> ModelConfig:
    """``model`` in the standard layout (ImageNet stem, total stride 32) with the same weights.

    A RegNet's small stem and ``output_stride`` change strides only, so its weights fit the standard layout as
    they are; a ResNet's small stem is another convolution (3x3, stride 1, no max-pool), which has no standard
    layout: that is a :class:`~openseer.config.ConfigError`.
    """
    if model.arch in REGNETY:
        return replace(model, stem="imagenet", output_stride=None)
    if model.stem != "imagenet":
        raise ConfigError(
            f"a {model.arch} with the small stem (3x3 stride-1 convolution, no max-pool) has no stride-4..32 "
            "layout for dense tasks; use a RegNet trunk (any stem) or a ResNet with the ImageNet stem"
        )
    return model


def check_levels(levels: Sequence[int]) -> list[int]:
    """``levels`` as a sorted list without repeats, or a ValueError naming the allowed ones."""
    wanted = sorted(set(levels))
    if not wanted or any(level not in LEVELS for level in wanted):
        raise ValueError(
            f"levels {list(levels)}: expected some of {list(LEVELS)} (level l is the map at stride 2**l)"
        )
    return wanted


def level_layers(trunk: nn.Module) -> dict[int, tuple[str, int]]:
    """Level -> (name of the trunk's child module that outputs it, its channels), from timm's ``feature_info``
    (RegNet: stem, s1..s4; ResNet: act1, layer1..layer4)."""
    info = trunk.feature_info
    return {level: (info[level - 1]["module"], int(info[level - 1]["num_chs"])) for level in LEVELS}


class FeatureMaps(nn.Module):
    """``forward(images (B, 3, H, W)) -> {level: (B, C_level, ~H / 2**level, ~W / 2**level)}`` of a trunk in the
    standard layout (:func:`dense_layout`); the trunk's modules are shared, not copied."""

    def __init__(self, trunk: nn.Module, levels: Sequence[int] = FPN_LEVELS) -> None:
        super().__init__()
        self.levels = check_levels(levels)
        layers = level_layers(trunk)
        self.channels = {level: layers[level][1] for level in self.levels}
        self.body = IntermediateLayerGetter(trunk, {layers[level][0]: str(level) for level in self.levels})

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(name): x for name, x in self.body(images).items()}


def freeze_stages_(trunk: nn.Module, trainable: int) -> None:
    """Stop the gradient of all but the last ``trainable`` stages of a trunk (0..5, the stem counting as the
    first), as torchvision's ``trainable_backbone_layers``."""
    if not 0 <= trainable <= TRAINABLE_STAGES:
        raise ConfigError(f"trainable stages: got {trainable}, expected 0 to {TRAINABLE_STAGES}")
    layers = level_layers(trunk)
    train = [layers[level][0] for level in LEVELS[len(LEVELS) - trainable :]]
    if trainable == TRAINABLE_STAGES and "act1" in train:  # a ResNet's stem is conv1, bn1, act1
        train += ["conv1", "bn1"]
    for name, parameter in trunk.named_parameters():
        parameter.requires_grad_(name.split(".")[0] in train)


def backbone_with_fpn(
    trunk: nn.Module,
    out_channels: int = 256,
    trainable_stages: int = 3,
    frozen_batchnorm: bool = True,
) -> BackboneWithFPN:
    """The trunk (standard layout) with a feature pyramid on levels 2..5 and a max-pooled level 6: torchvision's
    ``BackboneWithFPN``, the backbone of its Faster and Mask R-CNN.

    Its outputs are named "0".."3" and "pool", the names torchvision's detection heads read. ``frozen_batchnorm``
    turns every BatchNorm into a fixed affine map with the pretrained statistics (timm's
    ``freeze_batch_norm_2d``; torchvision's detection backbones use ``FrozenBatchNorm2d`` the same way): detection
    batches of a few images give poor batch statistics. ``trunk`` is changed in place.
    """
    if frozen_batchnorm:
        trunk = freeze_batch_norm_2d(trunk)
    freeze_stages_(trunk, trainable_stages)
    layers = level_layers(trunk)
    return BackboneWithFPN(
        trunk,
        return_layers={layers[level][0]: str(i) for i, level in enumerate(FPN_LEVELS)},
        in_channels_list=[layers[level][1] for level in FPN_LEVELS],
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
    )
