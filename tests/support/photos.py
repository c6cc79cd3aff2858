"""Synthetic photographs for the decoding tests: what a camera JPEG holds, without shipping one.

Flat colour hides every resampling difference; these pictures have what real photos have: smooth gradients
(sky, walls), texture at several scales (foliage, fabric, sensor noise) and hard edges (objects, lines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
