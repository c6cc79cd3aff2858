"""Swapped prediction loss (Caron et al. 2020, Eq. 1-2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def swav_loss(
    scores: torch.Tensor,
    codes: Sequence[torch.Tensor],
    n_crops: int,
    crops_for_assign: Sequence[int],
    temperature: float = 0.1,
) -> torch.Tensor:
    """Average cross-entropy between each assignment crop's codes and every *other* crop's prediction.

    scores: (n_crops*B, K) prototype scores, crop-major. codes[i]: (B, K) codes of crop ``crops_for_assign[i]``.
    loss = mean_i mean_{v != a_i} mean_b -sum_k q_{a_i}[b,k] log softmax(scores_v[b] / tau)[k]
    """
    batch = scores.shape[0] // n_crops
    log_p = F.log_softmax(scores.float() / temperature, dim=1).view(n_crops, batch, -1)
    total = scores.new_zeros((), dtype=torch.float32)
    for crop_id, q in zip(crops_for_assign, codes, strict=True):
        others = [v for v in range(n_crops) if v != crop_id]
        sub = -(q.unsqueeze(0) * log_p[others]).sum(dim=2).mean(dim=1)  # (n_crops-1,)
        total = total + sub.mean()
    return total / len(crops_for_assign)
