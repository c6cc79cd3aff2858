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


def warmup_length(
    schedule_length: int,
    planned_steps: int,
    warmup_fraction: float | None = None,
    warmup_steps: int | None = None,
    warmup_epochs: float = 0.0,
    steps_per_epoch: int = 1,
) -> int:
    """Warm-up length in cells of a schedule of ``schedule_length`` cells, as the same share of the run.

    ``planned_steps``: the optimiser steps of the run the config describes (epochs x steps per epoch). The
    warm-up is given as ``warmup_fraction`` of the run, else ``warmup_steps``, else ``warmup_epochs`` epochs of
    ``steps_per_epoch`` steps; its share of the run is then warmup_steps / planned_steps or, equivalently,
    warmup_epochs / epochs. A run bounded by epochs or steps has one cell per step (schedule_length ==
    planned_steps: the warm-up is exactly warmup_steps or warmup_epochs x steps_per_epoch); a run bounded by
    minutes spreads its schedule over a fixed grid of cells of wall-clock time, and gets the same share of that
    grid rather than a step count read as cells. The result is clipped to [0, schedule_length].
    """
    if schedule_length < 1 or planned_steps < 1:
        raise ValueError("schedule_length and planned_steps must be >= 1")
    if warmup_fraction is not None:
        share = warmup_fraction
    elif warmup_steps is not None:
        share = warmup_steps / planned_steps
    else:
        share = warmup_epochs * steps_per_epoch / planned_steps
    return max(0, min(schedule_length, round(share * schedule_length)))
