"""Continued pretraining: a run that starts from a weights file (``model.init``) instead of a random draw.

:func:`read_initial` reads the file through the one loader, :func:`openseer.weights.load_weights`, and checks its
architecture against ``model.arch`` ('auto': takes the file's architecture and stem). :func:`load_initial_`
copies it into the run's freshly built model before the model is wrapped for DDP (whose first broadcast then
spreads it), or, under FSDP, into each process's own shards of it (every process reads the file, memory-mapped
where it can, and keeps its part). The trunk is always loaded; the SwAV head when its shapes are the config's,
otherwise the new head keeps its random draw, and the loop freezes its prototypes for the first
``swav.freeze_prototypes_iters`` steps as in any run from step 0. A classifier in the file is ignored. The
optimiser and the schedule start afresh.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from openseer.config import ConfigError
from openseer.fileio.checkpoint import CheckpointError
from openseer.models import SwAVModel
from openseer.train.config import PretrainConfig
from openseer.weights import Weights, load_weights
from openseer.weights.core import check_state, comparable_shapes, expected_shapes, head_config

log = logging.getLogger(__name__)


@dataclass
class Initial:
    """The weights a run starts from, read from ``model.init``."""

    weights: Weights
    path: str
    """The file as the run's config records it (absolute)."""


def read_initial(cfg: PretrainConfig) -> tuple[PretrainConfig, Initial]:
    """(``cfg`` with ``model.init`` made absolute and ``model.arch: auto`` resolved to the file's architecture
    and stem, the weights read). A ConfigError naming the key and the file when the file cannot be read, holds
    no trunk, or holds another architecture than ``model.arch``."""
    m = cfg.model
    assert m.init is not None
    path = Path(m.init).expanduser()
    if not path.exists():
        raise ConfigError(f"config key 'model.init': no such file or folder: {path}")
    try:
        weights = load_weights(path)
    except CheckpointError as err:
        raise ConfigError(f"config key 'model.init': cannot start from {path}: {err}") from err
    arch, stem = weights.model.arch, weights.model.stem
    if m.arch == "auto":
        model = replace(m, arch=arch, stem=stem)
    elif m.arch != arch:
        raise ConfigError(
            f"config key 'model.init': {path} holds a {arch} trunk, but model.arch is {m.arch}; set "
            f"model.arch={arch} (or model.arch=auto) to start from it"
        )
    else:
        model = m
    model = replace(model, init=str(path.resolve()))
    model.validate()  # an 'auto' architecture is checked now that it is known (output_stride, ...)
    check_state(
        expected_shapes(model.arch, model.stem),
        weights.backbone,
        f"config key 'model.init': {path} as a {model.arch} trunk with model.stem={model.stem}",
    )
    return replace(cfg, model=model), Initial(weights, model.init)


def head_mismatch(model: SwAVModel, weights: Weights) -> str | None:
    """Why the file's SwAV head cannot be loaded into ``model``'s (None: it can)."""
    if weights.head is None:
        return "the file holds no SwAV head"
    own = {k: tuple(v.shape) for k, v in model.head.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in weights.head.items()}
    if comparable_shapes(own) == comparable_shapes(theirs):
        return None
    file = head_config(weights.head)
    m = head_config(dict(model.head.state_dict()))  # model.* values, read as a file's are
    differ = ", ".join(f"{k} {file[k]} in the file vs {m[k]}" for k in file if file[k] != m.get(k))
    return f"its shape differs from model.* ({differ or 'the projection layers differ'})"


@torch.no_grad()
def copy_state_(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (full tensors, keys of ``module.state_dict()``) into ``module`` in place: into each
    tensor whole, or, for FSDP's DTensor shards, into this process's shard (no collective: every process
    holds the full tensors and keeps its part). Keys ``module`` lacks are an error; counters a file left out
    keep their value."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    own = module.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise CheckpointError(f"keys with no place in the model: {', '.join(unknown)}")
    for key, target in own.items():
        if key not in state:
            continue
        source = state[key].to(dtype=target.dtype)
        if isinstance(target, DTensor):
            mine = distribute_tensor(source, target.device_mesh, target.placements, src_data_rank=None)
            target.to_local().copy_(mine.to_local())
        else:
            target.copy_(source)


def load_initial_(model: SwAVModel, initial: Initial) -> str:
    """Load ``initial`` into the run's ``model`` (before DDP wraps it; under FSDP into its shards) and return
    what was loaded and what was made new, as the run logs it."""
    w = initial.weights
    copy_state_(model.backbone, w.backbone)
    why_not = head_mismatch(model, w)
    if why_not is None:
        assert w.head is not None
        copy_state_(model.head, w.head)
        head = "SwAV head loaded"
    else:
        head = f"SwAV head new ({why_not}; prototypes frozen for swav.freeze_prototypes_iters steps)"
    classifier = "; classifier ignored" if w.classifier is not None else ""
    return f"model.init: {initial.path} ({w.model.arch}): trunk loaded; {head}{classifier}"
