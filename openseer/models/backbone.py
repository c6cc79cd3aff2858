"""Trunks by name: the RegNetY family and ResNet-50 (SwAV's classic baseline)."""

from __future__ import annotations

import math

import timm
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from openseer.models.regnet import REGNETY, build_regnety
from openseer.models.small_maps import use_small_map_kernels_

ARCHS = (*REGNETY, "resnet50", "resnet18")


def build_backbone(
    arch: str,
    stem: str = "imagenet",
    zero_init_last_bn: bool = True,
    small_map_kernels: bool = True,
    output_stride: int | None = None,
) -> nn.Module:
    """``forward(images (B,3,H,W)) -> pooled features (B, D)``; ``module.num_features == D``.

    ``zero_init_last_bn``: start each residual block's last BatchNorm scale at 0 (timm's default, kept here
    for callers that do not say); swav's ResNet-50 and VISSL's RegNet start it at 1 (``model.zero_init_last_bn``
    in the pretraining config).

    ``small_map_kernels``: 1x1 and narrow grouped convolutions over small CPU maps take the faster kernels of
    :mod:`openseer.models.small_maps` (the same function; only the kernel differs).

    ``output_stride``: a RegNet's total stride, below its stem's own (``model.output_stride``).
    """
    model = _build_trunk(arch, stem, zero_init_last_bn, output_stride)
    if small_map_kernels:
        use_small_map_kernels_(model)
    return model


def _build_trunk(arch: str, stem: str, zero_init_last_bn: bool, output_stride: int | None) -> nn.Module:
    if arch in REGNETY:
        return build_regnety(arch, stem, zero_init_last_bn, output_stride)
    if output_stride is not None:
        raise ValueError(f"output_stride is for RegNet trunks, not {arch}")
    if arch in ("resnet50", "resnet18"):
        model = timm.create_model(arch, pretrained=False, num_classes=0, zero_init_last=zero_init_last_bn)
        if stem == "small":
            model.conv1 = nn.Conv2d(
                3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False
            )
            _init_conv_(model.conv1)  # as timm initialised the stem it replaces
            model.maxpool = nn.Identity()
        return model
    raise ValueError(f"unknown backbone '{arch}' (available: {', '.join(ARCHS)})")


def _init_conv_(conv: nn.Conv2d) -> None:
    """He-normal over the fan-out of one group: std sqrt(2 / (k_h * k_w * out / groups)), bias 0.

    timm's RegNet rule (pycls); for the ungrouped convolutions of ResNet it is timm's
    ``kaiming_normal_(mode='fan_out', nonlinearity='relu')``.
    """
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


@torch.no_grad()
def init_backbone_(backbone: nn.Module, zero_init_last_bn: bool) -> None:
    """Draw a trunk's weights again, in place, from the distributions timm's constructors use.

    Convolutions: :func:`_init_conv_`; BatchNorm: scale 1, shift 0, running mean 0 and variance 1 (then the
    last BatchNorm of each residual block at scale 0 with ``zero_init_last_bn``); Linear: N(0, 0.01), bias 0.
    Materialises a trunk built on the meta device once its storage exists (``to_empty``); every operation also
    works on the sharded (DTensor) parameters of an FSDP2 model.
    """
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            _init_conv_(module)
        elif isinstance(module, _BatchNorm):
            module.reset_parameters()
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if zero_init_last_bn:
        for module in backbone.modules():
            if hasattr(module, "zero_init_last"):  # timm's residual blocks
                module.zero_init_last()


def feature_dim(backbone: nn.Module) -> int:
    return int(backbone.num_features)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(arch: str, stem: str = "imagenet", output_stride: int | None = None) -> nn.Module:
    with torch.device("meta"):
        return build_backbone(arch, stem, output_stride=output_stride)
