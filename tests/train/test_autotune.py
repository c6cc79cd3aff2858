"""Choosing bf16 and torch.compile by measurement: the pure decisions, the cache, and the thin timing part (no
assertion on how fast anything is)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import support
import torch

from openseer.config import load_config
from openseer.hardware import hardware_name
from openseer.models import build_model
from openseer.train import autotune as at
from openseer.train import trials
from openseer.train.config import PretrainConfig
from openseer.train.data import TensorBatches
from openseer.train.step import autocast_for

FP32, BF16 = at.Candidate("fp32", False), at.Candidate("bf16", False)
FP32_C, BF16_C = at.Candidate("fp32", True), at.Candidate("bf16", True)


def _trial(cand: at.Candidate, step_s: float, losses=(4.6, 4.4, 4.2, 4.0), warmup_s=None) -> at.Trial:
    warm = 2 if cand.compiled else 1
    return at.Trial(cand, step_s, warmup_s if warmup_s is not None else warm * step_s, warm, list(losses))


# ============ decisions ============


def test_compile_not_tried_when_it_cannot_pay_back_in_the_budget():
    # a 5-minute run must not spend 2 minutes compiling; 20 or 40 minutes may try
    assert not at.should_try_compile(5 * 60, at.COMPILE_PRIOR_S)
    assert at.should_try_compile(20 * 60, at.COMPILE_PRIOR_S)
    assert at.should_try_compile(40 * 60, at.COMPILE_PRIOR_S)
    assert at.should_try_compile(5 * 60, 20.0)  # a warm cache makes it cheap enough
    assert not at.should_try_compile(math.inf, 1.0)


def test_losses_agree_within_tolerance_only():
    ref = [4.60, 4.40, 4.20]
    assert at.losses_agree(ref, [4.61, 4.42, 4.19], rtol=0.02)
    assert not at.losses_agree(ref, [4.60, 4.40, 3.90], rtol=0.02)
    assert not at.losses_agree(ref, [4.60, 4.40, float("nan")], rtol=0.02)
    assert at.losses_agree(ref, [4.60, 4.40], rtol=0.02)  # the steps both ran: a compiled trial runs one more
    assert at.losses_agree([4.60, 4.40], ref, rtol=0.02)
    assert not at.losses_agree(ref, [], rtol=0.02)


def test_compiled_trial_with_an_extra_warmup_step_is_compared_on_common_steps():
    eager = _trial(FP32, 1.0, losses=(4.6, 4.4, 4.2, 4.0))
    compiled = _trial(FP32_C, 0.5, losses=(4.6, 4.4, 4.2, 4.0, 3.8))
    assert at.choose([eager, compiled], horizon_s=1000)[0] == FP32_C


def test_choose_keeps_reference_unless_clearly_faster():
    ref = _trial(FP32, 1.0)
    cand, reason = at.choose([ref, _trial(BF16, 0.98)], horizon_s=600)  # 2%: within the noise margin
    assert cand == FP32 and "bf16-eager 1.02x" in reason
    cand, _ = at.choose([ref, _trial(BF16, 0.6)], horizon_s=600)
    assert cand == BF16


def test_choose_rejects_a_faster_path_that_learns_differently():
    diverging = _trial(BF16, 0.5, losses=(4.6, 4.5, 4.9, 5.5))
    cand, reason = at.choose([_trial(FP32, 1.0), diverging], horizon_s=600)
    assert cand == FP32 and "loss differs" in reason


def test_choose_counts_compile_still_to_pay():
    trials = [_trial(FP32, 1.0), _trial(FP32_C, 0.8)]
    # already compiled while measuring: only the step time counts
    assert at.choose(trials, horizon_s=300, pending_compile_s=0.0)[0] == FP32_C
    # compile still ahead (timings from the cache): 100 s of a 300 s run never pay back a 1.25x step
    assert at.choose(trials, horizon_s=300, pending_compile_s=100.0)[0] == FP32
    assert at.choose(trials, horizon_s=3000, pending_compile_s=100.0)[0] == FP32_C


def test_choose_picks_the_fastest_of_several():
    trials = [
        _trial(FP32, 1.0),
        _trial(BF16, 0.7),
        _trial(FP32_C, 0.9),
        _trial(at.Candidate("bf16", True), 0.5),
    ]
    assert at.choose(trials, horizon_s=1000)[0] == at.Candidate("bf16", True)


def test_decision_summary_is_flat():
    d = at.Decision("fp32", False, "why", "measured", "AMD EPYC", bf16_speedup=0.2)
    s = d.summary()
    assert s["precision"] == "fp32" and s["compile"] is False
    assert s["autotune_bf16_speedup"] == 0.2 and "autotune_compile_speedup" not in s


def test_choosing_is_free_under_ten_minutes_and_three_percent_from_there():
    assert at.choosing_allowance(9.9 * 60) == 0.0
    assert at.choosing_allowance(10 * 60) == pytest.approx(18.0)
    assert at.choosing_allowance(20 * 60) == pytest.approx(36.0)
    assert at.choosing_allowance(math.inf) == 0.0


def test_losses_must_follow_the_references_trajectory():
    ref = [4.6, 4.4, 4.2, 4.0]  # falls by 0.6
    assert at.losses_agree(ref, [4.62, 4.43, 4.24, 4.05], rtol=0.02, drop_rtol=0.2)  # falls by 0.57
    # every loss within 2% of fp32's, yet it falls by 0.43, less than 80% of fp32's fall
    assert at.losses_agree(ref, [4.51, 4.40, 4.25, 4.079], rtol=0.02, drop_rtol=1.0)
    assert not at.losses_agree(ref, [4.51, 4.40, 4.25, 4.079], rtol=0.02, drop_rtol=0.2)
    assert not at.losses_agree(ref, [4.6, 4.55, 4.5, 4.45], rtol=0.2)  # by default: at least half the fall
    assert at.losses_agree([4.6, 4.7], [4.6, 4.65], rtol=0.02, drop_rtol=0.2)  # the reference did not fall


def test_bf16_must_be_worth_its_price_in_speed():
    assert at.required_speedup(FP32, FP32, bf16_min_speedup=1.3) == 1.0
    assert at.required_speedup(BF16, FP32, bf16_min_speedup=1.3) == 1.3
    assert at.required_speedup(BF16, FP32, bf16_min_speedup=1.0) == 1 + at.MARGIN  # never below the noise
    assert at.required_speedup(FP32_C, FP32, bf16_min_speedup=1.3) == 1 + at.MARGIN
    assert (
        at.required_speedup(BF16_C, BF16, bf16_min_speedup=1.3) == 1 + at.MARGIN
    )  # compiling is no bf16 price
    ref = _trial(FP32, 1.0)
    cand, reason = at.choose([ref, _trial(BF16, 1 / 1.2)], 1000, bf16_min_speedup=1.3)
    assert cand == FP32 and "bf16-eager 1.20x (needs 1.30x)" in reason
    assert at.choose([ref, _trial(BF16, 1 / 1.4)], 1000, bf16_min_speedup=1.3)[0] == BF16


def test_the_probe_picks_bf16_only_when_fast_enough_with_a_loss_that_agrees():
    fp32 = at.Probe("fp32", 0.003, 4.60, 16)
    assert at.probe_choice([fp32, at.Probe("bf16", 0.001, 4.61, 16)], 1.05)[0] == "bf16"
    precision, reason = at.probe_choice([fp32, at.Probe("bf16", 0.001, 4.90, 16)], 1.05)
    assert precision == "fp32" and "loss differs" in reason
    assert at.probe_choice([fp32, at.Probe("bf16", 0.0025, 4.60, 16)], 1.3)[0] == "fp32"  # 1.2x of 1.3x
    assert at.probe_choice([fp32], 1.05)[0] == "fp32"
    assert fp32.step_s(256) == pytest.approx(0.768)


def test_a_resumed_run_keeps_its_starts_choice_for_the_auto_settings_only():
    start = at.Decision("bf16", True, "trials: bf16-eager kept", "measured", autotune_s=12.5)
    d = at.resumed_decision("auto", "auto", start)
    assert (d.precision, d.compile, d.source, d.autotune_s) == ("bf16", True, "run", 12.5)
    assert d.compile_pending_s is None and "bf16-eager kept" in d.reason
    assert (
        at.resumed_decision("fp32", "auto", start).precision,
        at.resumed_decision("auto", False, start).compile,
    ) == (
        "fp32",
        False,
    )


def test_the_decision_reads_in_one_line_and_round_trips():
    d = at.Decision(
        "bf16",
        False,
        "trials: bf16-eager kept; bf16-compiled not tried",
        "measured",
        "AMD EPYC",
        True,
        "avx512_bf16",
        autotune_s=9.0,
        horizon_s=1200.0,
        allowance_s=36.0,
    )
    line = d.line()
    assert "\n" not in line
    for part in ("bf16 eager", "measured", "0.8% of the 1200 s run", "36 s allowed", "native (avx512_bf16)"):
        assert part in line
    assert at.Decision.from_dict({**asdict(d), "a_field_of_a_later_version": 1}) == d
    fixed = at.Decision("fp32", False, "as configured", "fixed").line()
    assert fixed == "fast paths: fp32 eager [fixed; 0.0 s choosing]: as configured"
    assert at.read_run_decision(Path("/nonexistent/autotune.json")) is None


# ============ cache ============


def _cfg(*overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, ["cpu"], list(overrides))


def test_cache_key_follows_what_the_step_depends_on():
    cpu = torch.device("cpu")

    def key(cfg: PretrainConfig, hardware: str = "AMD EPYC", threads: int = 2) -> str:
        return at.cache_key(hardware, at.step_signature(cfg, cpu, threads))

    base = key(_cfg())
    assert base == key(_cfg()) and base.startswith("AMD EPYC ")
    assert base == key(_cfg("augment.color_strength=0.8", "optim.base_lr=0.1", "run.budget_minutes=7"))
    assert base != key(_cfg("optim.batch_size=128"))
    assert base != key(_cfg("model.arch=regnety_400mf"))
    assert base != key(_cfg(), threads=4)
    assert base != key(_cfg("run.fp32_modules=[batchnorm]"))  # another bf16 step
    assert key(_cfg("run.fp32_modules=[head, batchnorm]")) == key(_cfg("run.fp32_modules=[batchnorm, head]"))
    assert base != key(_cfg(), hardware="Intel(R) Xeon(R) Platinum 8480+")


def test_cache_written_atomically_and_merged(tmp_path: Path):
    path = tmp_path / "sub" / "autotune.json"
    assert at.read_cache(path) == {}
    at.write_cache(path, "a", {"x": 1})
    at.write_cache(path, "b", {"x": 2})
    assert at.read_cache(path) == {"a": {"x": 1}, "b": {"x": 2}}
    assert [p.name for p in path.parent.iterdir()] == ["autotune.json"]  # no temporary file left
    path.write_text("{not json")
    assert at.read_cache(path) == {}
    path.write_text(json.dumps({"version": at.CACHE_VERSION + 1, "entries": {"a": {}}}))
    assert at.read_cache(path) == {}


def test_a_run_that_compiles_marks_its_step_warm(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    cfg = _tiny(tmp_path, run__precision="fp32", run__compile=True)
    model, batches = _setup(cfg)
    key = at.step_key(cfg, torch.device("cpu"))
    assert not at.compile_cache_warm(key)
    fast = at.choose_fast_paths(cfg, model, model, batches, torch.device("cpu"), tmp_path)
    assert fast.decision.compile and fast.forward is not model  # compiled lazily, at the first step
    assert at.compile_cache_warm(key)


# ============ what choosing costs (fake probe and trials on a fake clock) ============


class _Clock:
    """autotune's clock, moved on by the fake probe and trials by what they take."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    strftime = staticmethod(time.strftime)


