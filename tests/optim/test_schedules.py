"""Warm-up + cosine schedules as swav main_swav.py builds them (np.linspace warm-up, then the cosine formula), and\nthe warm-up length on the scale of the schedule (steps, or cells of a wall-clock budget)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support.reference import reference

import openseer
from openseer.config import load_config
from openseer.optim.schedules import cosine_schedule, warmup_length
from openseer.train.config import PretrainConfig
from openseer.train.sizing import size_run

PRESETS = Path(openseer.__file__).parent / "presets"


def _swav_schedule(base, final, total, warmup, start):
    """Plain re-derivation of swav's per-iteration learning rates."""
    warm = list(np.linspace(start, base, warmup))
    n = total - warmup
    cos = [final + 0.5 * (base - final) * (1 + math.cos(math.pi * t / n)) for t in range(n)]
    return warm + cos


@pytest.mark.parametrize(
    "base,final,total,warmup,start",
    [
        (4.8, 0.0048, 1000, 100, 0.0),
        (0.6, 0.0006, 37, 5, 0.1),
        (0.3, 0.0, 10, 0, 0.0),
        (9.6, 0.0096, 50, 1, 0.15),
    ],
)
def test_matches_swav_formula(base, final, total, warmup, start):
    s = cosine_schedule(base, final, total, warmup_steps=warmup, start=start)
    assert s.dtype == torch.float64
    assert s.shape == (total,)
    np.testing.assert_allclose(
        s.numpy(), _swav_schedule(base, final, total, warmup, start), rtol=1e-12, atol=1e-15
    )


def test_shape_of_the_curve():
    base, final, total, warmup, start = 2.0, 0.002, 500, 50, 0.1
    s = cosine_schedule(base, final, total, warmup_steps=warmup, start=start)
    assert len(s) == total
    assert s[0].item() == start
    assert s[warmup].item() == base  # exactly the peak on the first step after warm-up
    assert s.max().item() == base
    assert s[warmup - 1].item() == pytest.approx(base)  # linspace ends at the peak
    assert final < s[-1].item() < final + 1e-4
    warm, cos = s[: warmup + 1], s[warmup:]
    assert (warm[1:] >= warm[:-1]).all()
    assert (cos[1:] < cos[:-1]).all()  # strictly decreasing after warm-up


def test_no_warmup_starts_at_base():
    s = cosine_schedule(1.0, 0.0, 8)
    assert s[0].item() == 1.0
    # half-way through the cosine the value is the mean of base and final
    assert s[4].item() == pytest.approx(0.5)


def test_warmup_longer_than_run_is_clipped():
    s = cosine_schedule(1.0, 0.0, 5, warmup_steps=20, start=0.0)
    assert len(s) == 5
    np.testing.assert_allclose(s.numpy(), np.linspace(0.0, 1.0, 5))


def test_single_step():
    assert cosine_schedule(0.3, 0.0, 1).tolist() == [0.3]


def test_rejects_empty_schedule():
    with pytest.raises(ValueError, match="total_steps"):
        cosine_schedule(0.3, 0.0, 0)


# ---- warm-up length on the schedule's own scale ----

GRID = 10_000  # cells of the schedule of a run bounded by minutes (openseer.train.pretrain.BUDGET_GRID)


def test_warmup_of_a_step_or_epoch_bounded_run_is_the_configured_count():
    assert warmup_length(1000, 1000, warmup_steps=37) == 37
    assert warmup_length(312 * 400, 312 * 400, warmup_epochs=10, steps_per_epoch=312) == 3120
    assert warmup_length(1000, 1000, warmup_fraction=0.05) == 50
    # the fraction wins over steps, and steps over epochs (as documented on OptimConfig)
    assert warmup_length(1000, 1000, warmup_fraction=0.1, warmup_steps=5, warmup_epochs=3) == 100
    assert warmup_length(1000, 1000, warmup_steps=5, warmup_epochs=3, steps_per_epoch=10) == 5


def test_warmup_of_a_budgeted_run_is_the_same_share_of_its_grid():
    # 8,000 warm-up steps of a 122,070-step run: 6.6% of the run, so 655 cells of 10,000, not 8,000 of them
    assert warmup_length(GRID, 122_070, warmup_steps=8000) == round(8000 / 122_070 * GRID) == 655
    # 10 warm-up epochs of 400: 2.5% of the run whatever the epoch's length
    assert warmup_length(GRID, 400 * 312, warmup_epochs=10, steps_per_epoch=312) == 250
    assert warmup_length(GRID, 7, warmup_fraction=0.043648) == 436


def test_warmup_is_clipped_to_the_schedule():
    assert warmup_length(100, 50, warmup_steps=80) == 100
    assert warmup_length(100, 100, warmup_steps=0) == 0


def test_warmup_length_rejects_empty_runs():
    with pytest.raises(ValueError, match="must be >= 1"):
        warmup_length(0, 10, warmup_steps=1)
    with pytest.raises(ValueError, match="must be >= 1"):
        warmup_length(10, 0, warmup_steps=1)


