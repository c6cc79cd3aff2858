"""All crop sizes through the trunk in one pass: the smaller crops zero-padded to the largest, their padding cut
from the last feature map before the average pool. This is how VISSL trains SEER 10B
(``create_multidimensional_tensor: true`` in configs/config/pretrain/seer/models/regnet10B.yaml):

* vissl/data/collators/collator_helper.py ``MultiDimensionalTensor.from_tensors``: every crop batch is copied
  into the top-left corner of a zero canvas the size of the largest crop (the padding is at the bottom and the
  right), the crops stacked crop-major, with a mask that is true on the padding;
* vissl/models/model_helpers.py ``get_tunk_forward_interpolated_outputs`` (called by the ``regnet_fsdp`` trunk,
  vissl/models/trunks/regnet_fsdp.py ``_RegNetFSDP.forward``): the trunk runs up to its last stage (``res5``) on
  the whole canvas batch; the mask is resized to that map with ``F.interpolate`` (nearest), and for each crop
  the map is cut to the rows and columns its resized mask leaves unpadded before ``AdaptiveAvgPool2d(1)``;
* the head then sees one (n_crops * B, D) feature matrix, crop-major, as in the pass per size.

The trunk does see the padding: convolutions near a small crop's lower and right edges read padded positions
(no longer zero after the first BatchNorm), squeeze-excitation averages over the whole canvas, and training
BatchNorm's batch statistics include the padding. A padded small crop's features are therefore not those of the
same crop run alone; the largest crops, which are not padded, give their own features (with BatchNorm using
running statistics). VISSL runs one pass because FSDP then gathers each block's weights once per step, not once
per crop size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_canvas(crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """crops [(B, C, h_i, w_i)] -> (n_crops * B, C, H, W), H and W the largest sides: each crop in the top-left
    corner of a zero canvas, crop-major (MultiDimensionalTensor.from_tensors). Keeps channels_last inputs so."""
    height = max(c.shape[-2] for c in crops)
    width = max(c.shape[-1] for c in crops)
    padded = [F.pad(c, (0, width - c.shape[-1], 0, height - c.shape[-2])) for c in crops]
    batch = torch.cat(padded)
    if crops[0].dim() == 4 and crops[0].is_contiguous(memory_format=torch.channels_last):
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


@functools.lru_cache(maxsize=64)
def unpadded_extent(side: int, canvas: int, map_side: int) -> int:
    """Rows (or columns) of a ``map_side`` feature map that belong to a crop of ``side`` pixels in the corner of a
    ``canvas``-pixel canvas: those whose nearest-neighbour source pixel is inside the crop, as VISSL resizes its
    padding mask (``F.interpolate`` default 'nearest', then counting the unpadded positions)."""
    mask = torch.arange(canvas, dtype=torch.float32) >= side  # true on the padding
    resized = F.interpolate(mask[None, None].float(), size=map_side, mode="nearest")[0, 0].bool()
    return int((~resized).sum())


def padded_trunk_features(backbone: nn.Module, crops: Sequence[torch.Tensor]) -> torch.Tensor:
    """crops [(B, 3, s_i, s_i)] -> pooled features (n_crops * B, D), crop-major, from one trunk pass over the
    zero-padded canvas batch; each crop's map averaged over its own unpadded extent only.

    ``backbone``: a timm trunk (``forward_features`` gives the last map, (N, D, h, w), before its global average
    pool)."""
    if not hasattr(backbone, "forward_features"):
        raise TypeError(
            f"{type(backbone).__name__} has no forward_features: the padded pass needs a timm trunk"
        )
    canvas = pad_to_canvas(crops)
    maps = backbone.forward_features(canvas)
    height, width = canvas.shape[-2:]
    pooled = []
    for crop, chunk in zip(crops, maps.split([c.shape[0] for c in crops]), strict=True):
        rows = unpadded_extent(crop.shape[-2], height, chunk.shape[-2])
        cols = unpadded_extent(crop.shape[-1], width, chunk.shape[-1])
        pooled.append(chunk[:, :, :rows, :cols].mean(dim=(2, 3)))
    return torch.cat(pooled)
