"""The backbone handed to evaluation has plain BatchNorm: a SyncBatchNorm in training mode (BatchNorm
re-estimation before kNN) on rank 0 alone would wait for collectives no other rank joins. Torch's SyncBatchNorm
refuses CPU inputs in training mode, which stands in here for the collective it would run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from openseer.eval.features import recalibrate_batchnorm
from openseer.models import SwAVHead, SwAVModel
from openseer.testing import randomize_batchnorm
from openseer.train.eval_backbone import BatchNorm, evaluation_backbone, plain_batchnorm


def _synced_model() -> SwAVModel:
    """A small conv trunk with BatchNorm (a RegNet's first-call kernel set-up alone takes seconds)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        *(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)),
        *(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    )
    model = SwAVModel(backbone, SwAVHead(8, [16], 8, 5, use_bn=True))
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what parallel.sync_bn does (no process group)
    return randomize_batchnorm(model, seed=3)


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def test_evaluation_copy_has_plain_batchnorm_with_the_same_weights_and_statistics() -> None:
    model = _synced_model()
    synced = _count(model.backbone, nn.SyncBatchNorm)
    assert synced > 0
    backbone = evaluation_backbone(model, lambda: pytest.fail("an unsharded model is not rebuilt"))
    assert _count(backbone, nn.SyncBatchNorm) == 0 and _count(backbone, BatchNorm) == synced
    assert _count(model.backbone, nn.SyncBatchNorm) == synced  # the training model keeps its own
    want, got = model.backbone.state_dict(), backbone.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
        assert want[name].data_ptr() != got[name].data_ptr(), f"{name} is shared, not copied"
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():  # eval mode: the same function
        torch.testing.assert_close(backbone.eval()(x), model.backbone.eval()(x), atol=1e-5, rtol=1e-4)


def test_batchnorm_re_estimation_runs_on_the_copy_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _synced_model()
    backbone = plain_batchnorm(model.backbone)
    x = torch.randn(4, 3, 16, 16)
    # as in a process group: the original's training-mode forward would synchronise (on CPU torch refuses)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
        recalibrate_batchnorm(model.backbone, [x])
    before = [m.running_mean.clone() for m in backbone.modules() if isinstance(m, BatchNorm)]
    recalibrate_batchnorm(backbone, [x])
    after = [m.running_mean for m in backbone.modules() if isinstance(m, BatchNorm)]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_plain_batchnorm_keeps_modes_settings_and_frozen_parameters() -> None:
    sync = nn.SyncBatchNorm(6, eps=1e-3, momentum=0.3).eval()
    sync.weight.requires_grad_(False)
    plain = plain_batchnorm(nn.Sequential(nn.Linear(3, 6), sync))[1]
    assert isinstance(plain, BatchNorm) and not plain.training
    assert (plain.eps, plain.momentum, plain.weight.requires_grad, plain.bias.requires_grad) == (
        1e-3,
        0.3,
        False,
        True,
    )
    plain.train()(torch.randn(5, 6))  # 2-D inputs, as a BatchNorm1d in the head takes them
    with pytest.raises(ValueError, match="at least 2D"):
        plain(torch.randn(6))


def test_a_module_without_syncbatchnorm_is_handed_out_as_is() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert plain_batchnorm(module) is module
