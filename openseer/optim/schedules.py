"""Per-step schedules computed once as arrays (as in swav/dino): linear warm-up then cosine, in the shape of
swav's main_swav.py or of VISSL's composite scheduler."""

from __future__ import annotations

import math
from typing import Literal

import torch

ScheduleShape = Literal["swav", "vissl"]


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    start: float = 0.0,
    shape: ScheduleShape = "swav",
) -> torch.Tensor:
    """(total_steps,) float64: ``start`` -> ``base`` linearly over warmup_steps, then a cosine to ``final``.

    Two references build this curve differently, and ``shape`` picks which (W = warmup_steps, T = total_steps):

    * ``'swav'`` (swav main_swav.py:178-182): the warm-up is ``np.linspace(start, base, W)``, so its last step is
      already ``base``, and the cosine is rescaled to the T - W steps after it: step W + t is
      final + (base - final) * (1 + cos(pi * t / (T - W))) / 2, exactly ``base`` right after the warm-up.
    * ``'vissl'`` (VISSL's SEER configs: fvcore ``CompositeParamScheduler`` with ``interval_scaling:
      [rescaled, fixed]``, evaluated at ClassyVision's ``where = step / T``): the warm-up is fvcore's linear
      scheduler rescaled to its own interval, start + (base - start) * t / W for t < W (it never reaches
      ``base``), and the cosine is *fixed*: evaluated at the run's global position, step t >= W is
      final + (base - final) * (1 + cos(pi * t / T)) / 2. The warm-up only replaces the cosine's first W steps,
      so the lr right after it is already below ``base`` and every later step is lower than swav's.

    Without warm-up both are the same curve. The cells may be steps or cells of a wall-clock budget's grid: the
    formula only counts positions.
    """
    if total_steps < 1:
        raise ValueError("total_steps must be >= 1")
    if shape not in ("swav", "vissl"):
        raise ValueError(f"unknown schedule shape {shape!r} (expected 'swav' or 'vissl')")
    warmup_steps = max(0, min(warmup_steps, total_steps))
    if shape == "vissl":
        t = torch.arange(total_steps, dtype=torch.float64)
        cos = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * t / total_steps))
        warm = start + (base - start) * t[:warmup_steps] / max(warmup_steps, 1)
        return torch.cat([warm, cos[warmup_steps:]])
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
