"""A network run over input batches in eval mode, and BatchNorm statistics re-estimated on evaluation images."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn


def forward_batches(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> Iterator[tuple[Any, torch.Tensor]]:
    """``(model(x) float32 on the CPU, rows)`` for each ``(x, rows)`` of ``batches`` (e.g.
    :func:`openseer.eval.inputs.image_batches`), in eval mode and without gradients; the model's mode is put
    back afterwards. An output that is a dict of tensors (feature maps by level) is moved tensor by tensor. A
    generator, so that callers can show progress or stop early."""
    was_training = model.training
    model.eval()
    try:
        for x, rows in batches:
            # no_grad per batch, never across a yield: grad mode is global and would leak into the caller
            with torch.no_grad():
                out = model(x)
            if isinstance(out, dict):
                yield {k: v.float().cpu() for k, v in out.items()}, rows
            else:
                yield out.float().cpu(), rows
    finally:
        model.train(was_training)


@torch.no_grad()
def recalibrate_batchnorm(backbone: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running mean/var as a plain average over ``batches`` (eval-style images).

    A network at random initialisation still holds BN's initial statistics (mean 0, var 1), which in eval mode
    leaves its pooled features nearly identical for every image; and pretraining accumulates statistics over
    augmented crops of several sizes. Re-estimating on the images being embedded puts both on equal footing.
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = backbone.training
    backbone.train()
    try:
        for x in batches:
            backbone(x)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        backbone.train(was_training)
