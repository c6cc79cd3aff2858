"""Timing the training step's candidate paths (precision, eager or compiled) from the same weights: the short
probe and the trial steps that ``openseer.train.autotune`` chooses the fast paths by, and the benchmarks time.

:func:`probe` times forward and backward passes on a slice of a batch; :func:`measure` runs the run's own steps
(:func:`openseer.train.step.train_step`). Both leave the weights, BatchNorm statistics, gradients and RNG as they
found them. What they return (:class:`Probe`, :class:`Trial`) is plain data that the record keeps.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from openseer import distributed
from openseer.hardware import synchronize
from openseer.models import SwAVModel
from openseer.train.compile_cache import persist_compile_caches
from openseer.train.config import PretrainConfig
from openseer.train.step import StepParts, forward_backward, learning_rates, step_parts, train_step

log = logging.getLogger(__name__)

TRIAL_STEPS = 3
"""Timed steps per candidate, after one warm-up step (two for a compiled candidate: compile, then recompiles)."""
PROBE_IMAGES = 16
"""Images of each crop the probe's passes run on (all of the batch when it is smaller)."""
PROBE_REPEATS = 2
"""Timed passes per precision after the untimed first one, fewer once the probe has taken :data:`PROBE_MAX_S`."""
PROBE_MAX_S = 1.0


@dataclass(frozen=True)
class Candidate:
    """One way to run the step: an autocast precision ('fp32': none) and eager or compiled."""

    precision: str
    compiled: bool

    @property
    def name(self) -> str:
        return f"{self.precision}-{'compiled' if self.compiled else 'eager'}"


@dataclass
class Trial:
    """What ``measure`` saw for one candidate: median seconds per step after warm-up, the seconds the warm-up
    steps took (compilation included), and the loss of every step (warm-up first) from the same weights."""

    candidate: Candidate
    step_s: float
    warmup_s: float
    warmup_steps: int
    losses: list[float]

    @property
    def compile_s(self) -> float:
        """Seconds the warm-up spent beyond ordinary steps: compilation, for a compiled candidate."""
        return max(0.0, self.warmup_s - self.warmup_steps * self.step_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "candidate": asdict(self.candidate)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**{**d, "candidate": Candidate(**d["candidate"])})


@dataclass
class Probe:
    """What ``probe`` saw for one precision: seconds per image of a forward and backward pass (the fastest timed
    pass over ``images`` images of each crop), and the loss of its first pass, from the same weights as the
    other precision's."""

    precision: str
    image_s: float
    loss: float
    images: int

    def step_s(self, batch_size: int) -> float:
        """The step time this probe predicts for ``batch_size`` images per crop."""
        return self.image_s * batch_size


def trial_cost_s(step_s: float, compiled: bool = False, compile_s: float = 0.0) -> float:
    """Expected seconds of one candidate's trial (:func:`measure`): its warm-up and timed steps, and its compile."""
    return ((2 if compiled else 1) + TRIAL_STEPS) * step_s + (compile_s if compiled else 0.0)


def probe(
    cfg: PretrainConfig,
    model: SwAVModel,
    train_model: torch.nn.Module,
    precisions: Sequence[str],
    crops: list[torch.Tensor],
    images: int = PROBE_IMAGES,
    max_s: float = PROBE_MAX_S,
) -> list[Probe]:
    """Times forward and backward passes of the step (:func:`~openseer.train.step.forward_backward`, eager) on
    the first ``images`` images of each crop in each precision, from the same weights; then restores weights,
    buffers, gradients and RNG. Each precision gets an untimed first pass (oneDNN builds its kernels there),
    then up to :data:`PROBE_REPEATS` timed ones, the precisions taking turns so that a neighbour's load falls on
    both alike; fewer once ``max_s`` seconds have passed (one at least). No optimiser step: the weights stay."""
    device = crops[0].device
    n = min(images, crops[0].shape[0])
    part = [c[:n] for c in crops]
    saved = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            parts = {p: step_parts(cfg, model, train_model, p, device) for p in precisions}
            losses = {p: float(forward_backward(parts[p], part, with_queue=False)[0].detach()) for p in parts}
            times: dict[str, list[float]] = {p: [] for p in parts}
            for repeat in range(PROBE_REPEATS):
                if repeat and time.perf_counter() - started > max_s:
                    break
                for precision, pass_parts in parts.items():
                    synchronize(device)
                    t0 = time.perf_counter()
                    forward_backward(pass_parts, part, with_queue=False)
                    synchronize(device)
                    times[precision].append(time.perf_counter() - t0)
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    probes = [Probe(p, min(times[p]) / n, losses[p], n) for p in precisions]
    log.info(
        "autotune probe: %s",
        ", ".join(f"{p.precision} {p.image_s * 1e3:.2f} ms/image, loss {p.loss:.4f}" for p in probes),
    )
    return probes


