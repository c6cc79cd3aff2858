"""The run's fast paths chosen by measurement: bf16 autocast and ``torch.compile`` (``run.precision=auto``,
``run.compile=auto``).

Whether bf16 or compilation makes a training step faster depends on the processor, not on the model alone: a
processor whose bf16 matrix products are much faster than fp32 can still run the whole step barely faster under
bf16 autocast, and a compiled step can be slower than eager after minutes of compilation inside a short budget
(measured with ``benchmarks/throughput.py``; the figures are in the README). So ``auto`` times a few steps of each
candidate on the run's own first batch at start-up and keeps the fastest that also learns like the reference (the
loss of the same steps from the same weights agrees within ``LOSS_RTOL``); the weights, BatchNorm statistics and
RNG are restored afterwards. The trial steps are the run's own step (``openseer.train.step.train_step``).

* bf16 is a candidate only where the hardware computes it natively (x86: avx512_bf16 or AMX; Arm: the bf16
  extension; CUDA: compute capability 8 or newer). Elsewhere oneDNN emulates it and it only costs.
* compile is tried only when its expected cost (the last one measured for this machine and config, else
  ``COMPILE_PRIOR_S``) is at most ``MAX_COMPILE_FRACTION`` of the run (``run.budget_minutes``, or the planned
  steps at the measured step time): a 5-minute run does not spend 2 minutes compiling. Inductor's FX graph and
  AOT autograd caches are kept under ``~/.cache/openseer/inductor`` (not torch's /tmp default, which a reboot
  empties) so a second compile of the same step costs a fraction of the first; where those caches do not hold
  this step's compile (cleared, another machine) the measured cost counts in full again.
* measurements are cached per hardware model and step-relevant config (``~/.cache/openseer/autotune.json``,
  written atomically), so later runs of the same config decide without timing again.

The SwAV codes (Sinkhorn) and the loss stay fp32 in every case: only the forward pass runs under autocast, and
``openseer.swav`` upcasts the prototype scores before using them.

The decision is pure (:func:`choose`, :func:`should_try_compile`, :func:`cache_key`; the CPU's facts come from
``openseer.hardware``) and tested without timing; :func:`measure` and :func:`choose_fast_paths` are the thin
timing part.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from openseer import distributed
from openseer.config import to_dict
from openseer.data.cache import default_cache_dir

# the package's atomic file write (temp file in the same folder, fsync, os.replace)
from openseer.fileio.atomic import atomic_write_text
from openseer.hardware import device_native_bf16, hardware_name
from openseer.models import SwAVModel
from openseer.train.compile_cache import (
    compile_cache_warm,
    compiled_in_process,
    mark_compiled,
    persist_compile_caches,
)
from openseer.train.config import PretrainConfig
from openseer.train.step import learning_rates, step_parts, train_step

log = logging.getLogger(__name__)

CACHE_FILE = "autotune.json"  # under default_cache_dir(): measured timings per hardware model and config
RUN_FILE = "autotune.json"  # in the run folder: what was chosen and why
CACHE_VERSION = 2  # 2: the trial steps are the run's own (prototype freezing, non-finite check)
COMPILE_PRIOR_S = 120.0
"""Expected compile time before one was measured for this machine and config: about what the cpu preset's step
took with cold caches on a 2-core CPU (``benchmarks/throughput.py --compile-cold-warm``)."""
WARM_COMPILE_FRACTION = 0.25
"""Share of a measured compile time expected again once inductor's caches hold that compile: above the share
measured for the cpu preset's step in fresh processes (``benchmarks/throughput.py --compile-cold-warm``), to stay
on the safe side."""
MAX_COMPILE_FRACTION = 0.1
"""Compilation is not even tried when its expected cost exceeds this share of the run."""
MIN_PLANNED_STEPS_TO_COMPILE = 200
"""A run without a time budget and fewer planned steps never compiles (a warm compile still traces the model
for tens of seconds); it is then not timed for that purpose either."""
MARGIN = 0.05
"""A path other than the reference must be this much faster per step: timings on a shared machine are noisy."""
LOSS_RTOL = 0.02
"""Largest relative difference between the losses of a candidate's trial steps and the reference's."""
TRIAL_STEPS = 3
"""Timed steps per candidate, after one warm-up step (two for a compiled candidate: compile, then recompiles)."""

# ============ pure parts ============


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
class Decision:
    """The fast paths a run uses, why, and the measured ratios (also written to the run folder)."""

    precision: str
    compile: bool
    reason: str
    source: str
    """'fixed' (nothing to choose or nothing measured), 'measured' (timed now) or 'cache' (timed by an earlier
    run on this hardware model and config)."""
    hardware: str = ""
    native_bf16: bool = False
    bf16_speedup: float | None = None
    """fp32 step time / bf16 step time (eager); > 1: bf16 is faster."""
    compile_speedup: float | None = None
    """eager step time / compiled step time (fp32, or the fixed precision); > 1: compiled is faster."""
    compile_s: float | None = None
    """Seconds the compiled candidate's warm-up spent compiling (this run's, or the cached one)."""
    compile_warm: bool | None = None
    """Whether inductor's caches held this step's compile when the choice was made (None: not looked at)."""
    autotune_s: float = 0.0
    """Seconds spent choosing at start-up (trial steps and compilation), outside the loop's training time; a
    budgeted run trains for that much less."""
    step_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Flat ``autotune_*`` fields for a run summary."""
        out: dict[str, Any] = {"precision": self.precision, "compile": self.compile}
        out.update(
            {
                f"autotune_{k}": v
                for k, v in asdict(self).items()
                if k not in ("precision", "compile", "step_s") and v is not None
            }
        )
        return out


