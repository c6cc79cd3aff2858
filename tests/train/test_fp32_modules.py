"""run.fp32_modules: BatchNorm, the projection head and the convolutions over small maps compute in fp32 under
bf16 autocast when asked to, and nothing else changes (layers, weights, results outside autocast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import support
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from openseer.config import ConfigError, load_config
from openseer.models import SwAVModel, build_model
from openseer.models.small_maps import MAX_PIXELS
from openseer.train.config import PretrainConfig
from openseer.train.step import autocast_for, keep_fp32_, step_parts, train_step

CPU = torch.device("cpu")
FP32, BF16 = torch.float32, torch.bfloat16


def _cfg(tmp_path: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, overrides=[*support.tiny_overrides("builtin", tmp_path), *extra])


def _model(cfg: PretrainConfig) -> SwAVModel:
    torch.manual_seed(0)
    return build_model(cfg.model).to(memory_format=torch.channels_last)


def _crops(cfg: PretrainConfig, batch: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(batch, 3, c.size, c.size, generator=gen).contiguous(memory_format=torch.channels_last)
        for c in cfg.crops
        for _ in range(c.count)
    ]


def _output_dtypes(model: SwAVModel, crops: list[torch.Tensor]) -> dict[str, set[torch.dtype]]:
    """The dtypes each kind of layer returns in one forward pass under bf16 autocast (a BatchNorm: given a bf16
    input)."""
    seen: dict[str, set[torch.dtype]] = {}

    def record(kind: str):  # noqa: ANN202 - a forward hook
        def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            x = inputs[0]
            name = kind
            if kind == "conv":
                name = "small-map conv" if x.shape[-1] * x.shape[-2] <= MAX_PIXELS else "large-map conv"
            elif kind == "backbone batchnorm" and x.dtype != BF16:  # behind an fp32 layer, it follows
                return
            seen.setdefault(name, set()).add(out.dtype)

        return hook

    for m in model.backbone.modules():
        if isinstance(m, _BatchNorm):
            m.register_forward_hook(record("backbone batchnorm"))
        elif isinstance(m, nn.Conv2d):
            m.register_forward_hook(record("conv"))
    for m in model.head.projection.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(record("head linear"))
    with torch.no_grad(), autocast_for(CPU, "bf16"):
        model(crops)
    return seen


@pytest.mark.parametrize(
    "kinds", [[], ["batchnorm"], ["head"], ["small_maps"], ["batchnorm", "head", "small_maps"]]
)
def test_the_kept_modules_compute_in_fp32_under_bf16_autocast(tmp_path: Path, kinds: list[str]) -> None:
    cfg = _cfg(tmp_path)
    model = _model(cfg)
    assert keep_fp32_(model, kinds) > 0 or not kinds
    seen = _output_dtypes(model, _crops(cfg, batch=2))
    assert seen["backbone batchnorm"] == ({FP32} if "batchnorm" in kinds else {BF16})
    assert seen["head linear"] == ({FP32} if "head" in kinds else {BF16})
    # without the option the small-map kernels' matrix products run in bf16 (their narrow grouped convolutions
    # are fp32 already, openseer.models.small_maps); with it every convolution on a small map is fp32
    assert seen["small-map conv"] == ({FP32} if "small_maps" in kinds else {FP32, BF16})
    assert seen["large-map conv"] == {BF16}  # the rest of the network keeps bf16


def test_keeping_modules_in_fp32_changes_nothing_outside_autocast(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    plain, kept = _model(cfg).eval(), _model(cfg).eval()
    changed = keep_fp32_(kept, ["batchnorm", "head", "small_maps"])
    assert changed > 0 and keep_fp32_(kept, ["batchnorm", "head", "small_maps"]) == 0  # once only
    assert plain.state_dict().keys() == kept.state_dict().keys()
    crops = _crops(cfg)
    with torch.no_grad():
        for a, b in zip(plain(crops), kept(crops), strict=True):
            assert torch.equal(a, b)  # the very same computation in fp32
    with pytest.raises(ValueError, match="unknown fp32 module kinds"):
        keep_fp32_(kept, ["prototypes"])


def test_the_config_names_them_and_the_bf16_step_runs_with_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.fp32_modules\[0\]"):
        _cfg(tmp_path, "run.fp32_modules=[batchnorms]")
    cfg = _cfg(tmp_path, "run.fp32_modules=[batchnorm, head]")
    model = _model(cfg)
    step_parts(cfg, model, model, "fp32", CPU)  # fp32: nothing to keep
    assert not any(type(m).__name__.startswith("Fp32") for m in model.modules())
    parts = step_parts(cfg, model, model, "bf16", CPU)
    kept = {name for name, m in model.named_modules() if type(m).__name__.startswith("Fp32")}
    assert "head.projection" in kept and any(name.startswith("backbone.") for name in kept)
    out = train_step(parts, _crops(cfg, batch=8), 0, 0.1)
    assert out.applied and torch.isfinite(out.loss)
    assert all(p.grad is None or p.grad.dtype == FP32 for p in model.parameters())
