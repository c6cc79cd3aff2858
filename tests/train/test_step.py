"""The step's parts that the loop and the start-up trials share (openseer.train.step)."""

from __future__ import annotations

from pathlib import Path

import pytest
import support
import torch

from openseer.config import load_config
from openseer.models import build_model
from openseer.optim import LARS
from openseer.train import autotune as at
from openseer.train.config import PretrainConfig
from openseer.train.step import autocast_for, build_optimizer


def _cfg(tmp_path: Path, **changes: object) -> PretrainConfig:
    return load_config(
        PretrainConfig, overrides=support.tiny_overrides("builtin", tmp_path / "run", **changes)
    )


@pytest.mark.parametrize("exclude", [False, True])
def test_trial_steps_use_the_runs_parameter_groups(tmp_path: Path, exclude: bool):
    # the timed trial steps must move the weights as the run will: same kind, groups, decay and adaptation
    cfg = _cfg(tmp_path, optim__name="lars", optim__exclude_bias_and_norm=exclude, optim__weight_decay=1e-4)
    model = build_model(cfg.model)
    run, trial = build_optimizer(cfg, model), at.trial_optimizer(cfg, model)
    assert isinstance(run, LARS) and isinstance(trial, LARS)
    shape = [(len(g["params"]), g["weight_decay"], g["lars_exclude"]) for g in run.param_groups]
    assert shape == [(len(g["params"]), g["weight_decay"], g["lars_exclude"]) for g in trial.param_groups]
    assert len(shape) == (2 if exclude else 1)
    if exclude:  # biases and norm scales: no decay, no adaptation
        assert all(p.ndim <= 1 for p in run.param_groups[1]["params"]) and shape[1][1:] == (0.0, True)
    assert all(g["lr"] == 0.0 for g in run.param_groups)  # the schedule sets it
    assert all(g["lr"] == cfg.optim.base_lr * cfg.optim.batch_size / 256 for g in trial.param_groups)


def test_sgd_is_built_when_named(tmp_path: Path):
    cfg = _cfg(tmp_path, optim__name="sgd")
    opt = build_optimizer(cfg, build_model(cfg.model))
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == cfg.optim.momentum


def test_autocast_for_each_precision():
    cpu = torch.device("cpu")
    with autocast_for(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_for(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