def _steps_per_epoch(preset: str, batch: int) -> int:
    """At the reference's scale for the large presets (processes, images per epoch); CIFAR-10 on one process
    otherwise."""
    try:
        ref = reference(preset)
    except KeyError:
        return 50_000 // batch
    return ref.images_per_epoch // (batch * ref.world_size)


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_preset_warms_up_for_the_same_share_bounded_or_budgeted(preset):
    # a preset that sizes itself from the data (photos) sized for CIFAR-10's 50,000 images, as the others count
    cfg = size_run(load_config(PretrainConfig, [preset]), 50_000).cfg
    o = cfg.optim
    spe = _steps_per_epoch(preset, o.batch_size)
    planned = o.planned_steps(spe)
    args = (o.warmup_fraction, o.warmup_steps, o.warmup_epochs, spe)
    bounded = warmup_length(planned, planned, *args)
    budgeted = warmup_length(GRID, planned, *args)
    assert abs(budgeted / GRID - bounded / planned) <= 0.5 / GRID + 0.5 / planned
    assert 0 < bounded / planned < 0.1, "a warm-up of a tenth of the run or more: check the preset"
    # the schedule a budgeted run builds rises over those cells and starts its cosine right after
    schedule = cosine_schedule(o.base_lr, o.final_lr, GRID, budgeted, start=o.start_lr)
    assert (schedule[:budgeted].diff() > 0).all() and float(schedule[budgeted]) == o.base_lr
    if o.final_lr < o.base_lr:  # seer-rg128gf's run kept the lr constant after the warm-up
        assert (schedule[budgeted:].diff() < 0).all()
    else:
        assert (schedule[budgeted:] == o.base_lr).all()


# ---- VISSL's shape: fvcore's composite scheduler, [linear, cosine] with interval_scaling [rescaled, fixed] ----


def _fvcore_composite(base, final, start, warmup_share, where):
    """fvcore CompositeParamScheduler.__call__ (fvcore/common/param_scheduler.py) over LinearParamScheduler(start,
    base) and CosineParamScheduler(base, final), lengths [w, 1 - w], interval_scaling ['rescaled', 'fixed'],
    at ClassyVision's ``where = step / total_steps``; written out here from fvcore's source, not from openseer's."""
    lengths = [warmup_share, 1 - warmup_share]
    i, running_total = 0, lengths[0]
    while where + 1e-6 > running_total and i < len(lengths) - 1:  # fvcore's WHERE_EPSILON
        i += 1
        running_total += lengths[i]
    if i == 0:  # 'rescaled': the linear scheduler sees its own share of the run as [0, 1)
        local = (where - (running_total - lengths[0])) / lengths[0]
        return base * local + start * (1 - local)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * where))  # 'fixed': the global where


_VISSL_CASES = {
    # SEER 10B at the reference's scale: 1B images / 7,936 a step, warm-up 4.3648% (regnet10B.yaml)
    "10b-steps": (9.3, 0.0093, 0.15, 126_008, dict(warmup_fraction=0.043648)),
    # the same run bounded by minutes: the schedule spreads over the grid, the warm-up keeps its share
    "10b-budget": (9.3, 0.0093, 0.15, GRID, dict(warmup_fraction=0.043648, planned=126_008)),
    # SEER RG-256GF: 8,000 warm-up steps of 122,070, on steps and on the grid
    "256gf-steps": (9.6, 0.0096, 0.15, 122_070, dict(warmup_steps=8000)),
    "256gf-budget": (9.6, 0.0096, 0.15, GRID, dict(warmup_steps=8000, planned=122_070)),
    # a warm-up given in epochs (10 of 400 epochs of 312 steps), and a short run
    "epochs": (4.8, 0.0048, 0.3, 400 * 312, dict(warmup_epochs=10, steps_per_epoch=312)),
    "short": (1.0, 0.01, 0.1, 40, dict(warmup_steps=7)),
}


@pytest.mark.parametrize("case", list(_VISSL_CASES))
def test_vissl_shape_is_fvcores_composite_over_the_whole_curve(case):
    base, final, start, total, warm = _VISSL_CASES[case]
    warm = dict(warm)
    planned = warm.pop("planned", total)
    warmup = warmup_length(total, planned, **warm)
    s = cosine_schedule(base, final, total, warmup, start=start, shape="vissl")
    assert s.shape == (total,) and s.dtype == torch.float64 and warmup >= 1
    expected = [_fvcore_composite(base, final, start, warmup / total, t / total) for t in range(total)]
    assert len(expected) >= 20
    np.testing.assert_allclose(s.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_vissl_shape_sits_below_swavs_after_the_warm_up():
    base, final, start, total, warmup = 9.3, 0.0093, 0.15, 1000, 44
    vissl = cosine_schedule(base, final, total, warmup, start=start, shape="vissl")
    swav = cosine_schedule(base, final, total, warmup, start=start, shape="swav")
    assert float(vissl[0]) == float(swav[0]) == start
    assert float(vissl[warmup - 1]) < base  # fvcore's linear never reaches its end value
    assert float(swav[warmup]) == base and float(vissl[warmup]) < base  # the cosine is already under way
    assert (vissl[warmup:] < swav[warmup:]).all()
    # at the run's half the composite is exactly half-way down (cos(pi/2) = 0); swav's is still above it
    assert float(vissl[total // 2]) == pytest.approx((base + final) / 2)
    assert float(swav[total // 2]) > (base + final) / 2


def test_without_warm_up_both_shapes_are_one_curve():
    a = cosine_schedule(2.0, 0.1, 77, shape="vissl")
    b = cosine_schedule(2.0, 0.1, 77, shape="swav")
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="schedule shape"):
        cosine_schedule(1.0, 0.0, 10, shape="linear")


@pytest.mark.parametrize(
    ("preset", "shape"),
    [("swav-rn50", "swav"), ("seer-rg32gf", "vissl"), ("seer-rg64gf", "vissl"), ("seer-rg128gf", "vissl")]
    + [("seer-rg256gf", "vissl"), ("seer-10b", "vissl")],
)
def test_each_large_preset_takes_its_references_shape(preset, shape):
    assert load_config(PretrainConfig, [preset]).optim.schedule_shape == shape
