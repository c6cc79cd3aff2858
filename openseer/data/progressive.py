"""Progressive resolution: smaller crops early in the run, growing to their full size.

Kocyigit et al. 2022 ("Accelerating Self-Supervised Learning via Efficient Training Strategies") train
several SSL methods at a lower resolution first and report the same accuracy in up to 2.7x less time: the
early steps, whose features are coarse anyway, cost a fraction of the compute. Here every crop's side follows
``start_scale -> 1`` linearly over the first ``until`` share of the run (steps, or the wall-clock budget), rounded
to a multiple of ``multiple`` pixels so that only a few shapes occur (each new shape is a recompile under
``torch.compile`` and a new kernel choice for oneDNN/cuDNN).

The crops are made at their configured size and then resized (antialiased bilinear), so the data streams, their
seeds and resumption do not change; only the network sees smaller inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def progressive_side(full: int, share: float, start_scale: float, until: float, multiple: int = 8) -> int:
    """The side of a crop whose configured side is ``full`` at ``share`` (0..1) of the run.

    ``start_scale`` of it at the start, growing linearly to all of it at ``until``; rounded to the nearest
    multiple of ``multiple`` and kept within [multiple, full] (a crop smaller than one multiple stays as it is).
    """
    if start_scale >= 1.0 or share >= until or full <= multiple:
        return full
    scale = start_scale + (1.0 - start_scale) * max(share, 0.0) / until
    side = round(full * scale / multiple) * multiple
    return max(multiple, min(full, side))


def resize_crops(crops: Sequence[torch.Tensor], sides: Sequence[int]) -> list[torch.Tensor]:
    """Each (B, C, H, W) crop batch resized to ``side`` x ``side`` (antialiased bilinear), in its memory format;
    a batch already at its side is returned as it is."""
    out = []
    for x, side in zip(crops, sides, strict=True):
        if x.shape[-1] == side and x.shape[-2] == side:
            out.append(x)
            continue
        fmt = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out.append(y.contiguous(memory_format=fmt))
    return out
