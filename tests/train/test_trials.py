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


def _setup(tmp_path: Path) -> tuple[PretrainConfig, torch.nn.Module, list[torch.Tensor]]:
    """The tiny config, its model (seed 0) and a first batch of its crops."""
    cfg = _tiny(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    crops = next(TensorBatches(images, cfg.optim.batch_size, cfg.crops, cfg.augment, seed=0).epoch(0))
    return cfg, model, crops


@pytest.mark.parametrize(("max_s", "timed"), [(0.0, 1), (math.inf, trials.PROBE_REPEATS)])
def test_the_probe_leaves_the_model_as_it_was_and_keeps_to_its_time(
    tmp_path: Path, monkeypatch, max_s, timed
):
    cfg, model, crops = _setup(tmp_path)
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


def _turns(tmp_path: Path, monkeypatch) -> tuple[list[trials.Trial], list[tuple[str, int]], bool]:
    """fp32 and bf16 trials of the tiny model (2 timed steps each): the trials, the order the steps ran in
    (candidate, step) and whether the model came back as it was."""
    cfg, model, crops = _setup(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    order: list[tuple[str, int]] = []
    real = trials.train_step
    names = {}

    def spy(parts, crops, step, lr, temperature=None):  # noqa: ANN001, ANN202 - records what measure runs
        order.append((names.setdefault(id(parts), f"candidate{len(names)}"), step))
        return real(parts, crops, step, lr, temperature)

    monkeypatch.setattr(trials, "train_step", spy)
    cands = [trials.Candidate("fp32", False), trials.Candidate("bf16", False)]
    found, _ = trials.measure(cfg, model, model, cands, crops, steps=2)
    after = model.state_dict()
    return found, order, all(torch.equal(before[k], after[k]) for k in before)


def test_trial_steps_take_turns_each_from_its_own_weights(tmp_path: Path, monkeypatch):
    # the warm-ups one after another, then the timed steps alternate: a slow spell of a shared machine falls on
    # both precisions alike instead of on whichever ran then
    alternating, order, restored = _turns(tmp_path, monkeypatch)
    a, b = "candidate0", "candidate1"
    assert order == [(a, 0), (b, 0), (a, 1), (b, 1), (a, 2), (b, 2)]
    assert restored, "the trials left the model changed"
    # each candidate's steps continue from its own weights, BatchNorm statistics and optimiser: its losses are
    # those of the same candidate timed on its own, one after the other
    monkeypatch.setattr(trials, "TURNS_MAX_BYTES", 0)
    sequential, order, restored = _turns(tmp_path, monkeypatch)
    assert order == [(a, 0), (a, 1), (a, 2), (b, 0), (b, 1), (b, 2)]  # too large to keep copies: in turn
    assert restored
    for alt, seq in zip(alternating, sequential, strict=True):
        assert alt.candidate == seq.candidate and len(alt.losses) == 3
        assert alt.losses == pytest.approx(seq.losses, rel=1e-5)
    # and the two precisions did not share weights: bf16 rounding makes their later losses differ
    assert alternating[0].losses[1:] != alternating[1].losses[1:]


def test_only_a_state_that_fits_takes_turns(monkeypatch):
    state = {"w": torch.zeros(256, dtype=torch.float32)}  # 1 KiB
    assert trials.takes_turns(state)
    monkeypatch.setattr(trials, "TURNS_MAX_BYTES", 1023)
    assert not trials.takes_turns(state)
