"""Per-image SwAV multi-crop augmentation on torchvision.transforms.v2.

Multi-crop (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", Sec. 3.2) draws a few large "global" crops plus several small
"local" crops of each image; only the global crops (indices 0 and 1 with the presets
below) are used to compute the codes that every other crop predicts.

This module is the general path: it runs inside DataLoader workers on one PIL image or
uint8 tensor of any size. ``openseer.data.batched_crops`` is the vectorised twin for
batches of small, equally sized uint8 images and shares the specs defined here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import PIL.Image
import torch
from torchvision.transforms import v2

from openseer.data.images import crop_source_side
from openseer.data.preprocess import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class CropSpec:
    """One group of same-size crops.

    ``size`` is the output side in pixels, ``count`` how many crops of that size are drawn
    and ``scale`` the RandomResizedCrop range of the crop area as a fraction of the image.
    """

    size: int
    """Output side of these crops in pixels."""
    count: int
    """How many crops of this size are drawn from each image."""
    scale: tuple[float, float]
    """[min, max] area of a crop as a fraction of the image (RandomResizedCrop's scale)."""


@dataclass(frozen=True)
class AugmentSpec:
    """Photometric augmentation shared by every crop (SwAV Appendix / SimCLR recipe).

    ``color_strength`` is SimCLR's ``s``: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) applied with
    probability ``color_p``.
    """

    flip_p: float = 0.5
    """Probability of a horizontal flip."""
    color_strength: float = 1.0
    """SimCLR's colour strength s: ColorJitter(brightness 0.8s, contrast 0.8s, saturation 0.8s, hue 0.2s)."""
    color_p: float = 0.8
    """Probability of applying the colour jitter."""
    grayscale_p: float = 0.2
    """Probability of converting a crop to grey."""
    blur_p: float = 0.5
    """Probability of a Gaussian blur (its kernel about a tenth of the crop's side); 0: never."""
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    """[min, max] of the blur's sigma in pixels, drawn uniformly per crop."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Per-channel mean subtracted from pixels scaled to [0, 1] (ImageNet's by default); stored with the weights
    as their input normalisation."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Per-channel standard deviation the pixels are divided by after the mean (ImageNet's by default)."""


# SEER (Goyal et al. 2021) trains with 2x224 + 4x96; SwAV's best ImageNet model uses 2x224 + 6x96.
SEER_CROPS = (CropSpec(224, 2, (0.14, 1.0)), CropSpec(96, 4, (0.05, 0.14)))
SWAV_CROPS = (CropSpec(224, 2, (0.14, 1.0)), CropSpec(96, 6, (0.05, 0.14)))


def n_crops(crops: Sequence[CropSpec]) -> int:
    """Total number of crops drawn per image."""
    return sum(c.count for c in crops)


def crop_sizes(crops: Sequence[CropSpec]) -> list[int]:
    """Output side of each crop, in the order crops are returned (all of spec 0, then spec 1, ...)."""
    return [c.size for c in crops for _ in range(c.count)]


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side of about 10% of the crop side (SimCLR, reused by SwAV), at least 3."""
    return max(3, 2 * int(size * 0.05) + 1)


def _crop_pipeline(crop: CropSpec, aug: AugmentSpec) -> v2.Compose:
    s = aug.color_strength
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(crop.size, scale=crop.scale, antialias=True),
        v2.RandomHorizontalFlip(aug.flip_p),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=aug.color_p),
        v2.RandomGrayscale(aug.grayscale_p),
    ]
    if aug.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(crop.size), sigma=aug.blur_sigma)
        ops.append(v2.RandomApply([blur], p=aug.blur_p))
    # Photometric ops stay on PIL/uint8 and the float conversion comes last, as in SwAV's
    # released code; on PIL inputs this is also faster than converting first.
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(aug.mean, aug.std)]
    return v2.Compose(ops)


def _as_rgb(img: PIL.Image.Image | torch.Tensor) -> PIL.Image.Image | torch.Tensor:
    if isinstance(img, PIL.Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    if img.dtype != torch.uint8:
        raise TypeError(f"tensor images must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = img.unsqueeze(0)
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"tensor images must be (3,H,W) or (1,H,W), got {tuple(img.shape)}")
    # Grayscale tensors are replicated so every crop has three channels, like PIL's convert("RGB").
    return img.expand(3, -1, -1) if img.shape[0] == 1 else img


class MultiCrop:
    """Draws ``n_crops(crops)`` augmented crops of one image (SwAV multi-crop, Caron et al. 2020).

    Randomness comes from the global torch RNG, so a caller that seeds it per sample gets
    reproducible crops.
    """

    def __init__(self, crops: Sequence[CropSpec], aug: AugmentSpec = AugmentSpec()) -> None:
        if not crops:
            raise ValueError("at least one CropSpec is required")
        self.crops = tuple(crops)
        self.aug = aug
        self._pipelines = [(_crop_pipeline(c, aug), c.count) for c in self.crops]

    @property
    def source_side(self) -> int:
        """The shorter image side from which no crop is enlarged (the largest
        :func:`~openseer.data.images.crop_source_side` of the groups): the ``min_side`` a reduced decode of an
        image for these crops asks for."""
        return max(crop_source_side(c.size, c.scale[0]) for c in self.crops)

    def __call__(self, img: PIL.Image.Image | torch.Tensor) -> list[torch.Tensor]:
        """Returns ``n_crops`` float32 tensors of shape (3, size, size), normalised with mean/std."""
        img = _as_rgb(img)
        return [pipe(img) for pipe, count in self._pipelines for _ in range(count)]

    def __repr__(self) -> str:
        return f"MultiCrop(crops={self.crops}, aug={self.aug})"


def collate_multicrop(batch: list) -> tuple[list[torch.Tensor], torch.Tensor, list]:
    """Collates ``(crops, index)`` items into per-crop batches.

    Items that are not tuples are treated as skipped samples (e.g. undecodable files) and
    returned as the third element so the caller can count them. Returns
    ``([ (B,3,s_k,s_k) for each crop k ], LongTensor (B,), skipped)``; the crop list is empty
    when every item was skipped.
    """
    kept = [item for item in batch if isinstance(item, tuple)]
    skipped = [item for item in batch if not isinstance(item, tuple)]
    if not kept:
        return [], torch.empty(0, dtype=torch.long), skipped
    crops = [torch.stack(views) for views in zip(*(item[0] for item in kept), strict=True)]
    index = torch.tensor([int(item[1]) for item in kept], dtype=torch.long)
    return crops, index, skipped


def group_by_size(crops: list[torch.Tensor]) -> list[torch.Tensor]:
    """Concatenates runs of consecutive same-resolution crops along the batch dim, keeping order.

    SwAV feeds each resolution through the backbone as one batch (Caron et al. 2020, multi-crop);
    e.g. ``[(B,3,224,224)]*2 + [(B,3,96,96)]*4`` becomes ``[(2B,3,224,224), (4B,3,96,96)]``.
    """
    groups: list[torch.Tensor] = []
    run: list[torch.Tensor] = []
    for x in crops:
        if run and x.shape[-2:] != run[0].shape[-2:]:
            groups.append(_cat(run))
            run = []
        run.append(x)
    if run:
        groups.append(_cat(run))
    return groups


def _cat(run: list[torch.Tensor]) -> torch.Tensor:
    # A lone crop needs no copy.
    return run[0] if len(run) == 1 else torch.cat(run)
