"""Warm-up + cosine schedules as swav main_swav.py builds them (np.linspace warm-up, then the cosine formula)."""

import math

import numpy as np
import pytest
import torch

from openseer.optim.schedules import cosine_schedule


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
