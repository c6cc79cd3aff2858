"""RegNetY weights as torchvision's ``regnet_y_*`` state dicts (``openseer export ... format=torchvision``).

torchvision's RegNetY (``torchvision.models.regnet_y_400mf`` ... ``regnet_y_128gf``) is the pycls design with
the same generator parameters as timm's, which openseer builds on (:data:`openseer.models.REGNETY`): for the sizes
of :data:`TORCHVISION_REGNETS`, the same tensors under other names. A stage ``s{i}`` is ``trunk_output.block{i}``, its block ``b{j}`` is
``block{i}-{j-1}``, whose 1x1, grouped 3x3 and 1x1 convolutions (each with its BatchNorm) are ``f.a``, ``f.b``,
``f.c``, its squeeze-excitation ``f.se`` and its shortcut ``proj``; the stem is ``stem.0`` / ``stem.1`` and a
classifier ``fc``. torchvision builds every trunk with the ImageNet layout (stride-2 stem, every stage strided).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from openseer.config import ConfigError
from openseer.fileio.atomic import atomic_write
from openseer.weights import Weights

log = logging.getLogger(__name__)

TORCHVISION_REGNETS: dict[str, str] = {
    "regnety_400mf": "regnet_y_400mf",
    "regnety_1.6gf": "regnet_y_1_6gf",
    "regnety_3.2gf": "regnet_y_3_2gf",
    "regnety_16gf": "regnet_y_16gf",
    "regnety_32gf": "regnet_y_32gf",
    "regnety_128gf": "regnet_y_128gf",
}
"""openseer architecture -> the torchvision model builder with the same trunk, tensor for tensor."""
DIFFERENT_WIDTHS = {"regnety_800mf": "regnet_y_800mf", "regnety_8gf": "regnet_y_8gf"}
"""Sizes torchvision builds with other stage widths than pycls and timm from the same generator parameters (its
rounding to the group width differs: RegNetY-800MF's second stage has 144 channels there, 128 here; 8GF's first
224, not 168): no file of these sizes fits them."""

_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.(conv1|conv2|conv3|se|downsample)\.(conv|bn|fc1|fc2)\.(\w+)$")
_PART = {"conv1": "f.a", "conv2": "f.b", "conv3": "f.c", "se": "f.se", "downsample": "proj"}
_LAYER = {"conv": "0", "bn": "1", "fc1": "fc1", "fc2": "fc2"}
_STEM = {"stem.conv.": "stem.0.", "stem.bn.": "stem.1."}


def torchvision_key(key: str) -> str:
    """The torchvision name of one openseer (timm) RegNetY trunk key."""
    for ours, theirs in _STEM.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    found = _BLOCK.match(key)
    if found is None:
        raise ConfigError(f"no torchvision RegNetY name for the trunk key {key!r}")
    stage, block, part, layer, leaf = found.groups()
    return f"trunk_output.block{stage}.block{stage}-{int(block) - 1}.{_PART[part]}.{_LAYER[layer]}.{leaf}"


def to_torchvision(
    backbone: dict[str, torch.Tensor], classifier: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """An openseer RegNetY trunk (+ classifier) as the state dict of torchvision's ``RegNet``: trunk keys only
    (load with ``strict=False``: ``fc`` is left to the caller), or with ``fc`` from ``classifier``."""
    state = {torchvision_key(k): v for k, v in backbone.items()}
    if classifier is not None:
        state.update({f"fc.{k}": v for k, v in classifier.items()})
    return state


def export_torchvision(weights: Weights, dst: Path, with_head: bool = False) -> Path:
    """Write ``dst`` (``torch.save`` of the state dict, torchvision's own format for weights) for
    ``torchvision.models.<name>().load_state_dict(torch.load(dst), strict=False)``; with ``with_head`` the
    classifier is ``fc`` and the file loads strictly into ``<name>(num_classes=C)``."""
    model = weights.model
    name = TORCHVISION_REGNETS.get(model.arch)
    if name is None:
        if model.arch in DIFFERENT_WIDTHS:
            raise ConfigError(
                f"format torchvision: torchvision's {DIFFERENT_WIDTHS[model.arch]} has other stage widths than "
                f"{model.arch} (it rounds them to the group width differently), so no {model.arch} file fits it; "
                f"the sizes that match are {', '.join(TORCHVISION_REGNETS)}"
            )
        raise ConfigError(
            f"format torchvision: torchvision has no {model.arch}; its RegNetY sizes are "
            f"{', '.join(TORCHVISION_REGNETS)} (safetensors, torchscript and onnx take any trunk)"
        )
    if model.stem != "imagenet" or model.output_stride is not None:
        log.warning(
            "%s was trained with the %s stem and output stride %s; torchvision's %s runs the same weights with "
            "the ImageNet layout (total stride 32), so its features differ from openseer's",
            weights.source,
            model.stem,
            model.output_stride,
            name,
        )
    state = to_torchvision(
        {k: v.contiguous() for k, v in weights.backbone.items()}, weights.classifier if with_head else None
    )
    return atomic_write(dst, lambda f: torch.save(state, f))
