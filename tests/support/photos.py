"""Synthetic photographs for the decoding tests: what a camera JPEG holds, without shipping one.

Flat colour hides every resampling difference; these pictures have what real photos have: smooth gradients
(sky, walls), texture at several scales (foliage, fabric, sensor noise) and hard edges (objects, lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

_EXIF_ORIENTATION = 0x0112

# What a reduced JPEG decode (DCT scaling, openseer.data.images.load_rgb's min_side) may change against the full
# decode, both resampled alike to the same small size, in grey levels: the mean and the 99th percentile of the
# absolute difference. The worst cases on these photos come where the reduced decode is exactly the target size
# (no filter smooths it after the DCT scaling): a mean near 2 and a 99th percentile near 18, about what choosing
# bicubic instead of bilinear resampling changes on the full decode.
MEAN_TOLERANCE = 2.5
P99_TOLERANCE = 24


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB ``width x height`` picture: gradient + multi-scale texture + filled shapes and lines."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [x / width * 180 + 30, y / height * 160 + 40, (x + y) / (width + height) * 140 + 60], axis=-1
    )
    texture = np.zeros((height, width), dtype=np.float32)
    for cell, amplitude in ((64, 28.0), (16, 18.0), (4, 10.0), (1, 6.0)):
        coarse = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
        smooth = Image.fromarray(coarse).resize(
            (width + 2 * cell, height + 2 * cell), Image.Resampling.BICUBIC
        )
        texture += amplitude * np.asarray(smooth)[:height, :width]
    picture = Image.fromarray(np.clip(image + texture[..., None], 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(width // 20 + 1, width // 3 + 2))
        y1 = y0 + int(rng.integers(height // 20 + 1, height // 3 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=colour)
        ends = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(ends, fill=colour, width=int(rng.integers(1, 6)))
    return picture


def photo_jpeg(
    path: Path,
    width: int,
    height: int,
    seed: int = 0,
    orientation: int = 1,
    quality: int = 90,
    **save: object,
) -> Path:
    """Write :func:`synthetic_photo` as a JPEG of stored size ``width x height`` with an EXIF orientation tag."""
    exif = Image.Exif()
    if orientation != 1:
        exif[_EXIF_ORIENTATION] = orientation
    synthetic_photo(width, height, seed).save(path, format="JPEG", quality=quality, exif=exif, **save)
    return path


@dataclass
class Decode:
    """One call of ``load_rgb`` seen by :func:`record_decodes`: what it was given and the size it returned."""

    source: object
    min_side: int | None
    size: tuple[int, int]


def record_decodes(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[Decode]:
    """Every ``load_rgb`` call that ``module`` makes from now on (the call goes through, unchanged), in order."""
    real = module.load_rgb
    calls: list[Decode] = []

    def spy(source, *args, **kwargs):  # noqa: ANN001, ANN202 - load_rgb's own arguments
        img = real(source, *args, **kwargs)
        min_side = kwargs.get("min_side", args[1] if len(args) > 1 else None)
        calls.append(Decode(source, min_side, img.size))
        return img

    monkeypatch.setattr(module, "load_rgb", spy)
    return calls


def grey_level_differences(a: torch.Tensor, b: torch.Tensor, std: tuple[float, ...]) -> tuple[float, float]:
    """(mean, 99th percentile) of the absolute difference of two normalised inputs (..., 3, H, W), in grey levels
    (0..255), to hold against :data:`MEAN_TOLERANCE` and :data:`P99_TOLERANCE`."""
    scale = torch.tensor(std).view(3, 1, 1) * 255
    error = ((a - b) * scale).abs().flatten().double()
    return float(error.mean()), float(torch.quantile(error, 0.99))


def photo_folder(root: Path, count: int, size: tuple[int, int] = (200, 150), broken: int = 0) -> Path:
    """A flat folder of ``count`` :func:`synthetic_photo` JPEGs of ``size`` (landscape and portrait in turn, a
    camera's EXIF rotation on every third) plus ``broken`` unreadable ``.jpg`` files: a phone's folder in small."""
    root.mkdir(parents=True, exist_ok=True)
    width, height = size
    for i in range(count):
        w, h = (width, height) if i % 2 == 0 else (height, width)
        photo_jpeg(root / f"IMG_{i:04d}.jpg", w, h, seed=i, orientation=6 if i % 3 == 0 else 1, quality=85)
    for i in range(broken):
        (root / f"IMG_broken_{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short by a failed transfer")
    return root
