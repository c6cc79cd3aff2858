"""Per-step schedules computed once as arrays (as in swav/dino): linear warm-up then cosine."""

from __future__ import annotations

import math

import torch


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, start: float = 0.0
) -> torch.Tensor:
    """(total_steps,) float64: ``start`` -> ``base`` linearly over warmup_steps, then cosine to ``final``.

    Step t of the cosine part (length T): final + (base - final) * (1 + cos(pi * t / T)) / 2, so the first
    post-warm-up step is exactly ``base`` and the last approaches ``final`` (swav main_swav.py).
    """
    if total_steps < 1:
        raise ValueError("total_steps must be >= 1")
    warmup_steps = max(0, min(warmup_steps, total_steps))
    warm = torch.linspace(start, base, warmup_steps, dtype=torch.float64) if warmup_steps else torch.empty(0)
    n = total_steps - warmup_steps
    t = torch.arange(n, dtype=torch.float64)
    cos = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * t / max(n, 1)))
    return torch.cat([warm.double(), cos])
