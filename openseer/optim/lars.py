"""LARS (You et al. 2017) as SwAV/SEER used it: SGD with momentum whose per-tensor step is rescaled by a trust
ratio. torch ships no LARS, and apex's LARC (the reference's) needs a CUDA build, so it is written here.

Follows apex LARC with ``clip=False`` as swav main_swav.py wraps it around ``SGD(model.parameters())``: for
each adapted tensor p with gradient g,
    local_lr = trust * ||p|| / (||g|| + wd * ||p|| + eps)
    g <- (g + wd * p) * local_lr
then a plain SGD momentum update with the global lr. In the references every tensor is adapted and decayed,
biases and normalisation weights included (swav: one SGD group over all parameters; VISSL's SwAV and SEER
configs: ``regularize_bn: True``, ``regularize_bias: True``, LARC over every group). :func:`param_groups` does
the same unless asked to exclude 1-D tensors, an option (``optim.exclude_bias_and_norm``) that the short CPU
recipe was tuned with: tensors in a group with ``lars_exclude`` are then neither adapted nor decayed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # One fused (foreach) kernel per operation over all tensors of a group rather than a Python loop
        # over the tensors: the per-tensor loop cost 15 ms a step on RegNetY-200MF (184 tensors, 1 thread).
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            wd, mom = group["weight_decay"], group["momentum"]
            if not group["lars_exclude"]:
                p_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                local = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                # a zero weight or gradient (fresh zero-init layer) keeps the plain step with no weight
                # decay, as in LARC (which also leaves the gradient untouched then)
                adapt = (p_norm > 0) & (g_norm > 0)
                g_scale = torch.where(adapt, local, torch.ones_like(local)).unbind()
                p_scale = torch.where(adapt, wd * local, torch.zeros_like(local)).unbind()
                grads = torch._foreach_mul(grads, g_scale)  # (g + wd * p) * local, or g
                torch._foreach_add_(grads, torch._foreach_mul(params, p_scale))
            if mom != 0:
                states = [self.state[p] for p in params]
                running = [i for i, st in enumerate(states) if "momentum_buffer" in st]
                if running:
                    bufs = [states[i]["momentum_buffer"] for i in running]
                    torch._foreach_mul_(bufs, mom)
                    torch._foreach_add_(bufs, [grads[i] for i in running])
                for st, g in zip(states, grads, strict=True):
                    if "momentum_buffer" not in st:  # the first step starts the buffer at g
                        st["momentum_buffer"] = g.detach().clone()
                grads = [st["momentum_buffer"] for st in states]
            torch._foreach_add_(params, grads, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = False) -> list[dict]:
    """Optimiser groups over the trainable parameters of ``model``.

    ``exclude_bias_and_norm=False`` (the references): one group, every tensor LARS-adapted and decayed.
    ``True``: two groups, weights (decayed, adapted) and 1-D tensors = biases and norm scales (neither).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not exclude_bias_and_norm:
        return [{"params": params, "weight_decay": weight_decay, "lars_exclude": False}]
    decay = [p for p in params if p.ndim > 1]
    plain = [p for p in params if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]
