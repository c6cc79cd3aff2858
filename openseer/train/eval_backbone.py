"""The backbone handed to evaluation after training: whole weights and plain BatchNorm.

Evaluation runs on rank 0 alone. A SyncBatchNorm left in the backbone (``parallel.sync_bn``) runs collectives over
its process group whenever it is in training mode, which evaluation uses to re-estimate BatchNorm statistics
before kNN: rank 0 would then wait for processes that never join, until the collective timeout ends the job. On
one process a SyncBatchNorm and a BatchNorm compute the same thing, so the evaluation copy gets plain ones with
the same parameters and statistics; the training model keeps its SyncBatchNorm.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from openseer import distributed
from openseer.models import SwAVModel
from openseer.train.parallel import full_backbone


class BatchNorm(_BatchNorm):
    """Plain (per-process) BatchNorm over dim 1 of any input of 2 or more dims, as SyncBatchNorm accepts: what
    a SyncBatchNorm becomes, whatever layer it replaced (its own type does not record 1d, 2d or 3d)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's signature
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def _plain(sync: nn.SyncBatchNorm) -> BatchNorm:
    """A BatchNorm with copies of ``sync``'s settings, parameters and statistics, in its mode."""
    plain = BatchNorm(
        sync.num_features,
        eps=sync.eps,
        momentum=sync.momentum,
        affine=sync.affine,
        track_running_stats=sync.track_running_stats,
    )
    with torch.no_grad():
        if sync.affine:
            plain.weight = nn.Parameter(sync.weight.detach().clone(), requires_grad=sync.weight.requires_grad)
            plain.bias = nn.Parameter(sync.bias.detach().clone(), requires_grad=sync.bias.requires_grad)
        if sync.track_running_stats:
            plain.running_mean = sync.running_mean.detach().clone()
            plain.running_var = sync.running_var.detach().clone()
            plain.num_batches_tracked = sync.num_batches_tracked.detach().clone()
    return plain.train(sync.training)


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every SyncBatchNorm replaced by a plain :class:`BatchNorm` holding copies of its
    parameters and running statistics; ``module`` itself when it has no SyncBatchNorm (nothing to change)."""
    syncs = [m for m in module.modules() if isinstance(m, nn.SyncBatchNorm)]
    if not syncs:
        return module
    # deepcopy with each SyncBatchNorm pre-mapped to its replacement: the copy never descends into them (nor
    # into their process group, which cannot be copied) and every other module is copied as usual
    memo: dict[int, object] = {id(m): _plain(m) for m in syncs}
    return copy.deepcopy(module, memo)


def evaluation_backbone(model: SwAVModel, build: Callable[[], SwAVModel]) -> nn.Module:
    """The trained backbone for evaluation on rank 0 alone: :func:`~openseer.train.parallel.full_backbone`
    (whole weights, gathered from the shards under FSDP: a collective, every rank calls this), with plain
    BatchNorm in place of SyncBatchNorm (see the module docstring). Other ranks, which do not evaluate, get what
    full_backbone gives them (their shards)."""
    backbone = full_backbone(model, build)
    return plain_batchnorm(backbone) if distributed.is_main() else backbone
