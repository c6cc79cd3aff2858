"""Faster CPU kernels for convolutions over small feature maps: the last stages of a RegNet on 32-px crops.

oneDNN, which runs PyTorch's CPU convolutions, is slow on two kinds of layer that a small-image RegNetY is full
of, most of all in bf16, where its backward pass is slower than fp32's. Measured on a 2-core Xeon with AMX-bf16
(fp32 matmul peak ~200 GFLOP/s, bf16 ~700), forward and backward of one layer on 512 channels-last maps
(``benchmarks/small_maps.py`` prints the table for the machine at hand):

* a 1x1 convolution is a matrix product over channels, and a matrix product is what oneDNN does best:
  368->368 channels on 2x2 maps took 14.3 ms in fp32 and 30.4 ms in bf16 as a convolution, 8.9 and 3.9 ms as
  ``F.linear`` on the channels-last (N, H, W, C) view; at 16x16 maps the convolution is as fast or faster, so
  the product is used up to ``MAX_PIXELS`` per map (a strided 1x1 shortcut: on every stride-th pixel);
* a grouped 3x3 convolution with narrow groups (RegNetY-200MF's width 8): forward and backward took 11.5 ms
  in fp32 and 25.4 ms in bf16 on 2x2 maps (368 channels), 9.9 against 14.3 at 4x4; from 16x16 on, and with
  groups of 56 channels, bf16 is faster. Under bf16 autocast such a layer computes in fp32 (casting a small
  map costs little, and fp32 only adds precision).

No library offers these: timm builds the layers as ``nn.Conv2d`` and PyTorch hands every convolution to oneDNN.

Both change only which kernel computes the same function: the modules stay ``nn.Conv2d`` subclasses with the
same parameters, so state dicts, weight import, initialisation, DDP and FSDP see no difference. Off the CPU and
on larger maps they run ``nn.Conv2d``'s own forward. Whether bf16 pays as a whole is still measured per machine
(``run.precision=auto``, :mod:`openseer.train.autotune`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_PIXELS = 64
"""Maps of at most this many pixels (8x8) take the kernels here."""
NARROW_GROUP = 8
"""Grouped convolutions with at most this many input channels per group count as narrow."""


def _small_cpu_map(x: torch.Tensor) -> bool:
    # a TorchScript trace records the plain convolution: the graph then holds no branch taken for one input size
    return not torch.jit.is_tracing() and x.device.type == "cpu" and x.shape[-1] * x.shape[-2] <= MAX_PIXELS


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ungrouped convolution that runs as a matrix product over channels on small CPU maps; a strided one
    (a RegNet's shortcut) takes every stride-th pixel first, which is what its window sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_small_cpu_map(x) and x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]].contiguous(memory_format=torch.channels_last)
        # (N, C, H, W) in channels-last memory is a contiguous (N, H, W, C) tensor: no copy either way
        weight = self.weight.flatten(1)
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


class NarrowGroupedConv2d(nn.Conv2d):
    """A grouped convolution with narrow groups that computes in fp32 on small CPU maps under bf16 autocast.

    Only where autocast is what lowers the precision: fp32 weights. Weights already in bf16 (FSDP's mixed
    precision casts the parameters themselves) are left to compute as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _small_cpu_map(x) and torch.is_autocast_enabled("cpu") and self.weight.dtype == torch.float32:
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def use_small_map_kernels_(module: nn.Module) -> int:
    """Turns the convolutions of ``module`` that these kernels serve into their subclasses, in place.

    Only the class changes (``__class__``): parameters, buffers, hooks and state-dict keys stay as they are.
    Returns how many layers changed.
    """
    changed = 0
    for conv in module.modules():
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros":
            continue
        if conv.kernel_size == (1, 1) and conv.groups == 1 and conv.padding == (0, 0):
            conv.__class__ = PointwiseConv2d
            changed += 1
        elif conv.groups > 1 and conv.in_channels // conv.groups <= NARROW_GROUP:
            conv.__class__ = NarrowGroupedConv2d
            changed += 1
    return changed