@pytest.fixture
def quiet_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timings recorded as on a quiet machine, whatever else shares the cores with the tests (on a busy CPU they
    are not recorded: tested below with the CPU said busy, and openseer.hardware.busy_cpu in test_hardware)."""
    monkeypatch.setattr(at, "busy_cpu", lambda device: None)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_cpu: None):
    """Native bf16, cold compile caches, and a probe and trials that take the clock's time: the probe 0.5 s, a
    trial what ``at.trial_cost_s`` expects of its steps (fp32 1.5 s, bf16 0.45 s, compiled 0.8x; compiling 100 s),
    or ``fake.took[candidate]`` when set. ``fake.timed``: the candidates timed, in order."""

    class Fake:
        clock = _Clock()
        steps = {"fp32": 1.5, "bf16": 0.45}
        took: dict = {}
        timed: list = []
        probed: list = []
        cache = tmp_path / "cache.json"

        def probe(self, cfg, model, train_model, precisions, crops, **kw):
            self.probed.append(list(precisions))
            self.clock.now += 0.5
            b = cfg.optim.batch_size
            return [at.Probe(p, self.steps[p] / b, 4.6, b) for p in precisions]

        def measure(self, cfg, model, train_model, candidates, crops, **kw):
            out = []
            for c in candidates:
                step = self.steps[c.precision] * (0.8 if c.compiled else 1.0)
                self.timed.append(c)
                self.clock.now += self.took.get(c, at.trial_cost_s(step, c.compiled, 100.0))
                out.append(_trial(c, step, warmup_s=2 * step + 100.0 if c.compiled else None))
            return out, None

        def choose(self, cfg, resume=False, out_dir=None):
            model, batches = _setup(cfg)
            return at.choose_fast_paths(
                cfg, model, model, batches, torch.device("cpu"), out_dir, self.cache, resume
            )

    f = Fake()
    monkeypatch.setattr(at, "time", f.clock)
    monkeypatch.setattr(at, "probe", f.probe)
    monkeypatch.setattr(at, "measure", f.measure)
    monkeypatch.setattr(at, "device_native_bf16", lambda device: True)
    monkeypatch.setattr(at, "compile_cache_warm", lambda key, root=None: False)
    monkeypatch.setattr(at, "mark_compiled", lambda key, root=None: None)
    return f


def _auto(tmp_path: Path, minutes: float | None, **changes: object) -> PretrainConfig:
    return _tiny(tmp_path, run__precision="auto", run__compile="auto", run__budget_minutes=minutes, **changes)


def test_a_run_under_ten_minutes_spends_only_the_probe(tmp_path: Path, fake):
    d = fake.choose(_auto(tmp_path, 9)).decision
    assert fake.probed == [["fp32", "bf16"]] and fake.timed == []
    assert (d.precision, d.compile, d.source) == ("bf16", False, "probe")
    assert d.autotune_s == pytest.approx(0.5) and d.allowance_s == 0.0
    assert d.probe_bf16_speedup == pytest.approx(1.5 / 0.45) and d.bf16_speedup is None
    assert "no trial steps" in d.reason and "compile not tried" in d.reason
    again = fake.choose(_auto(tmp_path, 5)).decision  # the same step later: the recorded probe, for free
    assert fake.probed == [["fp32", "bf16"]] and (again.precision, again.source) == ("bf16", "cache")
    assert again.autotune_s == 0.0


def test_timings_on_a_busy_cpu_choose_for_this_run_only(tmp_path: Path, fake, monkeypatch):
    monkeypatch.setattr(at, "busy_cpu", lambda device: "the CPU is busy (load average 9.0 on 2 cores)")
    d = fake.choose(_auto(tmp_path, 5)).decision
    assert (d.precision, d.source) == ("bf16", "probe")
    assert "not recorded for later runs: the CPU is busy" in d.reason
    assert not fake.cache.exists() or at.read_cache(fake.cache) == {}
    monkeypatch.setattr(at, "busy_cpu", lambda device: None)
    again = fake.choose(_auto(tmp_path, 5)).decision  # nothing recorded: the next run probes again
    assert len(fake.probed) == 2 and again.source == "probe"
    assert fake.choose(_auto(tmp_path, 5)).decision.source == "cache"  # a quiet probe is recorded


def test_twenty_minutes_time_both_precisions_and_leave_compiling_out(tmp_path: Path, fake):
    # a first run of the cpu preset on a 2-core CPU with native bf16: 36 s may be spent choosing; the eager trials
    # (~8 s) fit, a compile (120 s expected, none on record) does not
    d = fake.choose(_auto(tmp_path, 20)).decision
    assert fake.timed == [FP32, BF16]
    assert (d.precision, d.compile, d.source) == ("bf16", False, "measured")
    assert d.autotune_s <= 0.03 * 20 * 60 and d.allowance_s == pytest.approx(36.0)
    assert "bf16-compiled not tried" in d.reason and "prior" in d.reason
    assert d.bf16_speedup == pytest.approx(1.5 / 0.45)


def test_only_the_precision_that_won_in_eager_is_compiled(tmp_path: Path, fake):
    d = fake.choose(_auto(tmp_path, 120)).decision  # 216 s allowed: the 100 s compile and its steps fit
    assert fake.timed == [FP32, BF16, BF16_C]
    assert (d.precision, d.compile, d.source) == ("bf16", True, "measured")
    assert d.autotune_s <= 0.03 * 120 * 60
    (entry,) = at.read_cache(fake.cache).values()
    assert entry["compile_s"] == pytest.approx(100.0)
    assert {at.Trial.from_dict(t).candidate for t in entry["trials"]} == {FP32, BF16, BF16_C}


def test_the_trial_steps_start_only_when_the_whole_set_fits(tmp_path: Path, fake):
    # the precisions' timed steps take turns, so they start together: fp32's expected 6 s and bf16's 1.8 s fit
    # in the 35.5 s left of a 20-minute run's 36 s after the probe; a busy machine's 33 s for fp32 is not
    # known beforehand and the set is measured (its bf16 steps slowed alike in a real run)
    fake.took = {FP32: 33.0, BF16: 1.8}
    d = fake.choose(_auto(tmp_path, 20)).decision
    assert fake.timed == [FP32, BF16]
    assert d.autotune_s <= 36.0 and d.source == "measured"
    # an fp32 step of 8.5 s: the set's expected 35.8 s exceeds the 35.5 s left, and none of it is started
    fake.timed.clear()
    fake.took = {}
    fake.steps = {"fp32": 8.5, "bf16": 0.45}
    d = fake.choose(_auto(tmp_path, 20, run__autotune_cache=False)).decision
    assert fake.timed == []
    assert d.autotune_s <= 36.0 and d.source == "probe" and d.precision == "bf16"  # the probe decides
    assert "trial steps not run" in d.reason and "bf16-compiled not tried" in d.reason


def test_a_compile_the_record_says_loses_is_not_tried_again(tmp_path: Path, fake):
    cfg = _auto(tmp_path, 120)
    record = [_trial(FP32, 1.5), _trial(BF16, 0.45), _trial(BF16_C, 0.5)]  # compiled: slower
    at.write_cache(
        fake.cache, at.step_key(cfg, torch.device("cpu")), {"trials": [t.to_dict() for t in record]}
    )
    d = fake.choose(cfg).decision
    assert fake.timed == [] and fake.probed == []
    assert (d.precision, d.compile, d.source) == ("bf16", False, "cache") and "compiling loses" in d.reason
    assert d.autotune_s == 0.0


def test_a_compile_the_record_says_wins_happens_at_the_first_step(tmp_path: Path, fake):
    cfg = _auto(tmp_path, 120)
    record = [_trial(FP32, 1.5), _trial(BF16, 0.45), _trial(BF16_C, 0.3)]
    entry = {"trials": [t.to_dict() for t in record], "compile_s": 100.0}
    at.write_cache(fake.cache, at.step_key(cfg, torch.device("cpu")), entry)
    d = fake.choose(cfg).decision
    assert fake.timed == [] and (d.precision, d.compile, d.source) == ("bf16", True, "cache")
    assert d.compile_pending_s == pytest.approx(100.0)
    short = fake.choose(_auto(tmp_path, 15)).decision  # 100 s is more than 10% of 15 minutes
    assert short.compile is False and "10%" in short.reason


def test_a_resumed_run_keeps_the_choice_of_its_start(tmp_path: Path, fake):
    run = tmp_path / "run"
    first = fake.choose(_auto(tmp_path, 20), out_dir=run).decision
    recorded = (run / at.RUN_FILE).read_text()
    assert first.precision == "bf16"
    fake.steps = {"fp32": 1.5, "bf16": 3.0}  # bf16 now measures slower: choosing again would take fp32
    fake.timed.clear()
    resumed = fake.choose(_auto(tmp_path, 20, run__autotune_cache=False), resume=True, out_dir=run).decision
    assert fake.timed == [] and len(fake.probed) == 1
    assert (resumed.precision, resumed.source, resumed.autotune_s) == ("bf16", "run", first.autotune_s)
    assert (run / at.RUN_FILE).read_text() == recorded
    fresh = fake.choose(_auto(tmp_path, 20, run__autotune_cache=False), out_dir=run).decision  # not resuming
    assert fresh.precision == "fp32"


# ============ timing part (tiny model; no timing asserted) ============


def _tiny(tmp_path: Path, **changes: object) -> PretrainConfig:
    return load_config(
        PretrainConfig, overrides=support.tiny_overrides("builtin", tmp_path / "run", **changes)
    )


def _setup(cfg: PretrainConfig):
    torch.manual_seed(0)
    model = build_model(cfg.model)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    batches = TensorBatches(images, cfg.optim.batch_size, cfg.crops, cfg.augment, seed=0)
    return model, batches


def test_fixed_settings_measure_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(at, "measure", lambda *a, **k: pytest.fail("measured"))
    cfg = _tiny(tmp_path, run__precision="fp32", run__compile=False)
    model, batches = _setup(cfg)
    fast = at.choose_fast_paths(cfg, model, model, batches, torch.device("cpu"), tmp_path)
    assert (fast.decision.precision, fast.decision.compile, fast.decision.source) == ("fp32", False, "fixed")
    assert fast.forward is model
    assert json.loads((tmp_path / at.RUN_FILE).read_text())["precision"] == "fp32"


def test_auto_without_native_bf16_and_a_short_run_measures_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(at, "measure", lambda *a, **k: pytest.fail("measured"))
    monkeypatch.setattr(at, "device_native_bf16", lambda device: False)
    cfg = _tiny(tmp_path, run__precision="auto", run__compile="auto", run__max_steps=5)
    model, batches = _setup(cfg)
    fast = at.choose_fast_paths(cfg, model, model, batches, torch.device("cpu"), tmp_path)
    d = fast.decision
    assert (d.precision, d.compile, d.source) == ("fp32", False, "fixed")
    assert "too few to compile" in d.reason


def test_auto_with_a_short_budget_does_not_try_to_compile(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(at, "device_native_bf16", lambda device: False)
    monkeypatch.setattr(at, "read_cache", lambda path: {})
    cfg = _tiny(tmp_path, run__compile="auto", run__budget_minutes=5)
    model, batches = _setup(cfg)

    def fake_measure(cfg, model, train_model, candidates, crops, **kw):
        assert not any(c.compiled for c in candidates), "compiled within a 5-minute budget"
        return [_trial(c, 1.0) for c in candidates], None

    monkeypatch.setattr(at, "measure", fake_measure)
    cache = tmp_path / "cache.json"
    d = at.choose_fast_paths(cfg, model, model, batches, torch.device("cpu"), None, cache).decision
    assert d.compile is False and "compile not tried" in d.reason
    assert d.source == "fixed" and not cache.exists()  # nothing to compare: nothing timed


@pytest.mark.slow
def test_measured_choice_restores_weights_and_is_cached(tmp_path: Path, monkeypatch, quiet_cpu):
    monkeypatch.setattr(at, "device_native_bf16", lambda device: True)  # time bf16 even where it is emulated
    monkeypatch.setattr(trials, "TRIAL_STEPS", 1)
    # a 10-hour budget: the tiny step's trials fit in its 3% whatever the machine's load
    cfg = _tiny(tmp_path, run__precision="auto", run__compile=False, run__budget_minutes=600)
    model, batches = _setup(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cache = tmp_path / "cache.json"
    fast = at.choose_fast_paths(cfg, model, model, batches, torch.device("cpu"), tmp_path, cache)
    d = fast.decision
    assert d.source == "measured" and set(d.step_s) == {"fp32-eager", "bf16-eager"}
    assert d.precision in ("fp32", "bf16") and d.bf16_speedup is not None and d.bf16_speedup > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "trial steps left the weights changed"
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    (entry,) = at.read_cache(cache).values()
    # the bf16 trial's losses follow fp32's from the same weights (bf16 rounding only)
    fp32, bf16 = (at.Trial.from_dict(t) for t in entry["trials"])
    assert at.losses_agree(fp32.losses, bf16.losses, rtol=0.05, drop_rtol=1.0)
    assert fp32.losses[-1] < fp32.losses[0]  # the trial steps do learn
    # the probe ran first, on the same first batch and weights, and is on record too
    probes = {p["precision"]: at.Probe(**p) for p in entry["probes"]}
    assert set(probes) == {"fp32", "bf16"} and all(p.image_s > 0 for p in probes.values())
    assert probes["fp32"].images == cfg.optim.batch_size  # the tiny batch is smaller than PROBE_IMAGES

    monkeypatch.setattr(at, "measure", lambda *a, **k: pytest.fail("measured again despite the cache"))
    again = at.choose_fast_paths(cfg, model, model, batches, torch.device("cpu"), None, cache)
    assert again.decision.source == "cache" and again.decision.precision == d.precision


@pytest.mark.parametrize(
    ("minutes", "warm", "tried"), [(5, True, False), (20, True, True), (20, False, False), (60, False, True)]
)
def test_a_measured_compile_is_expected_warm_next_time(tmp_path: Path, monkeypatch, quiet_cpu, minutes, warm, tried):
    # 100 s measured once -> 25 s expected with inductor's caches. With its 5 trial steps of 1 s: within 3% of
    # 20 minutes (36 s), not of 5 (a run under 10 minutes tries nothing); with those caches gone, 100 s again:
    # not within 3% of 20 minutes, within 3% of 60 (108 s)
    monkeypatch.setattr(at, "device_native_bf16", lambda device: False)
    monkeypatch.setattr(at, "compile_cache_warm", lambda key, root=None: warm)
    cfg = _tiny(tmp_path, run__compile="auto", run__budget_minutes=minutes)
    model, batches = _setup(cfg)
    cpu = torch.device("cpu")
    key = at.cache_key(hardware_name(cpu), at.step_signature(cfg, cpu, torch.get_num_threads()))
    cache = tmp_path / "cache.json"
    at.write_cache(cache, key, {"trials": [_trial(FP32, 1.0).to_dict()], "compile_s": 100.0})
    asked: list[at.Candidate] = []

    def fake_measure(cfg, model, train_model, candidates, crops, **kw):
        asked.extend(candidates)
        return [_trial(c, 1.0) for c in candidates], None

    monkeypatch.setattr(at, "measure", fake_measure)
    monkeypatch.setattr(
        at, "probe", lambda *a, **k: pytest.fail("probed although the record has the step time")
    )
    monkeypatch.setattr(at, "mark_compiled", lambda key, root=None: None)  # not in the user's cache folder
    d = at.choose_fast_paths(cfg, model, model, batches, cpu, None, cache).decision
    assert asked == ([FP32_C] if tried else [])  # the eager step is on record: only the compiled one is timed
    assert d.compile is False  # equally fast in this fake: eager kept
    assert d.source == ("measured" if tried else "cache")
    assert d.compile_warm is warm
    assert d.allowance_s == pytest.approx(at.choosing_allowance(minutes * 60))
    if tried:  # the compile measured now (0 s in this fake) replaces the figure for caches in that state
        (entry,) = at.read_cache(cache).values()
        assert (entry["compile_s"], entry["warm_compile_s"]) == ((100.0, 0.0) if warm else (0.0, None))
    else:
        assert "not tried" in d.reason


def test_a_compile_after_one_in_the_same_process_is_not_recorded(tmp_path: Path, monkeypatch, quiet_cpu):
    # a sweep's second run compiles again in the process that compiled the step before: under a second, from
    # torch's in-memory work, which a fresh process lacks; the 100 s on record stays
    monkeypatch.setattr(at, "device_native_bf16", lambda device: False)
    monkeypatch.setattr(at, "compile_cache_warm", lambda key, root=None: False)
    monkeypatch.setattr(at, "mark_compiled", lambda key, root=None: None)
    cfg = _tiny(tmp_path, run__compile="auto", run__budget_minutes=60)  # 108 s allowed: the 100 s fits
    model, batches = _setup(cfg)
    cpu = torch.device("cpu")
    key = at.cache_key(hardware_name(cpu), at.step_signature(cfg, cpu, torch.get_num_threads()))
    monkeypatch.setattr(
        at, "measure", lambda cfg, m, tm, cands, *a, **k: ([_trial(c, 1.0) for c in cands], None)
    )
    for compiled_before, recorded in ((True, 100.0), (False, 0.0)):
        cache = tmp_path / f"cache-{compiled_before}.json"
        at.write_cache(cache, key, {"trials": [_trial(FP32, 1.0).to_dict()], "compile_s": 100.0})
        monkeypatch.setattr(at, "compiled_in_process", lambda key, note=False, seen=compiled_before: seen)
        at.choose_fast_paths(cfg, model, model, batches, cpu, None, cache)
        (entry,) = at.read_cache(cache).values()
        assert entry["compile_s"] == recorded


def test_expected_compile_follows_the_state_of_the_caches():
    assert at.expected_compile_s(None, warm=False) == at.COMPILE_PRIOR_S
    assert at.expected_compile_s({"compile_s": 100.0}, warm=False) == 100.0
    assert at.expected_compile_s({"compile_s": 100.0}, warm=True) == 100.0 * at.WARM_COMPILE_FRACTION
    both = {"compile_s": 100.0, "warm_compile_s": 8.0}
    assert at.expected_compile_s(both, warm=True) == 8.0
    assert at.expected_compile_s(both, warm=False) == 100.0
    assert at.expected_compile_s({"warm_compile_s": 8.0}, warm=False) == at.COMPILE_PRIOR_S


@pytest.mark.parametrize("warm", [False, True])
def test_the_first_steps_compile_is_recorded_for_the_next_choice(tmp_path: Path, warm):
    # a choice from the cache expected a 60 s compile; the run's first step took 186 s, 1 s of it the step
    cfg = _tiny(tmp_path, run__compile="auto", run__budget_minutes=20)
    cpu = torch.device("cpu")
    cache = tmp_path / "cache.json"
    entry = {"trials": [_trial(FP32, 1.0).to_dict()], "compile_s": 60.0, "warm_compile_s": None}
    at.write_cache(cache, at.step_key(cfg, cpu), entry)
    decision = at.Decision(
        "bf16",
        True,
        "",
        "cache",
        compile_warm=warm,
        compile_pending_s=60.0,
        step_s={"fp32-eager": 1.3, "bf16-compiled": 1.0},
    )
    assert at.record_first_compile(cfg, cpu, decision, 186.0, cache) == 185.0
    (after,) = at.read_cache(cache).values()
    assert (after["compile_s"], after["warm_compile_s"]) == ((60.0, 185.0) if warm else (185.0, None))
    assert after["trials"] == entry["trials"]
    # compiled while choosing, or not compiled: nothing was left to the first step; the same step compiled again
    # in this process (a sweep's next run): its time rests on in-memory work a fresh process lacks
    measured = replace(decision, source="measured", compile_pending_s=None)
    for other in (measured, replace(decision, compile=False), decision):
        assert at.record_first_compile(cfg, cpu, other, 1.5, cache) is None
    assert at.read_cache(cache) == {at.step_key(cfg, cpu): after}


def test_a_configured_compile_counts_as_compiled_in_the_process(tmp_path: Path):
    # run.compile=true compiles at the first step with nothing to record; a later run in the same process whose
    # cached choice compiles the same step again reuses that work: its time is not recorded either
    cfg = _tiny(tmp_path, run__compile="auto", run__budget_minutes=20)
    cpu = torch.device("cpu")
    cache = tmp_path / "cache.json"
    entry = {"trials": [_trial(FP32, 1.0).to_dict()], "compile_s": 60.0, "warm_compile_s": 10.0}
    at.write_cache(cache, at.step_key(cfg, cpu), entry)
    cached = at.Decision(
        "bf16", True, "", "cache", compile_warm=True, compile_pending_s=10.0, step_s={"bf16-compiled": 1.0}
    )
    configured = replace(cached, source="fixed", compile_pending_s=None)
    assert at.record_first_compile(cfg, cpu, configured, 90.0, cache) is None
    assert at.record_first_compile(cfg, cpu, cached, 1.5, cache) is None
    assert at.read_cache(cache) == {at.step_key(cfg, cpu): entry}


@pytest.mark.slow  # bf16 convolutions run a slow reference kernel on a CPU without native bf16
def test_bf16_autocast_keeps_channels_last_through_the_casts(tmp_path: Path):
    # every convolution and BatchNorm of the step gets and returns channels_last bf16 under autocast (the
    # stem's input is the only fp32 one): no layout conversion between layers
    from torch import nn

    cfg = _tiny(tmp_path)
    # the small-map kernels compute narrow grouped convolutions in fp32 on purpose (tests/models/test_small_maps.py)
    model = build_model(replace(cfg.model, small_map_kernels=False)).to(memory_format=torch.channels_last)
    seen = []

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        x = inp[0]
        if x.shape[-1] * x.shape[-2] > 1:  # a 1x1 map (squeeze-excitation) has no layout to keep
            seen.append(
                (
                    x.dtype,
                    x.is_contiguous(memory_format=torch.channels_last),
                    out.dtype,
                    out.is_contiguous(memory_format=torch.channels_last),
                )
            )

    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d):
            m.register_forward_hook(hook)
    crops = [torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    with torch.no_grad(), autocast_for(torch.device("cpu"), "bf16"):
        model(crops)
    assert seen and all(cl_in and cl_out and out == torch.bfloat16 for _, cl_in, out, cl_out in seen)
    assert sum(dt == torch.float32 for dt, *_ in seen) == 1  # the stem's input, cast inside the first conv


@pytest.mark.slow
def test_a_resumed_pretraining_keeps_the_precision_its_start_chose(tmp_path: Path, monkeypatch) -> None:
    from openseer.train.pretrain import pretrain

    def probe_favouring(precision: str):  # noqa: ANN202 - a fake at.probe
        def fake(cfg, model, train_model, precisions, crops, **kw):
            b = cfg.optim.batch_size
            steps = {"fp32": 1.0, "bf16": 0.5 if precision == "bf16" else 2.0}
            return [at.Probe(p, steps[p] / b, 4.6, b) for p in precisions]

        return fake

    monkeypatch.setattr(at, "device_native_bf16", lambda device: True)
    monkeypatch.setattr(at, "probe", probe_favouring("bf16"))
    folder = support.make_image_folder(tmp_path / "imgs")
    run = tmp_path / "run"

    def cfg(steps: int) -> PretrainConfig:
        overrides = support.tiny_overrides(
            folder,
            run,
            run__precision="auto",
            run__compile="auto",
            run__autotune_cache=False,  # nothing but the run folder can carry the choice over
            run__max_steps=steps,
            run__checkpoint_every=1,
            run__evaluate=False,
        )
        return load_config(PretrainConfig, overrides=overrides)

    pretrain(cfg(1))
    chosen = json.loads((run / at.RUN_FILE).read_text())
    assert (
        chosen["precision"] == "bf16"
        and json.loads((run / "summary.json").read_text())["precision"] == "bf16"
    )
    monkeypatch.setattr(at, "probe", probe_favouring("fp32"))  # choosing again now would take fp32
    result = pretrain(cfg(3), resume=True)
    assert result.steps == 3  # went on from step 1
    assert json.loads((run / "summary.json").read_text())["precision"] == "bf16"
    assert json.loads((run / at.RUN_FILE).read_text()) == chosen
