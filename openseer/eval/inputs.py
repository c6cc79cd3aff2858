"""The one way images become network inputs, whatever form they come in.

A labelled or unlabelled set (:class:`~openseer.data.labelled.EvalData`), image files, PIL images, uint8 (0..255)
or float (0..1) tensors, one image, a list of them or an (N, 3, H, W) batch: every image goes through the same
:class:`~openseer.data.preprocess.Preprocess` transform (the one stored with the weights: resize, centre crop or
whole-image resize, normalisation), so the same picture gives the same input as a file, a PIL image or a
tensor. A set's images held in memory are resized whole (:meth:`EvalData.fitted`: they are already squares of
the whole image). A file is decoded no larger than the resize needs (a large JPEG at 1/2, 1/4 or 1/8 of its size,
:func:`openseer.data.images.load_rgb`'s ``min_side``). Files that cannot be decoded are skipped and counted, never
raised.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from openseer.data.folders import Skipped, collate_skipping, load_or_skip
from openseer.data.images import SkipLog
from openseer.data.labelled import EvalData
from openseer.data.preprocess import Preprocess

ImageLike = Image.Image | str | os.PathLike | torch.Tensor
"""One image: a PIL image, a file, or a (3|1, H, W) or (H, W) tensor (uint8 0..255, float 0..1)."""
Images = EvalData | ImageLike | Sequence[ImageLike]
"""What :func:`image_batches` takes: a set, one image, a sequence of images, or an (N, 3|1, H, W) batch."""


def image_batches(
    images: Images,
    preprocess: Preprocess,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    workers: int = 0,
    channels_last: bool = False,
    skipped: SkipLog | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised inputs (B, 3, size, size) float32 on ``device`` and the positions (B,) int64 of their images
    in ``images``, in order.

    Tensor batches and a set's in-memory images are transformed batch by batch on ``device``; files and single
    images one by one, in ``workers`` DataLoader processes (0: in this one). Files that cannot be decoded are
    left out of the positions and added to ``skipped``. Raises TypeError for something that is not an image and
    ValueError for a tensor of the wrong shape, before anything is read.
    """
    if isinstance(images, EvalData):
        preprocess = images.fitted(preprocess)
        source = images.images if images.images is not None else list(images.paths or [])
    else:
        source = _as_images(images)
    if isinstance(source, torch.Tensor):
        batches = _tensor_batches(source, preprocess, batch_size, device)
    else:
        loader = DataLoader(
            _Images(source, preprocess), batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping
        )
        batches = _loaded(loader, device, skipped)
    for x, rows in batches:
        x = x.as_subclass(torch.Tensor)  # a plain tensor, not torchvision's Image
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), rows


def _as_images(images: ImageLike | Sequence[ImageLike]) -> torch.Tensor | list[ImageLike]:
    """An (N, 3, H, W) batch, or a list of single images each checked to be one."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.shape[1] not in (1, 3):
            raise ValueError(f"an image batch must be (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
        return images
    if isinstance(images, torch.Tensor | str | os.PathLike | Image.Image):
        images = [images]  # one image
    items = list(images)
    for item in items:
        if isinstance(item, torch.Tensor):
            if not (item.ndim == 2 or (item.ndim == 3 and item.shape[0] in (1, 3))):
                raise ValueError(f"an image tensor must be (3, H, W), (1, H, W) or (H, W), got {tuple(item.shape)}")
        elif not isinstance(item, str | os.PathLike | Image.Image):
            raise TypeError(f"cannot use a {type(item).__name__} as an image (PIL image, path or tensor)")
    return items


def _tensor_batches(
    images: torch.Tensor, preprocess: Preprocess, batch_size: int, device: torch.device | str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    transform = preprocess.transform()  # batched: the same operations as on one image
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        yield transform(x.expand(-1, 3, -1, -1)), torch.arange(start, start + len(x))


def _loaded(
    loader: DataLoader, device: torch.device | str, skipped: SkipLog | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, rows, bad in loader:
        if skipped is not None:
            for item in bad:
                skipped.add(item.path, item.reason)
        if x is not None:
            yield x.to(device), rows


class _Images(Dataset):
    """Single images (files, PIL images, tensors): ``(input (3, size, size), position)``, or :class:`Skipped`
    for a file that cannot be decoded."""

    def __init__(self, items: Sequence[ImageLike], preprocess: Preprocess) -> None:
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | Skipped:
        item = self.items[index]
        if isinstance(item, str | os.PathLike):
            # a large JPEG decoded at reduced size, never below the side the resize brings it to
            side = self.preprocess.resize_side
            item = load_or_skip(Path(item).expanduser(), index, self.preprocess.image, min_side=side)
            return item if isinstance(item, Skipped) else (item, index)
        return self.preprocess.image(item), index
