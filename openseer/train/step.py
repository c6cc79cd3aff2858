"""One SwAV training step, and the parts it runs with.

:func:`train_step` is the only step there is: the pretraining loop runs it on every batch, the start-up timing of
the fast paths (``openseer.train.trials.measure``) and the benchmarks time it. Its parts come from one builder,
:func:`step_parts`, so a timed trial step moves the weights exactly as the run's steps will (optimiser, parameter
groups, prototype freezing, loss scaling, loss settings).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from openseer import distributed
from openseer.data.multicrop import n_crops
from openseer.models import SwAVModel
from openseer.models.small_maps import MAX_PIXELS
from openseer.optim import LARS, param_groups
from openseer.swav import EmbeddingQueue, SwAVLoss
from openseer.train.config import OptimConfig, PretrainConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FP32_MODULE_KINDS = ("batchnorm", "head", "small_maps")
"""What ``run.fp32_modules`` may name (:func:`keep_fp32_`)."""


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


# ============ modules kept in fp32 under autocast (run.fp32_modules) ============


class _Fp32UnderAutocast:
    """Mixed into a module's class: under autocast the module computes in fp32, its input cast up and autocast
    off inside it; outside autocast, or where its parameters are not fp32 (FSDP's mixed precision gathers them
    in the low precision), it runs as before."""

    def _fp32_applies(self, x: torch.Tensor) -> bool:
        return True

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        device = x.device.type
        if torch.is_autocast_enabled(device) and self._fp32_applies(x) and _fp32_parameters(self):
            with torch.autocast(device, enabled=False):
                return super().forward(x.float(), *args, **kwargs)
        return super().forward(x, *args, **kwargs)


class _Fp32OnSmallMaps(_Fp32UnderAutocast):
    """The same, only for maps of at most ``small_maps.MAX_PIXELS`` pixels."""

    def _fp32_applies(self, x: torch.Tensor) -> bool:
        return x.dim() == 4 and x.shape[-1] * x.shape[-2] <= MAX_PIXELS


def _fp32_parameters(module: nn.Module) -> bool:
    first = next(module.parameters(), None)
    return first is None or first.dtype == torch.float32


_FP32_CLASSES: dict[tuple[type, type], type] = {}


def _keep_fp32(module: nn.Module, mixin: type) -> bool:
    """Gives ``module`` the class ``mixin`` + its own (parameters, buffers, hooks and state-dict keys stay as
    they are, as ``openseer.models.small_maps`` does); False when it has it already."""
    cls = type(module)
    if isinstance(module, _Fp32UnderAutocast):
        return False
    if (mixin, cls) not in _FP32_CLASSES:
        _FP32_CLASSES[mixin, cls] = type(f"Fp32{cls.__name__}", (mixin, cls), {})
    module.__class__ = _FP32_CLASSES[mixin, cls]
    return True


def keep_fp32_(model: SwAVModel, kinds: Sequence[str]) -> int:
    """Makes the modules of ``kinds`` (``run.fp32_modules``: 'batchnorm', 'head', 'small_maps') compute in fp32
    under autocast, in place; returns how many modules changed (0 when they were kept before).

    'batchnorm': every BatchNorm of the model (statistics and normalisation in fp32, output fp32); 'head': the
    projection MLP as a whole; 'small_maps': every convolution of the backbone over a map of at most
    ``MAX_PIXELS`` pixels. The prototypes and the loss are fp32 whatever this says (``SwAVHead.forward``).
    """
    unknown = set(kinds) - set(FP32_MODULE_KINDS)
    if unknown:
        raise ValueError(f"unknown fp32 module kinds {sorted(unknown)}; expected some of {FP32_MODULE_KINDS}")
    changed = 0
    if "batchnorm" in kinds:
        changed += sum(
            _keep_fp32(m, _Fp32UnderAutocast) for m in model.modules() if isinstance(m, _BatchNorm)
        )
    if "head" in kinds:
        changed += _keep_fp32(model.head.projection, _Fp32UnderAutocast)
    if "small_maps" in kinds:
        convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
        changed += sum(_keep_fp32(m, _Fp32OnSmallMaps) for m in convs)
    return changed


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
    """The parts of ``cfg``'s step: its optimiser over ``model``, autocast and loss scaling for ``precision``
    (with ``run.fp32_modules`` kept in fp32 under it: :func:`keep_fp32_` changes ``model`` in place), its SwAV
    loss (with ``queue``, from step ``queue_start`` on) and its prototype freezing."""
    if precision != "fp32" and cfg.run.fp32_modules:
        keep_fp32_(model, cfg.run.fp32_modules)
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


def forward_backward(
    parts: StepParts, crops: list[torch.Tensor], with_queue: bool, temperature: float | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The step's passes on ``crops``: forward under its autocast, codes and loss, backward into freshly
    zeroed gradients (scaled for fp16). Returns (loss, codes, z) as :class:`StepOutput` describes them."""
    # multi-crop forward: same-size crops share one backbone pass
    with parts.autocast:
        z, scores = parts.forward(crops)
    # codes for the assignment crops over the global batch (with the queue once it is full), swapped
    # prediction; both in fp32, outside autocast
    loss, codes = parts.loss(z, scores, temperature, with_queue=with_queue)

    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    return loss, codes, z


def train_step(
    parts: StepParts, crops: list[torch.Tensor], step: int, lr: float, temperature: float | None = None
) -> StepOutput:
    """Step number ``step`` of a run on ``crops`` [(B, 3, s_k, s_k) per crop], at learning rate ``lr`` and
    softmax ``temperature`` (None: the configured one)."""
    for group in parts.optimizer.param_groups:
        group["lr"] = lr
    parts.model.head.normalize_prototypes()

    loss, codes, z = forward_backward(parts, crops, step >= parts.queue_start, temperature)
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
