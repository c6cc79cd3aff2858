"""The SwAV model of a pretraining config: trunk + head, built whole or materialised after a meta-device build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from openseer.models.backbone import build_backbone, feature_dim, init_backbone_
from openseer.models.head import SwAVHead, SwAVModel


class SwAVModelSpec(Protocol):
    """The model settings of a pretraining config (``PretrainConfig.model`` has them all)."""

    arch: str
    stem: str
    head_hidden: Sequence[int]
    head_bn: bool
    out_dim: int
    prototypes: int
    zero_init_last_bn: bool


def build_swav_model(spec: SwAVModelSpec) -> SwAVModel:
    """Trunk ``spec.arch`` and a SwAV head on its features, initialised as ``spec`` asks (on the current
    default device: inside ``torch.device('meta')`` nothing is allocated, see :func:`init_swav_model_`)."""
    backbone = build_backbone(spec.arch, stem=spec.stem, zero_init_last_bn=spec.zero_init_last_bn)
    head = SwAVHead(feature_dim(backbone), spec.head_hidden, spec.out_dim, spec.prototypes, spec.head_bn)
    return SwAVModel(backbone, head)


@torch.no_grad()
def init_swav_model_(model: SwAVModel, zero_init_last_bn: bool) -> None:
    """Draw every parameter and buffer of ``model`` again, in place, as :func:`build_swav_model` does.

    For a model built on the meta device and given storage with ``to_empty`` (whole, or as FSDP2 shards: each
    process then fills only its own shards).
    """
    init_backbone_(model.backbone, zero_init_last_bn)
    model.head.reset_parameters()
