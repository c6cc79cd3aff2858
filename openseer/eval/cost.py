"""What a command will cost, said before it is paid.

Every evaluation command that embeds images or trains a network times its own unit of work first (one batch of
real inputs through the network, or a few optimisation steps after a warm-up step, with the command's own step
function), multiplies by the units it plans, and logs one line per part of the work: what, how many units, the
seconds per unit measured and the estimated total. Each command's ``max_minutes`` key bounds the estimate (0 or
null: no limit): over it, a command either stops before the long work with a :class:`CostError` naming the key
and the estimate, or, where a part of its work is a baseline whose settings were left at their defaults (the
low-shot supervised-from-scratch baseline), scales those settings down to fit (:func:`scale_runs`) and says so.

The decisions (:func:`decide`, :func:`scale_runs`) are pure: they take measured seconds and planned units and
never time anything. :func:`time_step` is the one timer; it reads :data:`clock`, which tests replace.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from openseer.config import ConfigError
from openseer.eval.features import forward_batches
from openseer.hardware import synchronize

log = logging.getLogger(__name__)

DEFAULT_MAX_MINUTES = 30.0
"""The default ``max_minutes`` of every evaluation command."""

clock: Callable[[], float] = time.perf_counter
"""The clock :func:`time_step` reads (seconds)."""

ENOUGH_SECONDS = 10.0
"""A timed unit that takes longer than this is not repeated: one such measure is precise enough."""


class CostError(ConfigError):
    """The estimated time of a command is over its ``max_minutes``; raised before the long work starts."""


@dataclass(frozen=True)
class Part:
    """One part of a command's work: ``units`` units (steps, batches) of ``seconds`` each, as measured."""

    what: str
    """What is done, e.g. 'embedding imagenette (train)'."""
    units: int
    unit: str
    """'batch' or 'step'."""
    seconds: float
    """Seconds per unit, measured."""
    detail: str = ""
    """What a unit is, e.g. 'of 256 images at 224 px'."""

    @property
    def total(self) -> float:
        return self.units * self.seconds

    def line(self) -> str:
        plural = "es" if self.unit.endswith("ch") else "s"
        units = f"{self.units:,} {self.unit}{'' if self.units == 1 else plural}"
        detail = f" {self.detail}" if self.detail else ""
        return (
            f"cost: {self.what}: {units}{detail}, {self.seconds:.3g} s per {self.unit} measured, "
            f"about {duration(self.total)}"
        )


@dataclass(frozen=True)
class Decision:
    """Whether the work fits ``max_minutes``: the lines to log, and the error to raise when it does not."""

    fits: bool
    total: float
    """Estimated seconds of all parts."""
    lines: list[str]
    error: str
    """Why the command stops ('' when it fits)."""


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h', '2.1 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def limit_seconds(max_minutes: float | None) -> float | None:
    """``max_minutes`` in seconds; None for no limit (0 or null). A ConfigError for a negative value."""
    check_max_minutes(max_minutes)
    return None if not max_minutes else 60.0 * max_minutes


def check_max_minutes(max_minutes: float | None, key: str = "max_minutes") -> None:
    if max_minutes is not None and max_minutes < 0:
        raise ConfigError(
            f"config key '{key}': got {max_minutes}, expected minutes >= 0 (0 or null: no limit)"
        )


def decide(
    command: str, parts: Sequence[Part], max_minutes: float | None, advice: str = "", key: str = "max_minutes"
) -> Decision:
    """Whether ``parts`` fit ``max_minutes`` (0 or null: always): one line per part, a total line when there are
    several, and, over the limit, the error naming ``key``, the estimate and ``advice`` (other ways to fit)."""
    total = sum(p.total for p in parts)
    limit = limit_seconds(max_minutes)
    lines = [p.line() for p in parts]
    bound = f"{key}={max_minutes:g}" if limit is not None else f"no limit ({key}={max_minutes})"
    if len(parts) > 1:
        lines.append(f"cost: {command} in all: about {duration(total)} ({bound})")
    if limit is None or total <= limit:
        return Decision(True, total, lines, "")
    error = (
        f"{command} would take about {duration(total)} (estimated from timed steps: "
        + "; ".join(f"{p.what} about {duration(p.total)}" for p in parts)
        + f"), over {key}={max_minutes:g}: raise {key} (0: no limit){advice}"
    )
    return Decision(False, total, lines, error)


def check(
    command: str, parts: Sequence[Part], max_minutes: float | None, advice: str = "", key: str = "max_minutes"
) -> float:
    """Log :func:`decide`'s lines and raise :class:`CostError` when ``parts`` do not fit; the estimated seconds."""
    decision = decide(command, parts, max_minutes, advice, key)
    for line in decision.lines:
        log.info("%s", line)
    if not decision.fits:
        raise CostError(decision.error)
    return decision.total


@dataclass(frozen=True)
class Scaled:
    """Settings of a scalable part that fit: steps per run, and whether the grid of runs became one run."""

    steps: int
    single: bool


def scale_runs(
    room: float, seconds_per_step: float, steps: int, runs: int, single_runs: int, min_steps: int
) -> Scaled | None:
    """The most steps per run (at most ``steps``, at least ``min_steps``) with which ``runs`` runs fit into
    ``room`` seconds at ``seconds_per_step``; failing that, the same for ``single_runs`` runs (one run per cell
    instead of a grid); None when even ``min_steps`` of single runs do not fit."""
    if seconds_per_step <= 0 or runs * steps * seconds_per_step <= room:
        return Scaled(steps, False)
    for count, single in ((runs, False), (single_runs, True)):
        fit = math.floor(room / (seconds_per_step * count) + 1e-9) if room > 0 else 0  # 1e-9: float noise
        if fit >= min(steps, min_steps):
            return Scaled(min(steps, fit), single)
    return None


def time_step(
    step: Callable[[], object], warmup: Callable[[], object] | None = None, repeats: int = 2
) -> float:
    """Seconds per call of ``step``: ``warmup()`` (default: ``step()``) once untimed, then ``step()`` up to
    ``repeats`` times, the mean of those timed (one is enough when it takes over :data:`ENOUGH_SECONDS`)."""
    (warmup or step)()
    synchronize()
    spent, count = 0.0, 0
    for _ in range(max(1, repeats)):
        start = clock()
        step()
        synchronize()
        spent += clock() - start
        count += 1
        if spent > ENOUGH_SECONDS:
            break
    return spent / count


def batch_seconds(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward pass of ``model`` over the batch ``x`` as the commands run it
    (:func:`~openseer.eval.features.forward_batches`), after a warm-up pass on two of its images."""
    rows = torch.arange(len(x))

    def run(n: int) -> Callable[[], None]:
        return lambda: [None for _ in forward_batches(model, [(x[:n], rows[:n])])]

    return time_step(run(len(x)), warmup=run(min(2, len(x))), repeats=1)
