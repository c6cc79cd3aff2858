"""RegNetY trunks, from laptop sizes to SEER's, built on timm's RegNet.

The design space (Radosavovic et al. 2020) generates per-block widths u_j = w0 + wa*j, quantises them to powers
of wm times w0 and rounds to multiples of 8 and of the group width; timm implements that generator and the
blocks, so openseer keeps only the table of published parameters below and builds with ``timm.models.regnet``.

SEER sizes (Goyal et al. 2021) and their trunk parameter counts (no classifier): RegNetY-32GF 141.3M,
64GF 276.5M, 128GF 637.4M, 256GF 1.27B, 10B 9.3B.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import ConvNormAct
from timm.models.regnet import RegNet, RegNetCfg


@dataclass(frozen=True)
class RegNetYParams:
    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    se_ratio: float = 0.25

    def to_timm(self) -> RegNetCfg:
        return RegNetCfg(
            depth=self.depth,
            w0=self.w0,
            wa=self.wa,
            wm=self.wm,
            group_size=self.group_width,
            se_ratio=self.se_ratio,
        )


# pycls / VISSL / SEER parameters. Architecture tables are data.
REGNETY: dict[str, RegNetYParams] = {
    "regnety_200mf": RegNetYParams(depth=13, w0=24, wa=36.44, wm=2.49, group_width=8),
    "regnety_400mf": RegNetYParams(depth=16, w0=48, wa=27.89, wm=2.09, group_width=8),
    "regnety_800mf": RegNetYParams(depth=14, w0=56, wa=38.84, wm=2.4, group_width=16),
    "regnety_1.6gf": RegNetYParams(depth=27, w0=48, wa=20.71, wm=2.65, group_width=24),
    "regnety_3.2gf": RegNetYParams(depth=21, w0=80, wa=42.63, wm=2.66, group_width=24),
    "regnety_8gf": RegNetYParams(depth=17, w0=192, wa=76.82, wm=2.19, group_width=56),
    "regnety_16gf": RegNetYParams(depth=18, w0=200, wa=106.23, wm=2.48, group_width=112),
    "regnety_32gf": RegNetYParams(depth=20, w0=232, wa=115.89, wm=2.53, group_width=232),
    "regnety_64gf": RegNetYParams(depth=20, w0=352, wa=147.48, wm=2.4, group_width=328),
    "regnety_128gf": RegNetYParams(depth=27, w0=456, wa=160.83, wm=2.52, group_width=264),
    "regnety_256gf": RegNetYParams(depth=27, w0=640, wa=230.83, wm=2.53, group_width=373),
    "regnety_10b": RegNetYParams(depth=27, w0=1744, wa=620.83, wm=2.52, group_width=1010),
}

SEER_TRUNK_PARAMS = {
    "regnety_32gf": 141.3e6,
    "regnety_64gf": 276.5e6,
    "regnety_128gf": 637.4e6,
    "regnety_256gf": 1.27e9,
    "regnety_10b": 9.3e9,
}


def output_strides(stem: str) -> tuple[int, ...]:
    """The total strides a RegNet trunk with this stem can have, its own the largest: the stem's 2 times each of
    the four stages' 2 (32), less the first stage's with the small stem (16); every stage can give up its stride,
    the stem never does."""
    natural = 16 if stem == "small" else 32
    return tuple(2**k for k in range(1, natural.bit_length()))


def build_regnety(
    name: str, stem: str = "imagenet", zero_init_last_bn: bool = True, output_stride: int | None = None
) -> RegNet:
    """A RegNetY trunk with global average pooling and no classifier: ``forward(x (B,3,H,W)) -> (B, D)``.

    ``stem='small'`` is for images of 64 px or less: the first stage keeps the stem's resolution (total stride
    16 instead of 32), so a 32-px crop still reaches the last stage as 2x2 rather than 1x1. With stride 32 a
    32-px input leaves the last stage a single pixel and, at random initialisation, nearly the same feature
    for every image. Dropping the first stage's stride rather than the stem's (the CIFAR-ResNet habit) gives
    the same stage resolutions and skips the 1x1 convolution and BatchNorms at full input resolution: 1.35x
    faster to train here on 32-px crops (measured with RegNetY-200MF, batch 256, 2x32+2x16 crops).

    ``output_stride``: a total stride below the stem's own (one of :func:`output_strides`) takes the stride out of
    the last stages, last first, as the small stem does for the first: plain stride-1 convolutions, not
    timm's dilated ones (``RegNet(output_stride=...)``), since the point here is a larger map for the last
    stage, not the receptive field of the strided trunk. No weight changes shape.

    ``zero_init_last_bn``: timm zero-initialises the scale of each block's last BatchNorm (the default here);
    VISSL's RegNet, which trained SEER, starts every BatchNorm scale at 1 (``init_weights`` in
    vissl/models/trunks/regnet_fsdp.py).
    """
    if name not in REGNETY:
        raise ValueError(f"unknown RegNetY size '{name}' (available: {', '.join(REGNETY)})")
    if stem not in ("imagenet", "small"):
        raise ValueError(f"unknown stem '{stem}' (expected 'imagenet' or 'small')")
    model = RegNet(REGNETY[name].to_timm(), num_classes=0, zero_init_last=zero_init_last_bn)
    strides = output_strides(stem)
    target = strides[-1] if output_stride is None else output_stride
    if target not in strides:
        raise ValueError(
            f"output stride {target} is not a power of two from 2 to {strides[-1]} (stem '{stem}')"
        )
    stages = [model.s1, model.s2, model.s3, model.s4]
    first = 1 if stem == "small" else 0  # the small stem's layout: the first stage unstrided
    last = len(stages) - strides[::-1].index(target)  # a lower output stride: the last ones unstrided
    # a RegNet stage's stride sits in its first block's 3x3 conv and shortcut
    for stage in stages[:first] + stages[last:]:
        block = stage.b1
        block.conv2.conv.stride = (1, 1)
        if isinstance(block.downsample, ConvNormAct):
            block.downsample.conv.stride = (1, 1)
    return model


def trunk_parameter_count(name: str) -> int:
    """Parameter count of a trunk, built on the meta device so even the 10B model costs no memory."""
    with torch.device("meta"):
        model = build_regnety(name)
    return sum(p.numel() for p in model.parameters())
