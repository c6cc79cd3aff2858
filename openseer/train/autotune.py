"""The run's fast paths chosen by measurement: bf16 autocast and ``torch.compile`` (``run.precision=auto``,
``run.compile=auto``), at a bounded cost.

Whether bf16 or compilation makes a training step faster depends on the processor, not on the model alone: a
processor whose bf16 matrix products are much faster than fp32 can still run the whole step barely faster under
bf16 autocast, and a compiled step can be slower than eager after minutes of compilation (measured with
``benchmarks/throughput.py``; the figures are in docs/benchmarks.md). So ``auto`` measures, on the run's own first
batch, and spends on it no more than the run can afford:

* **what choosing may cost**: :data:`CHOOSING_SHARE` (3%) of a run of :data:`MIN_CHOOSING_S` (10 minutes) or
  more (``run.budget_minutes``, or the planned steps at the probed step time), nothing beyond the probe below
  that. The share is a hard bound: a trial or compile whose expected cost exceeds what is left of it is not
  started. Its cost comes out of a budgeted run's training time.
* **the probe** (:func:`openseer.train.trials.probe`; meant to take about a second or less,
  ``benchmarks/throughput.py`` prints what choosing costs a run under 10 minutes, the probe alone): one untimed
  and a few timed forward and backward passes on the first 16 images of each crop, in fp32 and, where the
  hardware has native bf16, in bf16, from the same weights. It runs the step's own layers on the step's own map
  sizes, only on fewer images, so the ratio of the two precisions is the step's up to how the batch size changes
  each kernel's efficiency (``benchmarks/throughput.py`` prints both ratios side by side); its loss check covers
  one pass. It is what a run too short to afford trial steps decides its precision by, and it gives every run
  the step time its allowance is planned with.
* **trial steps** (:func:`openseer.train.trials.measure`): a warm-up step and a few timed steps of the run's own
  step (:func:`openseer.train.step.train_step`) per precision, from the same weights, the precisions' timed
  steps taking turns, so that a slow spell of a shared machine falls on both alike instead of deciding the
  choice (and, recorded, every later run's); bf16 is kept only when its losses follow fp32's (each within
  :data:`LOSS_RTOL`, and its fall over the trial at least 1 - :data:`LOSS_DROP_RTOL` of fp32's) and its step is
  ``run.bf16_min_speedup`` times faster. The weights, BatchNorm statistics and RNG are restored afterwards.
* **compilation**: of the precision that won in eager only, when its expected cost (the last compile measured
  for this step with inductor's caches in the same state, else :data:`COMPILE_PRIOR_S`) and its trial steps fit
  in what is left of the allowance; or, where the record already holds a compiled trial of that precision, as
  that trial says (compiled at the first step when it won and that compile is at most
  :data:`MAX_COMPILE_FRACTION` of the run; never again on this machine when it lost).
* **the record**: probes, trials and compile costs per processor model, torch version and step
  (:func:`step_signature`) in ``<openseer cache>/autotune.json``, so a later run of the same step chooses for
  free. The run folder gets the decision (``RUN/autotune.json``); a resumed run keeps it rather than choosing
  again, so a run never changes precision part-way.

The SwAV codes (Sinkhorn), the prototypes and the loss stay fp32 in every case; ``run.fp32_modules`` keeps more
modules in fp32 under autocast (:func:`openseer.train.step.keep_fp32_`).

The decisions are pure (:func:`choosing_allowance`, :func:`choose`, :func:`probe_choice`, :func:`losses_agree`,
:func:`required_speedup`, :func:`resumed_decision`; the CPU's facts come from ``openseer.hardware``) and tested
without timing; :func:`choose_fast_paths` is the thin part that times (with ``openseer.train.trials``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
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
from openseer.hardware import bf16_support, busy_cpu, device_native_bf16, hardware_name
from openseer.models import SwAVModel
from openseer.train.compile_cache import (
    compile_cache_warm,
    compiled_in_process,
    mark_compiled,
    persist_compile_caches,
)
from openseer.train.config import PretrainConfig
from openseer.train.trials import Candidate, Probe, Trial, measure, probe, trial_cost_s

log = logging.getLogger(__name__)

CACHE_FILE = "autotune.json"  # under default_cache_dir(): what was measured per hardware model and step
RUN_FILE = "autotune.json"  # in the run folder: what was chosen and why
CACHE_VERSION = 3  # 3: probes; fp32 modules in the signature; only the eager winner's precision compiled
CHOOSING_SHARE = 0.03
"""Share of a run that choosing at start-up may spend, probe, trial steps and compilation together."""
MIN_CHOOSING_S = 600.0
"""Runs shorter than this spend nothing on choosing beyond the probe."""
COMPILE_PRIOR_S = 120.0
"""Expected compile time before one was measured for this machine and step: about what the cpu preset's step
took with cold caches on a 2-core CPU (``benchmarks/throughput.py --compile-cold-warm``)."""
WARM_COMPILE_FRACTION = 0.25
"""Share of a measured compile time expected again once inductor's caches hold that compile: above the share
measured for the cpu preset's step in fresh processes (``benchmarks/throughput.py --compile-cold-warm``), to stay
on the safe side."""
MAX_COMPILE_FRACTION = 0.1
"""A compile left to the run's first step (the record says compiling wins) is skipped when its expected cost
exceeds this share of the run."""
MIN_PLANNED_STEPS_TO_COMPILE = 200
"""A run without a time budget and fewer planned steps never compiles (a warm compile still traces the model
for tens of seconds)."""
MARGIN = 0.05
"""A path other than the reference must be this much faster per step: timings on a shared machine are noisy."""
LOSS_RTOL = 0.02
"""Largest relative difference between the loss of a candidate's trial step and the reference's."""
LOSS_DROP_RTOL = 0.5
"""A candidate's loss must fall over the trial steps by at least 1 - this share of the reference's fall: bf16
that learns far less from the same weights and batch is not taken, however fast. A bound on gross failure only
(bf16's fall is commonly a little smaller than fp32's); what bf16 costs in quality at equal steps is priced by
``run.bf16_min_speedup``, from ``benchmarks/bf16_quality.py``."""
# ============ pure parts ============


@dataclass
class Decision:
    """The fast paths a run uses, why, and the measured ratios (also written to the run folder)."""

    precision: str
    compile: bool
    reason: str
    source: str
    """'fixed' (nothing to choose), 'probe' (decided by the probe run now), 'measured' (trial steps run now),
    'cache' (from what earlier runs on this hardware model measured for this step) or 'run' (kept from the
    start of the run being resumed)."""
    hardware: str = ""
    native_bf16: bool = False
    bf16_flag: str = ""
    """What decides native bf16: the CPU flag ('avx512_bf16', 'amx_bf16'; 'none') or the CUDA capability."""
    bf16_speedup: float | None = None
    """fp32 step time / bf16 step time (eager trial steps); > 1: bf16 is faster."""
    probe_bf16_speedup: float | None = None
    """The same ratio as the probe measured it."""
    compile_speedup: float | None = None
    """eager step time / compiled step time in the chosen precision; > 1: compiled is faster."""
    compile_s: float | None = None
    """Seconds the compiled trial's warm-up spent compiling (this run's, or the recorded one)."""
    compile_warm: bool | None = None
    """Whether inductor's caches held this step's compile when the choice was made (None: not looked at)."""
    compile_pending_s: float | None = None
    """The compile left to the run's first step (the record says compiling wins): its expected seconds."""
    horizon_s: float | None = None
    """The run's length the choice was made for (its budget, or its planned steps at the step time)."""
    allowance_s: float = 0.0
    """Seconds choosing was allowed (:func:`choosing_allowance` of the horizon)."""
    autotune_s: float = 0.0
    """Seconds spent choosing at start-up (probe, trial steps, compilation), outside the loop's training time; a
    budgeted run trains for that much less. A resumed run keeps its start's figure (and so its budget)."""
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

    def line(self) -> str:
        """What was chosen, how, at what cost and why, in one line."""
        path = f"{self.precision} {'compiled' if self.compile else 'eager'}"
        cost = f"{self.autotune_s:.1f} s choosing"
        if self.horizon_s:
            cost += f" = {self.autotune_s / self.horizon_s:.1%} of the {self.horizon_s:.0f} s run"
            cost += f", {self.allowance_s:.0f} s allowed"
        if self.bf16_flag:  # the hardware was looked at
            cost += f"; bf16 {'native' if self.native_bf16 else 'emulated'} ({self.bf16_flag})"
        return f"fast paths: {path} [{self.source}; {cost}]: {self.reason}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        """A decision as ``asdict`` wrote it (fields this version does not know are left out)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def choosing_allowance(horizon_s: float) -> float:
    """Seconds choosing may spend in a run of ``horizon_s`` seconds: :data:`CHOOSING_SHARE` of it from
    :data:`MIN_CHOOSING_S` on, else 0 (the probe only)."""
    if not math.isfinite(horizon_s) or horizon_s < MIN_CHOOSING_S:
        return 0.0
    return CHOOSING_SHARE * horizon_s


