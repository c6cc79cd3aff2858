"""Trunks by name: the RegNetY family and ResNet-50 (SwAV's classic baseline)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from openseer.models.regnet import REGNETY, build_regnety

ARCHS = (*REGNETY, "resnet50", "resnet18")


def build_backbone(arch: str, stem: str = "imagenet") -> nn.Module:
    """``forward(images (B,3,H,W)) -> pooled features (B, D)``; ``module.num_features == D``."""
    if arch in REGNETY:
        return build_regnety(arch, stem=stem)
    if arch in ("resnet50", "resnet18"):
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        if stem == "small":
            model.conv1 = nn.Conv2d(
                3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False
            )
            model.maxpool = nn.Identity()
        return model
    raise ValueError(f"unknown backbone '{arch}' (available: {', '.join(ARCHS)})")


def feature_dim(backbone: nn.Module) -> int:
    return int(backbone.num_features)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(arch: str, stem: str = "imagenet") -> nn.Module:
    with torch.device("meta"):
        return build_backbone(arch, stem)
