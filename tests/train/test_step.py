"""The one training step (openseer.train.step.train_step) and its parts, run by the loop and by the start-up
timing alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import support
import torch

from openseer.config import load_config
from openseer.models import build_model
from openseer.optim import LARS
from openseer.swav import EmbeddingQueue
from openseer.train import pretrain as loop
from openseer.train import step as training
from openseer.train import trials
from openseer.train.config import PretrainConfig
from openseer.train.step import StepOutput, autocast_for, build_optimizer, step_parts, train_step


def _cfg(tmp_path: Path, **changes: object) -> PretrainConfig:
    return load_config(
        PretrainConfig, overrides=support.tiny_overrides("builtin", tmp_path / "run", **changes)
    )


def _crops(cfg: PretrainConfig, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(cfg.optim.batch_size, 3, c.size, c.size, generator=gen)
        for c in cfg.crops
        for _ in range(c.count)
    ]


def test_the_loop_and_the_startup_timing_run_one_step_function():
    assert loop.train_step is training.train_step
    assert trials.train_step is training.train_step


@pytest.mark.parametrize("exclude", [False, True])
def test_trial_steps_are_the_runs_first_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exclude: bool):
    """trials.measure runs the loop's step with the run's parts: optimiser kind, groups, decay and adaptation,
    prototype freezing, steps counted from the run's first, the peak learning rate; without the run's queue."""
    cfg = _cfg(
        tmp_path,
        optim__name="lars",
        optim__exclude_bias_and_norm=exclude,
        optim__weight_decay=1e-4,
        swav__freeze_prototypes_iters=3,
        swav__queue_length=16,
    )
    model = build_model(cfg.model)
    calls: list[tuple] = []

    def spy(parts, crops, step, lr, temperature=None):  # noqa: ANN001, ANN202 - records what measure passes
        calls.append((parts, step, lr))
        return StepOutput(torch.tensor(4.0), [], torch.zeros(1), applied=True)

    monkeypatch.setattr(trials, "train_step", spy)
    trials.measure(cfg, model, model, [trials.Candidate("fp32", False)], _crops(cfg), steps=2)

    run = build_optimizer(cfg, model)
    assert isinstance(run, LARS)
    shape = [(len(g["params"]), g["weight_decay"], g["lars_exclude"]) for g in run.param_groups]
    assert len(shape) == (2 if exclude else 1)
    if exclude:  # biases and norm scales: no decay, no adaptation
        assert all(p.ndim <= 1 for p in run.param_groups[1]["params"]) and shape[1][1:] == (0.0, True)
    assert [step for _, step, _ in calls] == [0, 1, 2]  # one warm-up step, then the timed ones
    for parts, _, lr in calls:
        assert type(parts.optimizer) is LARS
        assert [
            (len(g["params"]), g["weight_decay"], g["lars_exclude"]) for g in parts.optimizer.param_groups
        ] == shape
        assert parts.freeze_prototypes_iters == 3 and parts.model is model
        assert parts.loss.queue is None  # the run's queue is not filled by trial steps
        assert lr == cfg.optim.base_lr * cfg.optim.batch_size / 256
    assert all(g["lr"] == 0.0 for g in run.param_groups)  # the run's: the schedule sets it at every step


def test_the_peak_learning_rate_is_scaled_once_for_the_schedule_and_the_trials(tmp_path: Path):
    cfg = _cfg(tmp_path, optim__batch_size=64, optim__base_lr=0.6, optim__start_lr=0.1, optim__final_lr=0.01)
    assert training.learning_rates(cfg.optim, 2) == pytest.approx((0.05, 0.3, 0.005))  # x 128 / 256
    schedule = loop.make_schedule(cfg, steps_per_epoch=10, length=10, budget_s=float("inf"))
    assert float(schedule.lr.max()) == pytest.approx(0.6 * 64 / 256)
    assert float(schedule.lr[0]) == pytest.approx(0.1 * 64 / 256)


@pytest.mark.slow
def test_prototypes_are_frozen_for_the_first_steps_only(tmp_path: Path):
    cfg = _cfg(tmp_path, swav__freeze_prototypes_iters=1)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    parts = step_parts(cfg, model, model, "fp32", torch.device("cpu"))
    crops = _crops(cfg)

    def prototypes() -> torch.Tensor:
        return model.head.prototypes.weight.detach().clone()

    before = prototypes()
    trunk = next(model.backbone.parameters()).detach().clone()
    assert train_step(parts, crops, 0, lr=0.5).applied
    torch.testing.assert_close(prototypes(), before)  # renormalised only: frozen at step 0
    assert not torch.equal(next(model.backbone.parameters()), trunk)  # the rest trained
    assert train_step(parts, crops, 1, lr=0.5).applied
    assert not torch.allclose(prototypes(), before)


@pytest.mark.slow
def test_a_non_finite_loss_skips_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    queue = EmbeddingQueue(2, 16, cfg.model.out_dim)
    parts = step_parts(cfg, model, model, "fp32", torch.device("cpu"), queue, queue_start=0)
    real_loss = parts.loss

    def nan_loss(z, scores, temperature=None, with_queue=True):  # noqa: ANN001, ANN202
        loss, codes = real_loss(z, scores, temperature, with_queue)
        return loss * float("nan"), codes

    parts.loss = nan_loss
    before = {
        k: v.clone() for k, v in model.state_dict().items() if "running_" not in k and "num_batches" not in k
    }
    out = train_step(parts, _crops(cfg), 5, lr=0.5)
    assert not out.applied and not torch.isfinite(out.loss)
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "head.prototypes.weight")
    assert queue.filled == 8  # the codes were computed with the queue before the loss was found non-finite


def test_autocast_for_each_precision():
    cpu = torch.device("cpu")
    with autocast_for(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_for(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_loss_scaling_follows_the_precision(tmp_path: Path):
    cfg = _cfg(tmp_path)
    model = build_model(cfg.model)
    cpu = torch.device("cpu")
    assert step_parts(cfg, model, model, "fp16", cpu).scaler.is_enabled()
    assert not step_parts(cfg, model, model, "bf16", cpu).scaler.is_enabled()


def test_sgd_is_built_when_named(tmp_path: Path):
    cfg = _cfg(tmp_path, optim__name="sgd")
    opt = build_optimizer(cfg, build_model(cfg.model))
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == cfg.optim.momentum
