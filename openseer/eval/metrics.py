"""The one accuracy function every evaluation uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction of rows whose target is among the k highest scores, for each k (k capped at the class count).

    logits: (N, C); target: (N,) int. Returns one float in [0, 1] per k.
    """
    n, c = logits.shape
    if n == 0:
        return [0.0 for _ in topk]
    top = logits.topk(min(max(topk), c), dim=1).indices
    hit = top == target.view(-1, 1)
    return [float(hit[:, : min(k, c)].any(dim=1).float().mean()) for k in topk]
