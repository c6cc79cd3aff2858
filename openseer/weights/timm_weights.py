"""timm (and torchvision ResNet) state dicts <-> openseer.

openseer's backbones are timm's ``RegNet`` and ``ResNet`` built without a classifier, so a timm state dict
(``regnety_320.seer``, ``regnety_640.seer``, ``regnety_1280.seer``, their ``seer_ft_in1k`` fine-tunes, any timm
RegNetY/ResNet) maps key for key; only the classifier moves: ``head.fc.*`` (RegNet) or ``fc.*`` (ResNet) becomes
openseer's separate ``classifier``. A timm training checkpoint's ``state_dict`` entry is used when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from openseer.fileio.checkpoint import CheckpointError
from openseer.weights.core import Weights, finish_import, report_unknown

Tensors = dict[str, torch.Tensor]

_CLASSIFIER_PREFIXES = ("head.fc.", "fc.")
_MARKERS = ("stem.conv.weight", "conv1.weight")  # RegNet, ResNet


def _tensors(state: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = state.get("state_dict")  # timm's train.py checkpoints
    return inner if isinstance(inner, Mapping) else state


def looks_like(state: Mapping[str, Any]) -> bool:
    keys = {k.removeprefix("module.") for k in _tensors(state)}
    return any(m in keys for m in _MARKERS)


def from_timm(state: Mapping[str, Any]) -> tuple[Tensors, Tensors | None, list[str]]:
    """(backbone state, classifier state or None, non-tensor entries)."""
    backbone: Tensors = {}
    classifier: Tensors = {}
    other = []
    for key, value in _tensors(state).items():
        key = key.removeprefix("module.")  # saved from DistributedDataParallel
        if not isinstance(value, torch.Tensor):
            other.append(key)
            continue
        prefix = next((p for p in _CLASSIFIER_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            classifier[key[len(prefix) :]] = value
        else:
            backbone[key] = value
    return backbone, classifier or None, other


def import_timm(
    state: Mapping[str, Any],
    *,
    arch: str | None = None,
    classes: list[str] | None = None,
    skip_unknown: bool = False,
    source: str = "timm state dict",
) -> Weights:
    """A timm state dict (already loaded) as openseer :class:`~openseer.weights.Weights`."""
    backbone, classifier, other = from_timm(state)
    if not backbone:
        raise CheckpointError(f"{source}: no tensors found")
    notes = report_unknown(other, skip_unknown, source, "non-tensor")
    return finish_import(
        backbone,
        None,
        classifier,
        arch=arch,
        classes=classes,
        source=source,
        notes=["format: timm", *notes],
        skip_unknown=skip_unknown,
    )


def to_timm(
    backbone: Mapping[str, torch.Tensor], classifier: Mapping[str, torch.Tensor] | None = None
) -> Tensors:
    """openseer backbone (+ classifier) -> the state dict of the timm model with a classifier."""
    out = dict(backbone)
    if classifier is not None:
        prefix = "fc." if "layer1.0.conv1.weight" in backbone else "head.fc."
        out.update({prefix + k: v for k, v in classifier.items()})
    return out
