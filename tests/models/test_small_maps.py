"""The small-map kernels compute the convolution they replace: same outputs and gradients as ``F.conv2d`` in
fp32 (to float tolerance: a matrix product and a convolution kernel sum in different orders), the same state
dict, and which layers they take over."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openseer.models.backbone import build_backbone
from openseer.models.small_maps import (
    MAX_PIXELS,
    NarrowGroupedConv2d,
    PointwiseConv2d,
    use_small_map_kernels_,
)


def _pair(conv: nn.Conv2d, cls: type[nn.Conv2d]) -> tuple[nn.Conv2d, nn.Conv2d]:
    fast = copy.deepcopy(conv)
    fast.__class__ = cls
    return conv, fast


def _grads(conv: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    y = conv(x)
    y.backward(g)
    grads = [y.detach(), x.grad, conv.weight.grad]
    if conv.bias is not None:
        grads.append(conv.bias.grad)
    return tuple(grads)


@pytest.mark.parametrize("side", [1, 2, 7, 8, 16])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_matches_the_convolution(side: int, stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    ref, fast = _pair(nn.Conv2d(24, 40, 1, stride, bias=bias), PointwiseConv2d)
    x = torch.randn(6, 24, side, side).to(memory_format=torch.channels_last)
    out = (side - 1) // stride + 1
    g = torch.randn(6, 40, out, out).to(memory_format=torch.channels_last)
    for a, b in zip(_grads(ref, x, g), _grads(fast, x, g), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    y = fast(x)
    assert y.shape == (6, 40, out, out)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the next layer gets the layout it expects


def test_pointwise_leaves_contiguous_and_large_maps_to_the_convolution() -> None:
    # the product path needs channels-last memory and a small map; anything else is nn.Conv2d's forward, whose
    # output keeps the input's own layout
    _, fast = _pair(nn.Conv2d(8, 8, 1, bias=False), PointwiseConv2d)
    side = int(MAX_PIXELS**0.5) * 2
    big = torch.randn(2, 8, side, side).to(memory_format=torch.channels_last)
    assert torch.equal(fast(big), F.conv2d(big, fast.weight))
    flat = torch.randn(2, 8, 4, 4)
    assert torch.equal(fast(flat), F.conv2d(flat, fast.weight))


@pytest.mark.parametrize("stride", [1, 2])
def test_narrow_grouped_conv_computes_in_fp32_on_small_maps_under_bf16_autocast(stride: int) -> None:
    torch.manual_seed(0)
    ref, fast = _pair(nn.Conv2d(32, 32, 3, stride, 1, groups=4, bias=False), NarrowGroupedConv2d)
    x = torch.randn(4, 32, 4, 4).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        slow, quick = ref(x), fast(x.bfloat16())
    assert slow.dtype == torch.bfloat16 and quick.dtype == torch.float32
    # fp32 is the exact function; the bf16 autocast result is within bf16's rounding of it
    torch.testing.assert_close(quick, F.conv2d(x.bfloat16().float(), ref.weight, None, stride, 1, 1, 4))
    torch.testing.assert_close(slow.float(), quick, rtol=0.05, atol=0.05)
    # gradients flow to the fp32 weight in fp32
    with torch.autocast("cpu", torch.bfloat16):
        fast(x).sum().backward()
    assert fast.weight.grad is not None and fast.weight.grad.dtype == torch.float32


def test_narrow_grouped_conv_leaves_bf16_weights_alone() -> None:
    # FSDP's mixed precision hands the layer bf16 parameters, with autocast on as well: no fp32 input then
    _, fast = _pair(nn.Conv2d(16, 16, 3, 1, 1, groups=2, bias=False), NarrowGroupedConv2d)
    fast.bfloat16()
    x = torch.randn(2, 16, 4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        assert fast(x).dtype == torch.bfloat16


def test_narrow_grouped_conv_keeps_bf16_on_large_maps_and_fp32_without_autocast() -> None:
    _, fast = _pair(nn.Conv2d(16, 16, 3, 1, 1, groups=2, bias=False), NarrowGroupedConv2d)
    big = torch.randn(2, 16, 16, 16)
    with torch.autocast("cpu", torch.bfloat16):
        assert fast(big).dtype == torch.bfloat16
    assert fast(big[..., :4, :4]).dtype == torch.float32


def test_the_swap_takes_only_the_layers_it_serves_and_keeps_the_state_dict() -> None:
    torch.manual_seed(0)
    plain = build_backbone("regnety_200mf", stem="small", small_map_kernels=False)
    torch.manual_seed(0)
    fast = build_backbone("regnety_200mf", stem="small")
    assert plain.state_dict().keys() == fast.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, fast.state_dict()[key]), key  # the swap draws nothing and moves nothing
    kinds = {type(m) for m in plain.modules() if isinstance(m, nn.Conv2d)}
    assert kinds == {nn.Conv2d}
    convs = {name: m for name, m in fast.named_modules() if isinstance(m, nn.Conv2d)}
    for name, conv in convs.items():
        if isinstance(conv, PointwiseConv2d):
            assert conv.kernel_size == (1, 1) and conv.groups == 1, name
        elif isinstance(conv, NarrowGroupedConv2d):
            assert conv.in_channels // conv.groups <= 8, name
        else:  # the 3x3 stem
            assert conv.kernel_size != (1, 1) and conv.groups == 1, name
    counts = {
        cls: sum(isinstance(m, cls) for m in convs.values()) for cls in (PointwiseConv2d, NarrowGroupedConv2d)
    }
    assert counts[PointwiseConv2d] > 20 and counts[NarrowGroupedConv2d] == 13  # one 3x3 per block
    assert use_small_map_kernels_(fast) == 0  # a second call finds nothing left to change


def test_a_trunk_with_the_kernels_computes_what_the_plain_trunk_computes() -> None:
    torch.manual_seed(0)
    plain = build_backbone("regnety_200mf", stem="small", small_map_kernels=False).train()
    fast = build_backbone("regnety_200mf", stem="small").train()
    fast.load_state_dict(plain.state_dict())
    plain, fast = (m.to(memory_format=torch.channels_last) for m in (plain, fast))
    x = torch.randn(8, 3, 32, 32).to(memory_format=torch.channels_last)
    ya, yb = plain(x), fast(x)
    torch.testing.assert_close(yb, ya, rtol=1e-3, atol=1e-4)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_under_bf16_autocast_the_layout_stays_channels_last_and_only_narrow_groups_run_fp32() -> None:
    trunk = build_backbone("regnety_200mf", stem="small").to(memory_format=torch.channels_last)
    seen = []

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        if x.shape[-1] * x.shape[-2] > 1:  # a 1x1 map (squeeze-excitation) has no layout to keep
            seen.append((module, x.dtype, out.dtype, out.is_contiguous(memory_format=torch.channels_last)))

    for m in trunk.modules():
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d):
            m.register_forward_hook(hook)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        trunk(x)
    assert seen and all(channels_last for *_, channels_last in seen)
    fp32_out = [(m, dt_in) for m, dt_in, dt_out, _ in seen if dt_out == torch.float32]
    # the narrow grouped convolutions on maps of up to 8x8, and the BatchNorm each hands its fp32 output to
    assert fp32_out and all(
        isinstance(m, NarrowGroupedConv2d) or (isinstance(m, nn.BatchNorm2d) and dt_in == torch.float32)
        for m, dt_in in fp32_out
    )
    assert sum(isinstance(m, NarrowGroupedConv2d) for m, _ in fp32_out) == 11  # all but the two on 16x16 maps
