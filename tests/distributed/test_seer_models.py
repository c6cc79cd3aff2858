"""The SEER models of the presets, built on the meta device (no memory): trunk and head sizes as published, and
the FSDP plan of the 10B preset (units per block, activation checkpointing per stage)."""

from __future__ import annotations

import pytest
import torch

from openseer.config import load_config
from openseer.models import build_model
from openseer.train.config import PretrainConfig
from openseer.train.parallel import backbone_stages, checkpoint_stages

TRUNK = {"seer-rg256gf": 1.27e9, "seer-10b": 9.3e9}  # Goyal et al. 2021, 2022
FEATURES = {"seer-rg256gf": 10444, "seer-10b": 28280}


def _on_meta(preset: str):  # noqa: ANN202 - SwAVModel
    cfg = load_config(PretrainConfig, [preset])
    with torch.device("meta"):
        return build_model(cfg.model), cfg


@pytest.mark.parametrize("preset", list(TRUNK))
def test_preset_model_sizes(preset: str) -> None:
    model, cfg = _on_meta(preset)
    trunk = sum(p.numel() for p in model.backbone.parameters())
    assert abs(trunk / TRUNK[preset] - 1) < 0.005
    dims = [FEATURES[preset], 8192, 8192, 256]
    linears = [m for m in model.head.projection if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(dims, dims[1:], strict=False))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.head.modules())  # SEER's head: no BN
    assert model.head.prototypes.weight.shape == (16000, 256)
    head = sum(p.numel() for p in model.head.parameters())
    assert head == sum(a * b + b for a, b in zip(dims, dims[1:], strict=False)) + 256 * 16000


def test_10b_preset_runs_sharded_with_checkpointing_in_bf16() -> None:
    model, cfg = _on_meta("seer-10b")
    assert cfg.parallel.strategy == "fsdp" and cfg.parallel.activation_checkpointing
    assert cfg.run.precision == "bf16"
    names = [n for n, _ in backbone_stages(model.backbone)]
    checkpoint_stages(model.backbone)
    assert [type(s).__name__ for _, s in backbone_stages(model.backbone)] == ["CheckpointWrapper"] * 4
    assert names == ["s1", "s2", "s3", "s4"]
    # the wrapper leaves the parameter names of checkpoints alone
    assert all("_checkpoint_wrapped_module" not in k for k in model.state_dict())
