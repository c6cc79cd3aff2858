"""VISSL / ClassyVision checkpoints (SEER RegNetY-32GF ... 10B, their ImageNet fine-tunes, SwAV) <-> openseer.

Why the names differ from timm's (and torchvision's) RegNet: VISSL wraps ClassyVision's AnyNet and re-exposes its
stem and stages as "feature blocks", so a checkpoint's trunk keys read

    _feature_blocks.conv1.stem.{0: conv, 1: bn}.*                         the 3x3 stride-2 stem
    _feature_blocks.res{s+1}.block{s}-{j}.<part>.*                         stage s (1-based), block j (0-based)
    _feature_blocks.res{s+1}.block{s}-part{g}.block{s}-{j}.<part>.*        the same under regnet_fsdp (SEER-10B)

with ``<part>`` one of ``f.a.0``/``f.a.1`` (1x1 conv, BN), ``f.b.0``/``f.b.1`` (3x3 grouped conv, BN),
``f.se.excitation.0``/``.2`` (squeeze-excitation convs), ``f.c``/``f.final_bn`` (1x1 conv, BN) and
``proj``/``bn`` (shortcut conv, BN); timm names the same tensors ``s{s}.b{j+1}.conv1.conv`` and so on. Shapes
and the arithmetic are identical, so the conversion is a renaming. VISSL's ResNe(X)t trunk keeps torchvision's
names under ``_feature_blocks.``. The file nests trunk and heads as
``classy_state_dict -> base_model -> model -> {trunk, heads}``; heads are ``0.projection_head.*`` and
``0.prototypes0.weight`` (SwAV) or ``0.clf.0.*`` (a fine-tuned linear classifier).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from openseer.fileio.checkpoint import CheckpointError
from openseer.weights.core import Weights, finish_import, report_unknown

Tensors = dict[str, torch.Tensor]

PREFIX = "_feature_blocks."

# timm sub-module -> ClassyVision sub-module inside one RegNet block; parameter names are shared.
BLOCK_PARTS: dict[str, str] = {
    "conv1.conv": "f.a.0",
    "conv1.bn": "f.a.1",
    "conv2.conv": "f.b.0",
    "conv2.bn": "f.b.1",
    "se.fc1": "f.se.excitation.0",
    "se.fc2": "f.se.excitation.2",
    "conv3.conv": "f.c",
    "conv3.bn": "f.final_bn",
    "downsample.conv": "proj",
    "downsample.bn": "bn",
}
STEM_PARTS: dict[str, str] = {"stem.conv": "conv1.stem.0", "stem.bn": "conv1.stem.1"}
_VISSL_BLOCK_PARTS = {v: k for k, v in BLOCK_PARTS.items()}
_VISSL_STEM_PARTS = {v: k for k, v in STEM_PARTS.items()}

_TIMM_BLOCK = re.compile(r"^s(\d+)\.b(\d+)\.(.+)\.(\w+)$")
_VISSL_BLOCK = re.compile(r"^res(\d+)\.(?:block(\d+)-part\d+\.)?block(\d+)-(\d+)\.(.+)\.(\w+)$")
_HEAD_KEY = re.compile(r"^0\.(projection_head\.\d+|prototypes0|clf\.0)\.(\w+)$")


# ---------------------------------------------------------------- VISSL -> openseer


def _strip(key: str, *prefixes: str) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def split_trunk_heads(state: Mapping[str, Any]) -> tuple[Tensors, Tensors]:
    """(trunk, heads) state dicts from a VISSL checkpoint, a ``{trunk, heads}`` dict or a flat model state."""
    node: Any = state
    for key in ("classy_state_dict", "base_model", "model"):
        if isinstance(node, Mapping) and isinstance(node.get(key), Mapping):
            node = node[key]
    if "trunk" in node and isinstance(node["trunk"], Mapping):
        return dict(node["trunk"]), dict(node.get("heads") or {})
    trunk, heads = {}, {}
    for key, value in node.items():  # a flat model state dict: trunk.* / heads.* (possibly DDP's module.)
        key = _strip(key, "module.")
        if key.startswith("heads."):
            heads[key[len("heads.") :]] = value
        else:
            trunk[_strip(key, "trunk.")] = value
    return trunk, heads


def looks_like(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is laid out like a VISSL/ClassyVision checkpoint."""
    if "classy_state_dict" in state:
        return True
    trunk, _ = split_trunk_heads(state)
    return any(_strip(k, "module.").startswith(PREFIX) for k in trunk)


def _regnet_key(vissl_key: str) -> str | None:
    """``res2.block1-0.f.a.0.weight`` (after the prefix) -> ``s1.b1.conv1.conv.weight``; None if not RegNet."""
    *module, param = vissl_key.split(".")
    part = ".".join(module)
    if part in _VISSL_STEM_PARTS:
        return f"{_VISSL_STEM_PARTS[part]}.{param}"
    m = _VISSL_BLOCK.match(vissl_key)
    if m is None:
        return None
    res, group_stage, stage, block, part, param = m.groups()
    if int(res) != int(stage) + 1 or (group_stage is not None and group_stage != stage):
        return None
    if part not in _VISSL_BLOCK_PARTS:
        return None
    return f"s{stage}.b{int(block) + 1}.{_VISSL_BLOCK_PARTS[part]}.{param}"