def expected_compile_s(entry: dict[str, Any] | None, warm: bool) -> float:
    """Seconds compiling the step is expected to cost, from its cache entry: the last compile measured with
    inductor's caches in the same state (``warm_compile_s`` when they hold this step's compile, ``compile_s``
    when they do not); with warm caches and only a cold figure, ``WARM_COMPILE_FRACTION`` of it; with nothing
    measured, ``COMPILE_PRIOR_S``."""
    entry = entry or {}
    if warm and entry.get("warm_compile_s") is not None:
        return float(entry["warm_compile_s"])
    if entry.get("compile_s") is None:
        return COMPILE_PRIOR_S
    return float(entry["compile_s"]) * (WARM_COMPILE_FRACTION if warm else 1.0)


def should_try_compile(
    horizon_s: float, expected_compile_s: float, max_fraction: float = MAX_COMPILE_FRACTION
) -> bool:
    """Whether compiling is worth a trial in a run of ``horizon_s`` seconds: only when its expected cost is at
    most ``max_fraction`` of the run, so a wrong guess cannot cost more than that share."""
    return math.isfinite(horizon_s) and expected_compile_s <= max_fraction * horizon_s


def losses_agree(reference: Sequence[float], other: Sequence[float], rtol: float = LOSS_RTOL) -> bool:
    """The steps both ran (a compiled trial runs one more warm-up step), all finite, each within ``rtol``
    (relative) of the reference's loss."""
    n = min(len(reference), len(other))
    pairs = list(zip(reference[:n], other[:n], strict=True))
    if not pairs or not all(math.isfinite(v) for pair in pairs for v in pair):
        return False
    return all(abs(a - b) <= rtol * max(abs(a), 1e-6) for a, b in pairs)


def choose(
    trials: Sequence[Trial],
    horizon_s: float,
    pending_compile_s: float = 0.0,
    margin: float = MARGIN,
    loss_rtol: float = LOSS_RTOL,
) -> tuple[Candidate, str]:
    """The candidate that processes the most images in ``horizon_s`` seconds, among those whose losses agree
    with the reference's (``trials[0]``, the path used when nothing else wins by ``margin``).

    ``pending_compile_s``: compile seconds a compiled candidate would still cost this run (0 when it was
    compiled while measuring; the cached compile time when the timings come from the cache).
    Returns (candidate, a one-line reason with the measured ratios).
    """
    if not trials:
        raise ValueError("choose() needs at least the reference trial")
    ref = trials[0]
    ref_images = horizon_s / ref.step_s
    best, best_images = ref, ref_images * (1 + margin)  # another path must beat the reference by the margin
    notes = []
    for t in trials[1:]:
        ratio = ref.step_s / t.step_s
        if not losses_agree(ref.losses, t.losses, loss_rtol):
            notes.append(f"{t.candidate.name} {ratio:.2f}x but its loss differs from {ref.candidate.name}'s")
            continue
        spend = pending_compile_s if t.candidate.compiled and not ref.candidate.compiled else 0.0
        images = max(0.0, horizon_s - spend) / t.step_s
        notes.append(
            f"{t.candidate.name} {ratio:.2f}x" + (f" after {spend:.0f} s compiling" if spend else "")
        )
        if images > best_images:
            best, best_images = t, images
    verdict = f"{best.candidate.name} kept"
    if best is ref and len(trials) > 1:
        verdict += f" (nothing {margin:.0%} faster that learns alike)"
    return best.candidate, f"{verdict}; step speed vs {ref.candidate.name}: " + (", ".join(notes) or "none")


