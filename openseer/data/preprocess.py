"""How an image becomes a network input at evaluation time: one record stored with the weights, one code path.

Training, evaluation, prediction, search and export read the same :class:`Preprocess` (as timm's
``pretrained_cfg`` does), so they cannot disagree about the input size, the resize or the normalisation:

* ``center_crop``: the shorter side is resized to ``size / crop_fraction`` and the centre ``size`` x ``size`` is
  kept (the usual 256 -> 224 protocol for photos);
* ``whole``: the whole image is resized to ``size`` x ``size`` (small images held whole in memory, such as the
  built-in data and the decoded-image cache, and classifiers trained on them).

In-memory uint8 batches (N, 3, H, W) are always resized whole: they are already the decoded, square images the
cache or the built-in data hold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from openseer.data.images import BadImageError, load_rgb

if TYPE_CHECKING:
    from PIL import Image

Resize = Literal["center_crop", "whole"]
ImageLike = Union["Image.Image", str, os.PathLike, torch.Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: Resize = "center_crop"
    crop_fraction: float = 0.875

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.size < 1 or not 0 < self.crop_fraction <= 1 or self.resize not in ("center_crop", "whole"):
            raise ValueError(f"invalid preprocessing {self}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            size=int(d["size"]),
            mean=tuple(d.get("mean", IMAGENET_MEAN)),
            std=tuple(d.get("std", IMAGENET_STD)),
            resize=d.get("resize", "center_crop"),
            crop_fraction=float(d.get("crop_fraction", 0.875)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    def with_resize(self, resize: Resize) -> Preprocess:
        return Preprocess(self.size, self.mean, self.std, resize, self.crop_fraction)

    # ---------------------------------------------------------------- one image (file, PIL or tensor)

    def transform(self) -> v2.Compose:
        """PIL image or (3, H, W) tensor (uint8 0..255 or float 0..1) -> normalised float (3, size, size)."""
        if self.resize == "whole":
            geometry = [v2.Resize((self.size, self.size), antialias=True)]
        else:
            geometry = [v2.Resize(round(self.size / self.crop_fraction), antialias=True), v2.CenterCrop(self.size)]
        return v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), *geometry, v2.Normalize(self.mean, self.std)]
        )

    def image(self, image: ImageLike) -> torch.Tensor:
        """A path, PIL image or (3|1, H, W) / (H, W) tensor -> normalised (3, size, size).

        Raises ValueError for an unreadable file (with the reason) or a tensor of the wrong shape.
        """
        if isinstance(image, str | os.PathLike):
            try:
                image = load_rgb(Path(image).expanduser())
            except BadImageError as err:
                raise ValueError(f"cannot read image {err.path}: {err.reason}") from err
        elif isinstance(image, torch.Tensor):
            if image.ndim == 2:
                image = image.unsqueeze(0)
            if image.ndim != 3 or image.shape[0] not in (1, 3):
                raise ValueError(f"an image tensor must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
            image = image.expand(3, -1, -1)
        elif hasattr(image, "convert"):  # PIL: palette, grey and RGBA images become RGB first
            image = image.convert("RGB")
        else:
            raise TypeError(f"cannot use a {type(image).__name__} as an image (PIL image, path or tensor)")
        return self.transform()(image)

    # ---------------------------------------------------------------- in-memory uint8 batches

    def uint8_batch(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float (B, 3, size, size), resized whole, on the images' device."""
        x = images.float().div_(255)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            shrink = x.shape[-1] > self.size or x.shape[-2] > self.size  # antialiasing matters when shrinking
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=shrink, align_corners=False)
        x = (x - _channel(self.mean, x)) / _channel(self.std, x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