def measure(
    cfg: PretrainConfig,
    model: SwAVModel,
    train_model: torch.nn.Module,
    candidates: Sequence[Candidate],
    crops: list[torch.Tensor],
    steps: int | None = None,
    compiled: torch.nn.Module | None = None,
) -> tuple[list[Trial], torch.nn.Module | None]:
    """Times ``candidates`` on ``crops``, each from the same weights, then restores weights and buffers.

    Each candidate runs the run's own step (:func:`~openseer.train.step.train_step` with the run's optimiser,
    prototype freezing, loss scaling and loss settings) as the run's first steps, at the peak learning rate;
    without the queue, which the run fills from its own first steps. ``train_model`` is what the loop calls
    (``model`` or its DDP wrapper); a compiled candidate runs ``compiled`` (made here with
    ``torch.compile(train_model)`` when None). Returns the trials and the compiled module, so a run that keeps
    compilation does not compile twice. ``steps``: timed steps (``TRIAL_STEPS``).

    The candidates' warm-up steps run one after another; their timed steps take turns, each candidate's
    weights and buffers swapped in for its step (each has its own optimiser), so that a slow spell of the
    machine (a neighbour's job, the system's own work) falls on every candidate alike rather than on whichever
    ran then (:func:`takes_turns`).
    """
    device = crops[0].device
    steps = steps if steps is not None else TRIAL_STEPS
    _, peak_lr, _ = learning_rates(cfg.optim, distributed.world_size())
    saved = copy.deepcopy(model.state_dict())
    alternate = len(candidates) > 1 and takes_turns(saved)
    runs: list[_Running] = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for cand in candidates:
                if cand.compiled and compiled is None:
                    persist_compile_caches()
                    compiled = torch.compile(train_model)
                model.load_state_dict(saved)
                run = _Running(
                    cand,
                    step_parts(
                        cfg, model, compiled if cand.compiled else train_model, cand.precision, device
                    ),
                )
                start = time.perf_counter()
                for i in range(run.warm):
                    run.losses.append(train_step(run.parts, crops, i, peak_lr).loss)
                synchronize(device)
                run.warmup_s = time.perf_counter() - start
                if alternate:
                    run.state = copy.deepcopy(model.state_dict())
                else:
                    for _ in range(steps):
                        run.timed_step(crops, peak_lr, device)
                runs.append(run)
            for _ in range(steps if alternate else 0):
                for run in runs:
                    model.load_state_dict(run.state)
                    run.timed_step(crops, peak_lr, device)
                    run.keep(model)
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    trials = [run.trial() for run in runs]
    for trial in trials:
        log.info(
            "autotune: %s %.3f s/step, warm-up %.1f s, losses %s",
            trial.candidate.name,
            trial.step_s,
            trial.warmup_s,
            " ".join(f"{v:.4f}" for v in trial.losses),
        )
    return trials, compiled


TURNS_MAX_BYTES = 2**30
"""Largest model state (weights and buffers) whose candidates take turns: a copy per candidate is kept. Larger
ones (SEER's trunks on a GPU, where no neighbour shares the device) run one after another."""


def takes_turns(state: dict[str, torch.Tensor]) -> bool:
    """Whether candidates of a model with this state take turns step by step (a copy of it per candidate)."""
    return sum(t.numel() * t.element_size() for t in state.values()) <= TURNS_MAX_BYTES


@dataclass
class _Running:
    """One candidate's trial under way: its step's parts, losses and step times, and (taking turns) its
    weights and buffers between its steps."""

    candidate: Candidate
    parts: StepParts
    losses: list[torch.Tensor] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    state: dict[str, torch.Tensor] | None = None

    @property
    def warm(self) -> int:
        return 2 if self.candidate.compiled else 1

    def timed_step(self, crops: list[torch.Tensor], lr: float, device: torch.device) -> None:
        step = self.warm + len(self.times)
        t0 = time.perf_counter()
        self.losses.append(train_step(self.parts, crops, step, lr).loss)
        synchronize(device)
        self.times.append(time.perf_counter() - t0)

    def keep(self, model: torch.nn.Module) -> None:
        """Keeps the model's weights and buffers as this candidate left them (into the copy it has)."""
        assert self.state is not None
        with torch.no_grad():
            for name, value in model.state_dict().items():
                self.state[name].copy_(value)

    def trial(self) -> Trial:
        return Trial(
            self.candidate,
            statistics.median(self.times),
            self.warmup_s,
            self.warm,
            [float(v) for v in self.losses],
        )
