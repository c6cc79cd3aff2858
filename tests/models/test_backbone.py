"""Trunk initialisation: the last BatchNorm of each residual block (timm zero-initialises its scale, swav's
ResNet-50 and VISSL's RegNet do not), and re-initialising a trunk in place as the constructors do (to
materialise a model built on the meta device)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from openseer.config import load_config
from openseer.models.backbone import build_backbone, init_backbone_
from openseer.models.build import build_model, init_model_
from openseer.train.config import PretrainConfig


def _last_norms(backbone: nn.Module) -> list[torch.Tensor]:
    """The scale of the last BatchNorm of every residual block (timm RegNet: conv3.bn; ResNet: bn3, or bn2)."""
    found = []
    for m in backbone.modules():
        if hasattr(m, "zero_init_last"):
            last = m.conv3.bn if hasattr(m, "conv3") and hasattr(m.conv3, "bn") else getattr(m, "bn3", None)
            found.append((last if last is not None else m.bn2).weight.detach())
    return found


@pytest.mark.parametrize("arch", ["regnety_200mf", "resnet18"])
@pytest.mark.parametrize("zero", [True, False])
def test_zero_init_last_bn_is_an_option(arch: str, zero: bool) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(arch, stem="small", zero_init_last_bn=zero)
    norms = _last_norms(backbone)
    assert len(norms) > 3
    for w in norms:
        assert torch.equal(w, torch.zeros_like(w) if zero else torch.ones_like(w))


def test_presets_choose_the_reference_initialisation() -> None:
    # swav's ResNet-50 and VISSL's RegNet start every BatchNorm scale at 1; the cpu preset kept timm's 0
    for preset in ("swav-rn50", "seer-rg256gf", "seer-10b"):
        assert not load_config(PretrainConfig, [preset]).model.zero_init_last_bn, preset
    assert load_config(PretrainConfig, ["cpu"]).model.zero_init_last_bn


def _stats(module: nn.Module) -> dict[str, tuple[float, float]]:
    return {
        n: (float(t.float().mean()), float(t.float().std()))
        for n, t in module.state_dict().items()
        if t.numel() > 1
    }


@pytest.mark.parametrize("arch", ["regnety_200mf", "resnet18"])
def test_init_backbone_draws_from_the_constructors_distributions(arch: str) -> None:
    torch.manual_seed(1)
    built = build_backbone(arch, stem="small", zero_init_last_bn=False)
    torch.manual_seed(2)
    redrawn = build_backbone(arch, stem="small", zero_init_last_bn=True)
    with torch.no_grad():  # anything left over would show
        for t in redrawn.state_dict().values():
            if t.is_floating_point():
                t.fill_(7.0)
    init_backbone_(redrawn, zero_init_last_bn=False)
    a, b = _stats(built), _stats(redrawn)
    assert a.keys() == b.keys()
    for name, t in built.state_dict().items():
        if t.numel() < 512 or not t.is_floating_point():
            continue
        (_, std_a), (mean_b, std_b) = a[name], b[name]
        if std_a == 0:  # constants (BatchNorm, biases) are the same constants
            assert torch.equal(t, redrawn.state_dict()[name]), name
        else:
            assert abs(std_b / std_a - 1) < 0.15, (name, std_a, std_b)
            assert abs(mean_b) < 4 * std_a / math.sqrt(t.numel()), name
    for m in redrawn.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (
                torch.equal(m.running_var, torch.ones_like(m.running_var)) and int(m.num_batches_tracked) == 0
            )


def test_small_resnet_stem_is_initialised_like_timms_convolutions() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet50", stem="small")
    conv = backbone.conv1
    expected = math.sqrt(2.0 / (3 * 3 * conv.out_channels))  # He normal over the fan-out
    assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.15


@pytest.mark.slow
def test_model_built_on_meta_is_materialised_by_init_swav_model() -> None:
    cfg = load_config(PretrainConfig, ["cpu"], ["model.zero_init_last_bn=false"])
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    init_model_(model, zero_init_last_bn=False)
    for name, t in model.state_dict().items():
        assert torch.isfinite(t.float()).all(), name
    torch.testing.assert_close(model.head.prototypes.weight.norm(dim=1), torch.ones(cfg.model.prototypes))
    assert all(torch.equal(w, torch.ones_like(w)) for w in _last_norms(model.backbone))
    model.eval()
    z, scores = model([torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)])
    assert torch.isfinite(scores).all() and scores.shape == (4, cfg.model.prototypes)