def expected_compile_s(entry: dict[str, Any] | None, warm: bool) -> float:
    """Seconds compiling the step is expected to cost, from its record: the last compile measured with
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
    """Whether a compile left to the run's first step is worth it in a run of ``horizon_s`` seconds: only when
    its expected cost is at most ``max_fraction`` of the run, so a wrong guess cannot cost more than that."""
    return math.isfinite(horizon_s) and expected_compile_s <= max_fraction * horizon_s


def losses_agree(
    reference: Sequence[float],
    other: Sequence[float],
    rtol: float = LOSS_RTOL,
    drop_rtol: float = LOSS_DROP_RTOL,
) -> bool:
    """Over the steps both ran (a compiled trial runs one more warm-up step), all finite: each loss within
    ``rtol`` (relative) of the reference's, and, where the reference's loss fell, ``other``'s fell by at least
    1 - ``drop_rtol`` of that (the same trajectory, not only nearby values)."""
    n = min(len(reference), len(other))
    pairs = list(zip(reference[:n], other[:n], strict=True))
    if not pairs or not all(math.isfinite(v) for pair in pairs for v in pair):
        return False
    if not all(abs(a - b) <= rtol * max(abs(a), 1e-6) for a, b in pairs):
        return False
    ref_drop, drop = reference[0] - reference[n - 1], other[0] - other[n - 1]
    return ref_drop <= 0 or drop >= (1 - drop_rtol) * ref_drop


def required_speedup(
    candidate: Candidate, reference: Candidate, bf16_min_speedup: float, margin: float = MARGIN
) -> float:
    """How many times faster per step than ``reference`` a candidate must be to replace it: 1 + ``margin``
    (timing noise), and for bf16 against fp32 at least ``bf16_min_speedup`` (``run.bf16_min_speedup``: the
    price of bf16's steps in quality)."""
    if candidate == reference:
        return 1.0
    need = 1 + margin
    if candidate.precision == "bf16" and reference.precision == "fp32":
        need = max(need, bf16_min_speedup)
    return need


def choose(
    trials: Sequence[Trial],
    horizon_s: float,
    pending_compile_s: float = 0.0,
    margin: float = MARGIN,
    loss_rtol: float = LOSS_RTOL,
    bf16_min_speedup: float = 1 + MARGIN,
) -> tuple[Candidate, str]:
    """The candidate that processes the most images in ``horizon_s`` seconds, each candidate's images divided
    by its :func:`required_speedup`, among those whose losses agree with the reference's (``trials[0]``, the path
    kept when nothing else wins).

    ``pending_compile_s``: compile seconds a compiled candidate would still cost this run (0 when it was
    compiled while measuring; the expected compile when the timings come from the record).
    Returns (candidate, a one-line reason with the measured ratios).
    """
    if not trials:
        raise ValueError("choose() needs at least the reference trial")
    ref = trials[0]
    best, best_value = ref, horizon_s / ref.step_s
    notes = []
    for t in trials[1:]:
        ratio = ref.step_s / t.step_s
        if not losses_agree(ref.losses, t.losses, loss_rtol):
            notes.append(f"{t.candidate.name} {ratio:.2f}x but its loss differs from {ref.candidate.name}'s")
            continue
        spend = pending_compile_s if t.candidate.compiled and not ref.candidate.compiled else 0.0
        need = required_speedup(t.candidate, ref.candidate, bf16_min_speedup, margin)
        value = max(0.0, horizon_s - spend) / t.step_s / need
        notes.append(
            f"{t.candidate.name} {ratio:.2f}x (needs {need:.2f}x)"
            + (f" after {spend:.0f} s compiling" if spend else "")
        )
        if value > best_value:
            best, best_value = t, value
    verdict = f"{best.candidate.name} kept"
    if best is ref and len(trials) > 1:
        verdict += " (nothing else fast enough that learns alike)"
    return best.candidate, f"{verdict}; step speed vs {ref.candidate.name}: " + (", ".join(notes) or "none")


def probe_choice(
    probes: Sequence[Probe],
    bf16_min_speedup: float,
    margin: float = MARGIN,
    loss_rtol: float = LOSS_RTOL,
) -> tuple[str, str]:
    """The precision the probe favours: the fastest per image among those whose loss agrees with the
    reference's (``probes[0]``, kept unless another is :func:`required_speedup` times faster). Returns
    (precision, a one-line reason)."""
    if not probes:
        raise ValueError("probe_choice() needs at least the reference probe")
    ref = probes[0]
    best, best_value = ref, 1.0
    notes = []
    for p in probes[1:]:
        ratio = ref.image_s / p.image_s
        if not losses_agree([ref.loss], [p.loss], loss_rtol):
            notes.append(f"{p.precision} {ratio:.2f}x but its loss differs")
            continue
        need = required_speedup(
            Candidate(p.precision, False), Candidate(ref.precision, False), bf16_min_speedup
        )
        notes.append(f"{p.precision} {ratio:.2f}x (needs {need:.2f}x)")
        if ratio / need > best_value:
            best, best_value = p, ratio / need
    return best.precision, f"probe on {ref.images} images: {best.precision} kept; vs {ref.precision}: " + (
        ", ".join(notes) or "none"
    )


def resumed_decision(precision: str, compile: bool | str, earlier: Decision) -> Decision:
    """The decision of a resumed run: what its start chose (``earlier``, from ``RUN/autotune.json``) for the
    settings left to 'auto', the configured value for the others; the start's choosing time is kept, so the
    budget and the schedule that follows it stay the same."""
    return dataclasses.replace(
        earlier,
        precision=earlier.precision if precision == "auto" else precision,
        compile=earlier.compile if compile == "auto" else bool(compile),
        source="run",
        reason=f"kept from the run's start ({earlier.source}: {earlier.reason})",
        compile_pending_s=None,
    )


def step_signature(cfg: PretrainConfig, device: torch.device, threads: int) -> dict[str, Any]:
    """Everything the step's speed depends on, besides the hardware: model, crops, batch, objective settings,
    optimiser kind, modules kept in fp32, threads, torch version."""
    return {
        "version": CACHE_VERSION,
        "torch": torch.__version__,
        "device": device.type,
        "threads": threads,
        "model": to_dict(cfg.model.network()),  # what the run starts from is no part of it
        "crops": [[c.size, c.count] for c in cfg.crops],
        "batch_size": cfg.optim.batch_size,
        "optim": cfg.optim.name,
        "swav": [cfg.swav.sinkhorn_iters, list(cfg.swav.crops_for_assign)],
        "activation_checkpointing": cfg.parallel.activation_checkpointing,
        "fp32_modules": sorted(cfg.run.fp32_modules),
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


def read_run_decision(path: Path) -> Decision | None:
    """The decision a run folder records (``RUN/autotune.json``); None when there is none or it is unreadable."""
    try:
        return Decision.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


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
    resume: bool = False,
) -> FastPaths:
    """Resolves ``run.precision`` and ``run.compile`` ('auto' or fixed) for this run, measuring when needed.

    ``batches`` is the run's batch stream (``epoch(e)`` iterator of crop lists, ``steps_per_epoch``); its first
    batch is what the probe and the trial steps run on. The choice, its cost and its reason are logged in one
    line and written to ``out_dir/autotune.json``; with ``resume``, an 'auto' setting takes what that file
    recorded at the run's start instead.
    """
    started = time.perf_counter()
    earlier = read_run_decision(out_dir / RUN_FILE) if resume and out_dir is not None else None
    auto = "auto" in (cfg.run.precision, cfg.run.compile)
    compiled = None
    if earlier is not None and auto:
        decision = resumed_decision(cfg.run.precision, cfg.run.compile, earlier)
    else:
        decision, compiled = _decide(cfg, model, train_model, batches, device, cache_path, started)
        decision.autotune_s = time.perf_counter() - started
    if decision.compile:
        persist_compile_caches()
        mark_compiled(step_key(cfg, device))  # compiled while measuring, or at this run's first step
        forward = compiled if compiled is not None else torch.compile(train_model)
    else:
        forward = train_model
    log.info("%s", decision.line())
    if out_dir is not None and distributed.is_main() and decision.source != "run":
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
    started: float,
) -> tuple[Decision, torch.nn.Module | None]:
    """The decision, and the module compiled while measuring when the decision is to compile."""
    want_p, want_c = cfg.run.precision, cfg.run.compile
    if want_p != "auto" and want_c != "auto":
        return Decision(want_p, bool(want_c), "as configured", "fixed"), None
    hardware = hardware_name(device)
    native = device_native_bf16(device)
    flag = bf16_support(device)[1]
    facts = {"hardware": hardware, "native_bf16": native, "bf16_flag": flag}
    base_p = want_p if want_p != "auto" else "fp32"
    base_c = bool(want_c) if want_c != "auto" else False
    if distributed.world_size() > 1:
        # timings differ per process and every process must take the same path: no measurement
        p = base_p if want_p != "auto" else ("bf16" if native and device.type == "cuda" else "fp32")
        return Decision(p, base_c, "multi-process run: not measured", "fixed", **facts), None

    precisions = [base_p] + (["bf16"] if want_p == "auto" and native else [])
    budget_s = cfg.run.budget_minutes * 60 if cfg.run.budget_minutes is not None else None
    planned = _planned_steps(cfg, batches.steps_per_epoch)
    notes: list[str] = []
    try_compile = want_c == "auto"
    if try_compile and budget_s is None and planned < MIN_PLANNED_STEPS_TO_COMPILE:
        try_compile = False  # too short a run to compile: decided without timing
        notes.append(f"{planned} planned steps: too few to compile")
    if len(precisions) == 1 and not try_compile:
        if want_p == "auto":
            notes.append(f"no native bf16 on {hardware} ({flag})")
        return Decision(base_p, base_c, "; ".join(notes) or "as configured", "fixed", **facts), None

    # ============ what this machine's record holds for this step ============
    signature = step_signature(cfg, device, torch.get_num_threads())
    key = cache_key(hardware, signature)
    cache_path = cache_path or default_cache_dir() / CACHE_FILE
    entry = (read_cache(cache_path).get(key) if cfg.run.autotune_cache else None) or {}
    trials = {t.candidate: t for t in map(Trial.from_dict, entry.get("trials", []))}
    probes = {p["precision"]: Probe(**p) for p in entry.get("probes", [])}
    warm = compile_cache_warm(key)
    compiled_before = compiled_in_process(key)  # then a compile now is no guide to a fresh process's
    expected_compile = expected_compile_s(entry, warm)
    measured: list[Trial] = []
    probed = False
    first: list[list[torch.Tensor] | None] = []  # the first batch, read once when needed

    def crops() -> list[torch.Tensor] | None:
        if not first:
            first.append(_first_batch(batches))
        return first[0]

    def step_estimate(precision: str) -> float:
        trial = trials.get(Candidate(precision, False))
        return trial.step_s if trial is not None else probes[precision].step_s(cfg.optim.batch_size)

    def unreadable() -> tuple[Decision, None]:
        return Decision(base_p, base_c, "no readable first batch", "fixed", **facts), None

    # ============ the probe (short): for a precision or a step time the record cannot tell ============
    eager = [Candidate(p, False) for p in precisions]
    need_precision = len(eager) > 1 and not all(c in trials for c in eager)
    # the step time gives a step-bounded run its length, and plans a compile's trial
    need_step_time = budget_s is None or (try_compile and choosing_allowance(budget_s) > 0)
    known = all(c in trials or c.precision in probes for c in eager)
    if (need_precision and not all(p in probes for p in precisions)) or (need_step_time and not known):
        if crops() is None:
            return unreadable()
        probes.update((p.precision, p) for p in probe(cfg, model, train_model, precisions, crops()))
        probed = True
    horizon = budget_s if budget_s is not None else planned * step_estimate(base_p)
    allowance = choosing_allowance(horizon)
    if allowance <= 0 and (need_precision or try_compile):
        notes.append(f"a {horizon:.0f} s run (under {MIN_CHOOSING_S:.0f} s): no trial steps")

    def left() -> float:  # of the allowance: the hard bound on what choosing may still start
        return allowance - (time.perf_counter() - started)

    # ============ trial steps of each precision, as far as the allowance reaches ============
    if len(eager) > 1 and not all(c in trials for c in eager) and allowance > 0:
        # all in this session, from the same weights, their timed steps taking turns (a slow spell of the
        # machine falls on each alike); not started when the whole set does not fit in what is left
        cost = sum(trial_cost_s(step_estimate(c.precision)) for c in eager)
        if cost > left():
            notes.append(f"trial steps not run: {cost:.0f} s expected > {max(left(), 0):.0f} s left")
        elif crops() is None:
            return unreadable()
        else:
            new = measure(cfg, model, train_model, eager, crops())[0]
            trials.update((t.candidate, t) for t in new)
            measured += new
    if len(eager) == 1:
        winner = base_p
    elif all(c in trials for c in eager):
        cand, why = choose([trials[c] for c in eager], horizon, bf16_min_speedup=cfg.run.bf16_min_speedup)
        winner = cand.precision
        notes.append(("trials: " if measured else "recorded trials: ") + why)
    else:
        winner, why = probe_choice([probes[p] for p in precisions], cfg.run.bf16_min_speedup)
        notes.append(why)

    # ============ compile the winner, as far as the allowance reaches or as the record says ============
    use_compile, pending, compiled = base_c, None, None
    comp, plain = Candidate(winner, True), Candidate(winner, False)
    recorded_comp = comp in trials and plain in trials
    if try_compile and recorded_comp:  # this machine's history for this step
        cand, why = choose(
            [trials[plain], trials[comp]],
            horizon,
            expected_compile,
            bf16_min_speedup=cfg.run.bf16_min_speedup,
        )
        if cand != comp:
            notes.append(f"recorded: compiling loses here ({why})")
        elif not should_try_compile(horizon, expected_compile):
            notes.append(
                f"recorded: compiling wins, but its {expected_compile:.0f} s > {MAX_COMPILE_FRACTION:.0%} of "
                f"the {horizon:.0f} s run"
            )
        else:
            use_compile, pending = True, expected_compile
            notes.append(f"recorded: {why}; compiled at the first step")
    elif try_compile and allowance <= 0:
        notes.append("compile not tried: nothing is allowed for choosing beyond the probe")
    elif try_compile:
        cost = trial_cost_s(step_estimate(winner), compiled=True, compile_s=expected_compile)
        if plain not in trials:
            cost += trial_cost_s(step_estimate(winner))
        if cost > left():
            notes.append(
                f"{comp.name} not tried: {cost:.0f} s expected ({expected_compile:.0f} s compiling, "
                f"{'measured' if entry.get('compile_s') is not None else 'prior'}) > "
                f"{max(left(), 0):.0f} s left of {allowance:.0f} s"
            )
        else:
            if crops() is None:
                return unreadable()
            to_time = ([] if plain in trials else [plain]) + [comp]
            new, compiled = measure(cfg, model, train_model, to_time, crops())
            trials.update((t.candidate, t) for t in new)
            measured += new
            cand, why = choose(
                [trials[plain], trials[comp]], horizon, bf16_min_speedup=cfg.run.bf16_min_speedup
            )
            use_compile = cand == comp
            notes.append(why)

    # ============ record ============
    compile_trial = next((t for t in measured if t.candidate.compiled), None)
    if compile_trial is not None:
        mark_compiled(key)  # compiled while measuring, whether kept or not
        compiled_in_process(key, note=True)
    costs = {k: entry.get(k) for k in ("compile_s", "warm_compile_s")}
    if compile_trial is not None and not compiled_before:  # measured now: cold, or from warm caches
        costs["warm_compile_s" if warm else "compile_s"] = compile_trial.compile_s
    # timings taken while other work shares the cores choose for this run only: recorded, they would decide
    # every later run on this processor (a probe under load can make bf16 look no faster than fp32)
    busy = busy_cpu(device) if measured or probed else None
    if busy is not None:
        notes.append(f"not recorded for later runs: {busy}")
    if (measured or probed) and busy is None:
        write_cache(
            cache_path,
            key,
            {
                "hardware": hardware,
                "signature": signature,
                "trials": [t.to_dict() for t in trials.values()],
                "probes": [asdict(p) for p in probes.values()],
                **costs,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
    decision = Decision(
        winner,
        use_compile,
        "; ".join(notes),
        "measured" if measured else "probe" if probed else "cache" if entry else "fixed",
        **facts,
        bf16_speedup=_ratio(trials, Candidate("fp32", False), Candidate("bf16", False)),
        probe_bf16_speedup=(
            probes["fp32"].image_s / probes["bf16"].image_s if {"fp32", "bf16"} <= probes.keys() else None
        ),
        compile_speedup=_ratio(trials, plain, comp),
        compile_s=compile_trial.compile_s if compile_trial is not None else costs["compile_s"],
        compile_warm=warm if try_compile else None,
        compile_pending_s=pending,
        horizon_s=horizon,
        allowance_s=allowance,
        step_s={t.candidate.name: t.step_s for t in trials.values()},
    )
    return decision, compiled if use_compile else None


def _ratio(trials: dict[Candidate, Trial], slow: Candidate, fast: Candidate) -> float | None:
    return trials[slow].step_s / trials[fast].step_s if slow in trials and fast in trials else None


def record_first_compile(
    cfg: PretrainConfig,
    device: torch.device,
    decision: Decision,
    first_step_s: float,
    cache_path: Path | None = None,
) -> float | None:
    """After the first step of a run that compiled there because the record said compiling wins: what
    compiling cost, that step's time beyond an ordinary step's, replaces the record's figure for caches in the
    state they were in (cold, or holding this step's compile), so the next run's choice rests on this machine's
    latest cost. Returns the seconds recorded, or None when there is nothing to record (also when this process
    compiled the step before: that compile's in-memory work makes this one's time no guide to a fresh
    process's)."""
    if not decision.compile:
        return None
    key = step_key(cfg, device)
    # every compiled run's first step leaves this step compiled in this process (run.compile=true included)
    compiled_before = compiled_in_process(key, note=True)
    if decision.compile_pending_s is None or decision.compile_warm is None:
        return None  # compiled while choosing, or as configured: no recorded figure that this step corrects
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


def _first_batch(batches: Any) -> list[torch.Tensor] | None:
    it = batches.epoch(0)
    try:
        crops = next(it)
    finally:
        it.close()
    return crops or None