def trunk_to_openseer(trunk: Mapping[str, torch.Tensor]) -> tuple[Tensors, list[str]]:
    """(backbone state in timm's names, keys that fit nowhere). RegNet and ResNe(X)t trunks."""
    keys = {_strip(k, "module.", "trunk."): v for k, v in trunk.items()}
    is_resnet = any(k.startswith(PREFIX + "layer1.") for k in keys)
    out: Tensors = {}
    unknown = []
    for key, value in keys.items():
        if not key.startswith(PREFIX):
            unknown.append(key)
            continue
        rest = key[len(PREFIX) :]
        new = rest if is_resnet else _regnet_key(rest)  # VISSL's ResNet keeps torchvision's names
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    return out, unknown


def heads_to_openseer(heads: Mapping[str, torch.Tensor]) -> tuple[Tensors | None, Tensors | None, list[str]]:
    """(SwAV head state, classifier state, keys that fit nowhere) from VISSL's ``heads`` dict."""
    head: Tensors = {}
    classifier: Tensors = {}
    unknown = []
    for key, value in heads.items():
        key = _strip(key, "module.", "heads.")
        m = _HEAD_KEY.match(key)
        if m is None:
            unknown.append(key)
            continue
        module, param = m.groups()
        if module == "clf.0":
            classifier[param] = value
        elif module == "prototypes0":
            head[f"prototypes.{param}"] = value
        else:  # projection_head.N: VISSL's Linear/BN/ReLU sequence has SwAVHead.projection's indices
            head[f"projection.{module.split('.')[1]}.{param}"] = value
    return head or None, classifier or None, unknown


def import_vissl(
    state: Mapping[str, Any],
    *,
    arch: str | None = None,
    classes: list[str] | None = None,
    skip_unknown: bool = False,
    source: str = "VISSL checkpoint",
) -> Weights:
    """A VISSL/ClassyVision checkpoint (already loaded) as openseer :class:`~openseer.weights.Weights`."""
    trunk, heads = split_trunk_heads(state)
    if not trunk:
        raise CheckpointError(
            f"{source}: no trunk tensors found (expected classy_state_dict/base_model/model/trunk)"
        )
    backbone, unknown_trunk = trunk_to_openseer(trunk)
    head, classifier, unknown_heads = heads_to_openseer(heads)
    notes = report_unknown(unknown_trunk, skip_unknown, source, "trunk")
    notes += report_unknown(unknown_heads, skip_unknown, source, "head")
    return finish_import(
        backbone,
        head,
        classifier,
        arch=arch,
        classes=classes,
        source=source,
        notes=["format: vissl", *notes],
        skip_unknown=skip_unknown,
    )


# ---------------------------------------------------------------- openseer -> VISSL


def _vissl_key(key: str, fsdp_groups: bool) -> str:
    *module, param = key.split(".")
    part = ".".join(module)
    if part in STEM_PARTS:
        return f"{PREFIX}{STEM_PARTS[part]}.{param}"
    m = _TIMM_BLOCK.match(key)
    if m is None or m.group(3) not in BLOCK_PARTS:
        raise ValueError(f"'{key}' is not a RegNet backbone key")
    stage, block, part, param = m.groups()
    group = f"block{stage}-part0." if fsdp_groups else ""  # regnet_fsdp without checkpoint splits: one group
    return f"{PREFIX}res{int(stage) + 1}.{group}block{stage}-{int(block) - 1}.{BLOCK_PARTS[part]}.{param}"


def backbone_to_trunk(backbone: Mapping[str, torch.Tensor], fsdp_groups: bool = False) -> Tensors:
    """openseer backbone state -> VISSL trunk state (RegNet names; ResNets keep theirs under the prefix)."""
    if any(k.startswith("layer1.") for k in backbone):
        return {PREFIX + k: v for k, v in backbone.items()}
    return {_vissl_key(k, fsdp_groups): v for k, v in backbone.items()}


def to_vissl_checkpoint(
    backbone: Mapping[str, torch.Tensor],
    head: Mapping[str, torch.Tensor] | None = None,
    classifier: Mapping[str, torch.Tensor] | None = None,
    fsdp_groups: bool = False,
) -> dict[str, Any]:
    """A checkpoint laid out as VISSL writes it (tensors shared, not copied), for tests and for VISSL users."""
    if head is not None and classifier is not None:
        raise ValueError("VISSL checkpoints hold one head: a SwAV head or a classifier")
    heads: Tensors = {}
    for key, value in (head or {}).items():
        if key.startswith("projection."):
            heads[f"0.projection_head.{key[len('projection.') :]}"] = value
        elif key == "prototypes.weight":
            heads["0.prototypes0.weight"] = value
        else:
            raise ValueError(f"'{key}' is not a SwAV head key")
    for key, value in (classifier or {}).items():
        heads[f"0.clf.0.{key}"] = value
    model = {"trunk": backbone_to_trunk(backbone, fsdp_groups), "heads": heads}
    return {"classy_state_dict": {"base_model": {"model": model, "meta": {}}}, "phase_idx": 0, "iteration": 0}