def step_signature(cfg: PretrainConfig, device: torch.device, threads: int) -> dict[str, Any]:
    """Everything the step's speed depends on, besides the hardware: model, crops, batch, objective settings,
    optimiser kind, threads, torch version."""
    return {
        "version": CACHE_VERSION,
        "torch": torch.__version__,
        "device": device.type,
        "threads": threads,
        "model": to_dict(cfg.model),
        "crops": [[c.size, c.count] for c in cfg.crops],
        "batch_size": cfg.optim.batch_size,
        "optim": cfg.optim.name,
        "swav": [cfg.swav.sinkhorn_iters, list(cfg.swav.crops_for_assign)],
        "activation_checkpointing": cfg.parallel.activation_checkpointing,
    }


def cache_key(hardware: str, signature: dict[str, Any]) -> str:
    """'<hardware model> <16 hex digits of the signature's hash>'."""
    digest = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]
    return f"{hardware} {digest}"


def step_key(cfg: PretrainConfig, device: torch.device) -> str:
    """:func:`cache_key` of this run's step on this machine."""
    return cache_key(hardware_name(device), step_signature(cfg, device, torch.get_num_threads()))


def read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries by key; an absent, unreadable or older-format file is an empty cache."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add or replace one entry, atomically (a reader never sees half a file; concurrent writers: last wins)."""
    entries = read_cache(path)
    entries[key] = entry
    atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=2))


