"""The end-of-run evaluation cannot hang on SyncBatchNorm: it scores a network rebuilt from the checkpoint, whose
BatchNorm layers are plain ones, so re-estimating their statistics on rank 0 alone runs no collective. (Torch's
SyncBatchNorm refuses CPU inputs in training mode, which stands in here for the collective it would run.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import randomize_batchnorm
from torch import nn

from openseer.config import to_dict
from openseer.eval.features import recalibrate_batchnorm
from openseer.fileio.checkpoint import save_checkpoint
from openseer.models import build_model
from openseer.train.config import PretrainConfig
from openseer.weights import load_weights


def test_a_syncbatchnorm_run_is_scored_with_plain_batchnorm(tmp_path: Path, monkeypatch) -> None:
    cfg = PretrainConfig()
    cfg.model.arch, cfg.model.stem, cfg.model.head_hidden, cfg.model.prototypes = "regnety_200mf", "small", [16], 5
    torch.manual_seed(0)
    model = randomize_batchnorm(nn.SyncBatchNorm.convert_sync_batchnorm(build_model(cfg.model)), seed=3)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())  # what parallel.sync_bn trains
    save_checkpoint({"config": to_dict(cfg), "model": model.state_dict()}, tmp_path / "checkpoints", step=1)
    backbone = load_weights(tmp_path).build_backbone()
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in backbone.modules())
    for name, value in model.backbone.state_dict().items():  # the same statistics and weights
        assert torch.equal(backbone.state_dict()[name], value), name
    x = torch.randn(4, 3, 16, 16)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # as inside a process group
    with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
        recalibrate_batchnorm(model.backbone, [x])  # what scoring the training module itself would do
    recalibrate_batchnorm(backbone, [x])  # the rebuilt network: plain BatchNorm, no collective
