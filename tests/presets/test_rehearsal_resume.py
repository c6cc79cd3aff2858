"""The seer-10b rehearsal, with the options that make it VISSL's (the composite lr shape, the padded single crop
pass, activation checkpointing by block ranges, FSDP's sharded checkpoints), stopped part-way and resumed, ends on
weights and optimiser state bit-identical to those of an uninterrupted run. ``benchmarks/rehearsal.py`` does the
same with 2 processes and a SIGKILL."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from support import cache_env
from support.rehearsal import rehearsal_overrides
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from openseer.config import load_config
from openseer.train.config import PretrainConfig
from openseer.train.data import prepare_data
from openseer.train.pretrain import pretrain
from openseer.train.sharded_checkpoint import latest_sharded

STEPS = 6


@functools.cache
def _train_images() -> int:
    return len(prepare_data(load_config(PretrainConfig, ["seer-10b"], ["data.source=builtin"]).data))


def _config(out: Path, *extra: str) -> PretrainConfig:
    n_train = _train_images()
    overrides = rehearsal_overrides("seer-10b", STEPS, 1, n_train, batch_size=8, resolution=16, hidden=32)
    overrides.update(
        {
            "data.source": "builtin",
            "run.out_dir": str(out),
            "run.checkpoint_every": 1,
            "run.progress": False,
            "run.tensorboard": False,
            "run.threads": 1,
        }
    )
    pairs = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return load_config(PretrainConfig, ["seer-10b"], [*pairs, *extra])


def _final(run: Path, tmp: Path) -> dict:
    sharded = latest_sharded(run / "checkpoints")
    assert sharded is not None
    dcp_to_torch_save(sharded, tmp / f"{run.name}.pt")
    return torch.load(tmp / f"{run.name}.pt", weights_only=False)  # our own file


@pytest.mark.slow
def test_a_resumed_seer_10b_rehearsal_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "straight")
    assert cfg.optim.schedule_shape == "vissl" and cfg.model.crop_pass == "padded"
    assert cfg.parallel.activation_checkpointing and cfg.parallel.stage_checkpoints == [[1], [1], [2, 4], []]
    assert cfg.parallel.strategy == "fsdp"
    with cache_env(tmp_path / "cache"):
        straight = pretrain(cfg)
        stopped = pretrain(_config(tmp_path / "resumed", "run.max_steps=2"))
        assert stopped.steps == 2
        resumed = pretrain(_config(tmp_path / "resumed"), resume=True)
    assert straight.steps == resumed.steps == STEPS
    a, b = _final(tmp_path / "straight", tmp_path), _final(tmp_path / "resumed", tmp_path)
    assert latest_sharded(tmp_path / "resumed" / "checkpoints").name.endswith(f"{STEPS:08d}")
    assert {"model", "optimizer"} <= set(a)
    exact = {"rtol": 0, "atol": 0}  # bit-identical, not close
    torch.testing.assert_close(a["model"], b["model"], **exact)
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], **exact)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert straight.final_loss == resumed.final_loss
