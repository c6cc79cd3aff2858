"""cluster_health: prototype usage of the codes' argmax (the collapse signal the monitor watches)."""

import math

import pytest
import torch
import torch.nn.functional as F

from openseer.swav.health import cluster_health


def test_all_samples_on_one_prototype():
    codes = F.one_hot(torch.full((32,), 5), 10).float()
    h = cluster_health(codes)
    assert h["protos_used"] == 1
    assert h["usage_entropy"] == pytest.approx(0.0, abs=1e-7)
    assert h["top_proto_share"] == 1.0


@pytest.mark.parametrize("b,k", [(10, 10), (40, 10), (4, 10)])
def test_spread_evenly(b, k):
    codes = F.one_hot(torch.arange(b) % k, k).float()
    h = cluster_health(codes)
    assert h["protos_used"] == min(b, k)
    assert h["usage_entropy"] == pytest.approx(1.0, rel=1e-6)
    assert h["top_proto_share"] == pytest.approx(1 / min(b, k))


def test_partial_usage_by_hand():
    # 8 samples: prototype 0 x4, prototype 1 x2, prototype 2 x2 out of 16 -> H = -(.5 ln .5 + 2 x .25 ln .25)
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    soft = F.one_hot(targets, 16).float() * 0.6 + 0.4 / 16  # soft codes: argmax is what counts
    h = cluster_health(soft)
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert h["protos_used"] == 3
    assert h["usage_entropy"] == pytest.approx(entropy / math.log(8), rel=1e-6)
    assert h["top_proto_share"] == 0.5


def test_single_sample_or_prototype_is_zero_entropy():
    assert cluster_health(torch.ones(1, 5))["usage_entropy"] == 0.0
    assert cluster_health(torch.ones(6, 1))["usage_entropy"] == 0.0