# ============ timing ============


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """
    device = crops[0].device
    steps = steps if steps is not None else TRIAL_STEPS
    _, peak_lr, _ = learning_rates(cfg.optim, distributed.world_size())
    saved = copy.deepcopy(model.state_dict())
    trials = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for cand in candidates:
                if cand.compiled and compiled is None:
                    persist_compile_caches()
                    compiled = torch.compile(train_model)
                forward = compiled if cand.compiled else train_model
                parts = step_parts(cfg, model, forward, cand.precision, device)
                warm = 2 if cand.compiled else 1
                losses, times = [], []
                start = time.perf_counter()
                for i in range(warm):
                    losses.append(train_step(parts, crops, i, peak_lr).loss)
                _sync(device)
                warmup_s = time.perf_counter() - start
                for i in range(warm, warm + steps):
                    t0 = time.perf_counter()
                    losses.append(train_step(parts, crops, i, peak_lr).loss)
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                trial = Trial(cand, statistics.median(times), warmup_s, warm, [float(v) for v in losses])
                trials.append(trial)
                log.info(
                    "autotune: %s %.3f s/step, warm-up %.1f s, losses %s",
                    cand.name,
                    trial.step_s,
                    warmup_s,
                    " ".join(f"{v:.4f}" for v in trial.losses),
                )
                model.load_state_dict(saved)
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    return trials, compiled


def _ratio(trials: Sequence[Trial], slow: Candidate, fast: Candidate) -> float | None:
    by = {t.candidate: t for t in trials}
    return by[slow].step_s / by[fast].step_s if slow in by and fast in by else None


@dataclass
class FastPaths:
    """What the loop's step runs with: ``forward`` (the model as the loop calls it, or that compiled), and the
    decision, whose ``precision`` gives the autocast (``openseer.train.step.step_parts``)."""

    forward: Callable
    decision: Decision


def _planned_steps(cfg: PretrainConfig, steps_per_epoch: int) -> int:
    steps = cfg.optim.planned_steps(steps_per_epoch)
    return min(steps, cfg.run.max_steps) if cfg.run.max_steps is not None else steps


def choose_fast_paths(
    cfg: PretrainConfig,
    model: SwAVModel,
    train_model: torch.nn.Module,
    batches: Any,
    device: torch.device,
    out_dir: Path | None = None,
    cache_path: Path | None = None,
) -> FastPaths:
    """Resolves ``run.precision`` and ``run.compile`` ('auto' or fixed) for this run, measuring when needed.

    ``batches`` is the run's batch stream (``epoch(e)`` iterator of crop lists, ``steps_per_epoch``); its first
    batch is what the trial steps run on. The choice, the ratios and the reason are logged and written to
    ``out_dir/autotune.json``.
    """
    started = time.perf_counter()
    decision, compiled = _decide(cfg, model, train_model, batches, device, cache_path)
    decision.autotune_s = time.perf_counter() - started
    if decision.compile:
        persist_compile_caches()
        mark_compiled(step_key(cfg, device))  # compiled while measuring, or at this run's first step
        forward = compiled if compiled is not None else torch.compile(train_model)
    else:
        forward = train_model
    log.info(
        "fast paths: precision=%s compile=%s (%s; %s, %.1f s)",
        decision.precision,
        "on" if decision.compile else "off",
        decision.reason,
        decision.source,
        decision.autotune_s,
    )
    if out_dir is not None and distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / RUN_FILE, json.dumps(asdict(decision), indent=2))
    return FastPaths(forward, decision)


def _decide(
    cfg: PretrainConfig,
    model: SwAVModel,
    train_model: torch.nn.Module,
    batches: Any,
    device: torch.device,
    cache_path: Path | None,
) -> tuple[Decision, torch.nn.Module | None]:
    """The decision, and the module compiled while measuring when the decision is to compile."""
    want_p, want_c = cfg.run.precision, cfg.run.compile
    if want_p != "auto" and want_c != "auto":
        return Decision(want_p, bool(want_c), "as configured", "fixed"), None
    hardware = hardware_name(device)
    native = device_native_bf16(device)
    base_p = want_p if want_p != "auto" else "fp32"
    base_c = bool(want_c) if want_c != "auto" else False
    if distributed.world_size() > 1:
        # timings differ per process and every process must take the same path: no measurement
        p = base_p if want_p != "auto" else ("bf16" if native and device.type == "cuda" else "fp32")
        return Decision(p, base_c, "multi-process run: not measured", "fixed", hardware, native), None

    precisions = [base_p] + (["bf16"] if want_p == "auto" and native else [])
    signature = step_signature(cfg, device, torch.get_num_threads())
    key = cache_key(hardware, signature)
    cache_path = cache_path or default_cache_dir() / CACHE_FILE
    entry = read_cache(cache_path).get(key) if cfg.run.autotune_cache else None
    cached = [Trial.from_dict(t) for t in entry["trials"]] if entry else []
    # a compile of this step left its work in inductor's caches: the next one costs a fraction of a cold one;
    # without that work (caches cleared, a new machine) a cold one again
    measured_compile = entry.get("compile_s") if entry else None
    warm = compile_cache_warm(key)
    compiled_before = compiled_in_process(key)  # then a compile now is no guide to a fresh process's
    expected_compile = expected_compile_s(entry, warm)
    budget_s = cfg.run.budget_minutes * 60 if cfg.run.budget_minutes is not None else None
    planned = _planned_steps(cfg, batches.steps_per_epoch)
    base_reason = reason_compile = ""
    if want_c == "auto" and budget_s is None and planned < MIN_PLANNED_STEPS_TO_COMPILE:
        want_c = False  # too short a run to compile: decided without timing
        base_reason = f"{planned} planned steps: too few to compile"
    elif want_c == "auto" and budget_s is not None and not should_try_compile(budget_s, expected_compile):
        want_c = False  # decided from the budget alone, without timing
        reason_compile = _not_tried(expected_compile, budget_s)
    if len(precisions) == 1 and want_c != "auto":
        reasons = [r for r in (base_reason, reason_compile) if r]
        if want_p == "auto":
            reasons.append(f"no native bf16 on {hardware}")
        why = "; ".join(reasons) or "as configured"
        return Decision(
            base_p, base_c, why, "fixed", hardware, native, compile_s=measured_compile, compile_warm=warm
        ), None

    eager = [Candidate(p, base_c) for p in precisions]
    by_cand = {t.candidate: t for t in cached}
    crops = None
    trials: list[Trial]
    compiled = None
    source = "cache"
    if all(c in by_cand for c in eager):
        trials = [by_cand[c] for c in eager]
    else:
        crops = _first_batch(batches)
        if crops is None:
            return Decision(base_p, base_c, "no readable first batch", "fixed", hardware, native), None
        # `compiled`: the module compiled here when run.compile=true
        trials, compiled = measure(cfg, model, train_model, eager, crops)
        source = "measured"
    horizon = budget_s if budget_s is not None else planned * trials[0].step_s

    if want_c == "auto":
        if not should_try_compile(horizon, expected_compile):
            reason_compile = _not_tried(expected_compile, horizon)
        else:
            comp = [Candidate(p, True) for p in precisions]
            if source == "cache" and all(c in by_cand for c in comp):
                trials += [by_cand[c] for c in comp]
            else:
                crops = crops if crops is not None else _first_batch(batches)
                if crops is None:
                    return Decision(
                        base_p, base_c, "no readable first batch", "fixed", hardware, native
                    ), None
                if source == "cache":  # timings of one session only: measure the eager ones again too
                    trials, _ = measure(cfg, model, train_model, eager, crops)
                more, compiled = measure(cfg, model, train_model, comp, crops, compiled=compiled)
                trials += more
                source = "measured"
    # compiled while measuring: nothing more to pay; from the cache: the warm compile still to come
    pending = expected_compile if source == "cache" else 0.0
    best, reason = choose(trials, horizon, pending)
    compile_trials = [t for t in trials if t.candidate.compiled]
    if source == "measured" and compile_trials:
        mark_compiled(key)  # compiled while measuring, whether kept or not
        compiled_in_process(key, note=True)
    costs = {k: (entry or {}).get(k) for k in ("compile_s", "warm_compile_s")}
    # measured now: cold, or from caches holding this step's compile
    if compile_trials and not compiled_before:
        costs["warm_compile_s" if warm else "compile_s"] = compile_trials[0].compile_s
    compile_s = compile_trials[0].compile_s if compile_trials else costs["compile_s"]
    if source == "measured":
        write_cache(
            cache_path,
            key,
            {
                "hardware": hardware,
                "signature": signature,
                "trials": [t.to_dict() for t in trials],
                **costs,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
    decision = Decision(
        best.precision,
        best.compiled,
        "; ".join(r for r in (base_reason, reason_compile, reason) if r),
        source,
        hardware,
        native,
        bf16_speedup=_ratio(trials, Candidate("fp32", base_c), Candidate("bf16", base_c)),
        compile_speedup=_ratio(trials, Candidate(base_p, False), Candidate(base_p, True)),
        compile_s=compile_s,
        compile_warm=warm,
        step_s={t.candidate.name: t.step_s for t in trials},
    )
    return decision, compiled if best.compiled else None


def record_first_compile(
    cfg: PretrainConfig,
    device: torch.device,
    decision: Decision,
    first_step_s: float,
    cache_path: Path | None = None,
) -> float | None:
    """After the first step of a run that compiled there (its choice came from the cache): what compiling
    cost, that step's time beyond an ordinary step's, replaces the cache entry's figure for caches in the state
    they were in (cold, or holding this step's compile), so the next run's choice rests on this machine's
    latest cost. Returns the seconds recorded, or None when there is nothing to record (also when this process
    compiled the step before: that compile's in-memory work makes this one's time no guide to a fresh
    process's)."""
    if not decision.compile:
        return None
    key = step_key(cfg, device)
    # every compiled run's first step leaves this step compiled in this process (run.compile=true included)
    compiled_before = compiled_in_process(key, note=True)
    if decision.source != "cache" or decision.compile_warm is None:
        return None  # compiled while choosing, or as configured: no cached figure that this step corrects
    if compiled_before:
        log.info(
            "compiling at the first step took %.1f s, after this process compiled it before: not recorded",
            first_step_s,
        )
        return None
    step_s = decision.step_s.get(Candidate(decision.precision, True).name)
    cache_path = cache_path or default_cache_dir() / CACHE_FILE
    entry = read_cache(cache_path).get(key)
    if step_s is None or entry is None:
        return None
    spent = max(0.0, first_step_s - step_s)
    field_name = "warm_compile_s" if decision.compile_warm else "compile_s"
    write_cache(cache_path, key, {**entry, field_name: spent})
    log.info(
        "compiling at the first step took %.1f s (%s caches); recorded for the next run's choice",
        spent,
        "warm" if decision.compile_warm else "cold",
    )
    return spent


def _not_tried(expected_compile_s: float, horizon_s: float) -> str:
    return (
        f"compile not tried: {expected_compile_s:.0f} s expected > {MAX_COMPILE_FRACTION:.0%} of "
        f"the {horizon_s:.0f} s run"
    )


def _first_batch(batches: Any) -> list[torch.Tensor] | None:
    it = batches.epoch(0)
    try:
        crops = next(it)
    finally:
        it.close()
    return crops or None
