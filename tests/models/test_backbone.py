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


@pytest.mark.parametrize("arch", ["regnety_200mf", "resnet18"])
def test_init_backbone_draws_from_the_constructors_distributions(arch: str) -> None:
    """Every floating tensor is drawn again: a constant of the constructor (BatchNorm scale, shift and running
    statistics, biases), whatever its size, comes back as exactly that constant; a random one is redrawn from
    the same distribution (its spread and mean checked where it has the samples to tell, >= 512)."""
    torch.manual_seed(1)
    built = build_backbone(arch, stem="small", zero_init_last_bn=False)
    torch.manual_seed(2)
    redrawn = build_backbone(arch, stem="small", zero_init_last_bn=True)
    with torch.no_grad():  # anything left over would show
        for t in redrawn.state_dict().values():
            if t.is_floating_point():
                t.fill_(7.0)
    init_backbone_(redrawn, zero_init_last_bn=False)
    drawn = redrawn.state_dict()
    assert built.state_dict().keys() == drawn.keys()
    constants = set()
    for name, t in built.state_dict().items():
        if not t.is_floating_point():
            continue
        if bool((t == t.flatten()[0]).all()):  # a constant of the constructor comes back as that constant
            assert torch.equal(t, drawn[name]), name
            constants.add(name)
        elif t.numel() >= 512:
            std_a, mean_b, std_b = float(t.std()), float(drawn[name].mean()), float(drawn[name].std())
            assert abs(std_b / std_a - 1) < 0.15, (name, std_a, std_b)
            assert abs(mean_b) < 4 * std_a / math.sqrt(t.numel()), name
        else:  # too few samples to compare distributions: drawn again, not left over
            assert not bool((drawn[name] == 7.0).any()) and float(drawn[name].std()) > 0, name
    norms = {
        f"{path}.{tensor}"
        for path, m in built.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for tensor in ("weight", "bias", "running_mean", "running_var")
    }
    assert norms and norms <= constants  # every BatchNorm tensor was compared, the smallest ones included
    assert any(built.state_dict()[n].numel() < 512 for n in norms)
    for m in redrawn.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) == 0


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
