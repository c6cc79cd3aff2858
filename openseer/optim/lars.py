"""LARS (You et al. 2017) as SwAV/SEER used it: SGD with momentum whose per-tensor step is rescaled by a trust
ratio. torch ships no LARS, and apex's LARC (the reference's) needs a CUDA build, so it is written here.

Follows apex LARC with ``clip=False`` (swav main_swav.py): for each adapted tensor p with gradient g,
    local_lr = trust * ||p|| / (||g|| + wd * ||p|| + eps)
    g <- (g + wd * p) * local_lr
then a plain SGD momentum update with the global lr. Tensors in groups with ``lars_exclude`` (biases and
normalisation weights, as in SEER/VISSL) are neither adapted nor decayed.
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
        for group in self.param_groups:
            wd, mom = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    p_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    local = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                    # a zero weight or gradient (fresh zero-init layer) keeps the plain step with no weight
                    # decay, as in LARC (which also leaves the gradient untouched then)
                    g = torch.where((p_norm > 0) & (g_norm > 0), (g + wd * p) * local, g)
                if mom != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.detach().clone()
                    else:
                        buf.mul_(mom).add_(g)
                    g = buf
                p.add_(g, alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, LARS-adapted) and 1-D tensors = biases and norm scales (neither)."""
    decay, plain = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (plain if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": plain, "weight_decay": 0.0, "lars_exclude": True},
    ]
