"""One SwAV training step's parts, shared by the pretraining loop and the start-up timing of its fast paths
(``openseer.train.autotune``): the optimiser a config names, the autocast context of a precision, and the step.

One builder for both, so that a timed trial step moves the weights exactly as the run's steps will (parameter
groups, adaptation, weight decay).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from openseer.optim import LARS, param_groups
from openseer.train.config import PretrainConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

Objective = Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]
"""``objective(cfg, model, z, scores) -> (loss, codes)``: the run's SwAV objective (``pretrain.objective``)."""


def build_optimizer(cfg: PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``optim.name`` over ``model``'s parameter groups (biases and norm weights apart when
    ``optim.exclude_bias_and_norm``), learning rates at 0 until the schedule sets them."""
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.exclude_bias_and_norm)
    if cfg.optim.name == "lars":
        return LARS(groups, momentum=cfg.optim.momentum, trust_coefficient=cfg.optim.trust_coefficient)
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.optim.momentum)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision ('fp32': none). One object may be entered again and again."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def training_step(
    cfg: PretrainConfig,
    model: torch.nn.Module,
    forward: Callable,
    optimizer: torch.optim.Optimizer,
    autocast: contextlib.AbstractContextManager,
    objective: Objective,
) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """One SwAV step as the loop runs it (no queue, logging or non-finite check): prototypes re-normalised,
    multi-crop forward under ``autocast``, fp32 codes and loss, backward, optimiser step. Returns the loss."""

    def step(crops: list[torch.Tensor]) -> torch.Tensor:
        model.head.normalize_prototypes()
        with autocast:
            z, scores = forward(crops)
        loss, _ = objective(cfg, model, z, scores)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step
