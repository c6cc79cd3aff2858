"""One SwAV training step, and the parts it runs with.

:func:`train_step` is the only step there is: the pretraining loop runs it on every batch, the start-up timing of
the fast paths (``openseer.train.autotune.measure``) and the benchmarks time it. Its parts come from one builder,
:func:`step_parts`, so a timed trial step moves the weights exactly as the run's steps will (optimiser, parameter
groups, prototype freezing, loss scaling, loss settings).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from openseer import distributed
from openseer.data.multicrop import n_crops
from openseer.models import SwAVModel
from openseer.optim import LARS, param_groups
from openseer.swav import EmbeddingQueue, SwAVLoss
from openseer.train.config import OptimConfig, PretrainConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(cfg: PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``optim.name`` over ``model``'s parameter groups (biases and norm weights apart when
    ``optim.exclude_bias_and_norm``), learning rates at 0 until a step sets them."""
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.exclude_bias_and_norm)
    if cfg.optim.name == "lars":
        return LARS(groups, momentum=cfg.optim.momentum, trust_coefficient=cfg.optim.trust_coefficient)
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.optim.momentum)


def learning_rates(optim: OptimConfig, world_size: int) -> tuple[float, float, float]:
    """(start, peak, final) learning rates of a run on ``world_size`` processes: ``optim``'s, given for a global
    batch of 256, times the global batch over 256 (swav main_swav.py's linear scaling). The one place they are
    scaled: the schedule runs between them, the start-up trial steps at the peak."""
    scale = optim.lr_scale(world_size)
    return optim.start_lr * scale, optim.base_lr * scale, optim.final_lr * scale


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a precision ('fp32': none). One object may be entered again and again."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


@dataclass(eq=False)
class StepParts:
    """What :func:`train_step` runs with, built once by :func:`step_parts`."""

    model: SwAVModel
    """The model itself: its prototypes are normalised and frozen here."""
    forward: Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
    """``model``, its DDP or FSDP wrapper, or that compiled: crops -> (z, scores)."""
    autocast: contextlib.AbstractContextManager
    loss: SwAVLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    """fp16's loss scaling; disabled (a pass-through) in other precisions."""
    freeze_prototypes_iters: int
    queue_start: int = 0
    """First step whose embeddings enter the queue (swav.queue_start_epoch in steps)."""


def step_parts(
    cfg: PretrainConfig,
    model: SwAVModel,
    forward: Callable,
    precision: str,
    device: torch.device,
    queue: EmbeddingQueue | None = None,
    queue_start: int = 0,
) -> StepParts:
    """The parts of ``cfg``'s step: its optimiser over ``model``, autocast and loss scaling for ``precision``,
    its SwAV loss (with ``queue``, from step ``queue_start`` on) and its prototype freezing."""
    loss = SwAVLoss(
        n_crops(cfg.crops),
        list(cfg.swav.crops_for_assign),
        cfg.swav.temperature,
        cfg.swav.epsilon,
        cfg.swav.sinkhorn_iters,
        queue,
        model.head.prototypes,
    )
    return StepParts(
        model,
        forward,
        autocast_for(device, precision),
        loss,
        build_optimizer(cfg, model),
        torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        cfg.swav.freeze_prototypes_iters,
        queue_start,
    )


@dataclass
class StepOutput:
    loss: torch.Tensor
    """() float32, detached."""
    codes: list[torch.Tensor]
    """(B, K) float32 per assignment crop."""
    z: torch.Tensor
    """(n_crops*B, D) embeddings, detached."""
    applied: bool
    """False: a non-finite loss or gradient on some process, and the step was skipped on all of them."""


def _all_finite(loss: torch.Tensor, model: torch.nn.Module) -> bool:
    if not torch.isfinite(loss):
        return False
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    # one fused max-norm over all gradients: a NaN or Inf anywhere makes it non-finite, and, unlike a sum or
    # an L2 norm, large finite values cannot overflow it
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads, math.inf)).max())) if grads else True


def train_step(
    parts: StepParts, crops: list[torch.Tensor], step: int, lr: float, temperature: float | None = None
) -> StepOutput:
    """Step number ``step`` of a run on ``crops`` [(B, 3, s_k, s_k) per crop], at learning rate ``lr`` and
    softmax ``temperature`` (None: the configured one)."""
    for group in parts.optimizer.param_groups:
        group["lr"] = lr
    parts.model.head.normalize_prototypes()

    # multi-crop forward: same-size crops share one backbone pass
    with parts.autocast:
        z, scores = parts.forward(crops)
    # codes for the assignment crops over the global batch (with the queue once it is full), swapped
    # prediction; both in fp32, outside autocast
    loss, codes = parts.loss(z, scores, temperature, with_queue=step >= parts.queue_start)

    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    if step < parts.freeze_prototypes_iters:  # prototypes frozen for the first iterations
        parts.model.head.prototypes.weight.grad = None
    # a non-finite loss or gradient on any process skips the step everywhere (fp16 overflow is the scaler's
    # business: it skips and lowers its scale by itself)
    if not parts.scaler.is_enabled() and distributed.any_process(
        not _all_finite(loss, parts.model), loss.device
    ):
        parts.optimizer.zero_grad(set_to_none=True)
        return StepOutput(loss.detach(), codes, z.detach(), applied=False)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return StepOutput(loss.detach(), codes, z.detach(), applied=True)
