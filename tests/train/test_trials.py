"""Timing the step's candidate paths: the probe and the trial steps leave the model as they found it and keep to
what they were given (no assertion on how fast anything is)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import support
import torch

from openseer.config import load_config
from openseer.models import build_model
from openseer.train import trials
from openseer.train.config import PretrainConfig
from openseer.train.data import TensorBatches

FP32_C = trials.Candidate("fp32", True)


def _tiny(tmp_path: Path) -> PretrainConfig:
    return load_config(PretrainConfig, overrides=support.tiny_overrides("builtin", tmp_path / "run"))


def test_trial_compile_seconds_and_round_trip():
    t = trials.Trial(FP32_C, 0.5, 31.0, 2, [4.6, 4.4, 4.2, 4.0, 3.8])
    assert t.compile_s == pytest.approx(30.0)
    assert trials.Trial.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_a_trials_expected_cost_counts_its_warmup_timed_steps_and_compile():
    assert trials.trial_cost_s(2.0) == pytest.approx(2.0 * (1 + trials.TRIAL_STEPS))
    assert trials.trial_cost_s(2.0, compiled=True, compile_s=100.0) == pytest.approx(
        2.0 * (2 + trials.TRIAL_STEPS) + 100
    )


@pytest.mark.parametrize(("max_s", "timed"), [(0.0, 1), (math.inf, trials.PROBE_REPEATS)])
def test_the_probe_leaves_the_model_as_it_was_and_keeps_to_its_time(
    tmp_path: Path, monkeypatch, max_s, timed
):
    cfg = _tiny(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    crops = next(TensorBatches(images, cfg.optim.batch_size, cfg.crops, cfg.augment, seed=0).epoch(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    passes = []
    real = trials.forward_backward
    monkeypatch.setattr(
        trials, "forward_backward", lambda parts, *a, **k: passes.append(parts) or real(parts, *a, **k)
    )
    (probe,) = trials.probe(cfg, model, model, ["fp32"], crops, images=4, max_s=max_s)
    assert len(passes) == 1 + timed  # the untimed first pass, then the timed ones
    assert probe.images == 4 and probe.image_s > 0 and math.isfinite(probe.loss)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the probe left the model changed"
    assert all(p.grad is None for p in model.parameters()) and torch.equal(rng, torch.get_rng_state())
