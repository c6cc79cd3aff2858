"""How an image becomes a network input at evaluation time: one record stored with the weights, one code path.

Training, evaluation, prediction, search and export read the same :class:`Preprocess` (as timm's
``pretrained_cfg`` does), so they cannot disagree about the input size, the resize or the normalisation:

* ``center_crop``: the shorter side is resized to ``size / crop_fraction`` and the centre ``size`` x ``size`` is
  kept (the usual 256 -> 224 protocol for photos);
* ``whole``: the whole image is resized to ``size`` x ``size`` (small images held whole in memory, such as the
  built-in data and the decoded-image cache, and classifiers trained on them).

A file, a PIL image, a uint8 (0..255) or a float (0..1) tensor of the same picture become the same input; the
transform takes batches (N, 3, H, W) as well as single images (:func:`openseer.eval.inputs.image_batches`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torchvision.transforms import v2

if TYPE_CHECKING:
    from PIL import Image

Resize = Literal["center_crop", "whole"]

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

    @property
    def resize_side(self) -> int:
        """The side the image's shorter side is resized to: ``size / crop_fraction`` before a centre crop, ``size``
        for a whole-image resize (which brings the shorter side to ``size`` too). A file needs no more pixels
        than that, which is the ``min_side`` of its reduced decode (:func:`openseer.eval.inputs.image_batches`)."""
        return self.size if self.resize == "whole" else round(self.size / self.crop_fraction)

    def transform(self) -> v2.Compose:
        """PIL image, (3, H, W) or (N, 3, H, W) tensor (uint8 0..255 or float 0..1) -> normalised float32
        (3, size, size) or (N, 3, size, size)."""
        if self.resize == "whole":
            geometry = [v2.Resize((self.size, self.size), antialias=True)]
        else:
            geometry = [v2.Resize(self.resize_side, antialias=True), v2.CenterCrop(self.size)]
        return v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), *geometry, v2.Normalize(self.mean, self.std)]
        )

    def image(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image or (3|1, H, W) / (H, W) tensor -> normalised (3, size, size) (files, lists and batches of
        images: :func:`openseer.eval.inputs.image_batches`).

        Raises ValueError for a tensor of the wrong shape, TypeError for something that is not an image.
        """
        if isinstance(image, torch.Tensor):
            if image.ndim == 2:
                image = image.unsqueeze(0)
            if image.ndim != 3 or image.shape[0] not in (1, 3):
                raise ValueError(f"an image tensor must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
            image = image.expand(3, -1, -1)
        elif hasattr(image, "convert"):  # PIL: palette, grey and RGBA images become RGB first
            image = image.convert("RGB")
        else:
            raise TypeError(f"cannot use a {type(image).__name__} as an image (PIL image or tensor)")
        return self.transform()(image)
