"""Robust image decoding: any file in, an 8-bit RGB ``PIL.Image`` or a ``BadImageError`` out.

Large scraped image collections always contain broken files; pretraining must skip them
with a reason instead of crashing a DataLoader worker hours into a run.

A caller that shrinks the image anyway can ask for a JPEG at reduced size (``min_side``): libjpeg then
decodes it at 1/2, 1/4 or 1/8 scale (DCT scaling, Pillow's ``Image.draft``), far less work than the whole
photo, but never below the side the caller needs.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from openseer.fileio.atomic import atomic_write_text

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

# Same as PIL's hard limit (2 * Image.MAX_IMAGE_PIXELS), but applied per call so the
# global PIL setting stays untouched.
DEFAULT_MAX_PIXELS = 178_956_970

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WHITE = (255, 255, 255, 255)


class BadImageError(Exception):
    """A file that cannot be decoded into an RGB image.

    Attributes:
        path: the offending file, as a string.
        reason: a short human-readable reason, e.g. ``"truncated file"``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep both attributes when pickled across worker processes
        return (type(self), (self.path, self.reason))


class Reduced(NamedTuple):
    """An image decoded at reduced size, and where the full-size picture lies in it.

    Attributes:
        image: the decoded 8-bit RGB image, ``W' x H'``.
        size: ``(W, H)``, the full-size picture's width and height (EXIF orientation applied).
        box: ``(left, top, right, bottom)`` in ``image``'s pixel coordinates onto which the full-size picture maps:
            its point ``(x, y)`` is at ``(left + x * (right - left) / W, top + y * (bottom - top) / H)`` in
            ``image``. ``(0, 0, W, H)`` when the file was decoded at full size.
    """

    image: Image.Image
    size: tuple[int, int]
    box: tuple[float, float, float, float]


ImageSource = str | os.PathLike[str] | bytes
"""An image file: its path, or its bytes held in memory (a sample read from a tar shard)."""


def load_rgb(
    source: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` (a file, or a file's bytes) into a fully loaded 8-bit RGB image (size ``W x H``, mode
    ``"RGB"``).

    EXIF orientation is applied, transparency is composited on white, 16-bit and float
    data are rescaled to 0..255, and animated files yield their first frame.

    ``min_side``: the shorter side the caller needs. A JPEG whose shorter side is at least twice that is decoded
    at 1/2, 1/4 or 1/8 of its size (the largest reduction that keeps the shorter side >= ``min_side``), far
    less work than decoding it whole; other formats, and every file when ``None``, are decoded at full size.
    :func:`load_rgb_reduced` also says where the full-size picture lies in the result.

    ``name``: what errors call the image (default: its path; ``"<bytes>"`` for bytes).

    Raises:
        BadImageError: for every kind of failure (never any other exception type).
    """
    return load_rgb_reduced(source, max_pixels, min_side, name).image


def load_rgb_reduced(
    source: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    name: str | None = None,
) -> Reduced:
    """:func:`load_rgb`, with the full-size picture's size and its box in the (maybe reduced) image.

    The pixel limit applies to the file's full size, before anything is decoded.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be >= 1 or None, got {min_side}")
    in_memory = isinstance(source, bytes)
    label = name if name is not None else "<bytes>" if in_memory else str(source)
    try:
        if (len(source) if in_memory else Path(source).stat().st_size) == 0:
            raise BadImageError(label, "empty file")
        with Image.open(io.BytesIO(source) if in_memory else Path(source)) as img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise BadImageError(label, f"zero-size image ({width}x{height})")
            if width * height > max_pixels:
                raise BadImageError(label, f"decompression bomb: {width * height} pixels > limit")
            box = _draft(img, min_side)
            img.load()  # decode now so truncated data fails here, not in a transform
            stored = img.size
            orientation = _apply_orientation(img, label)
            size = (height, width) if orientation in _SWAPS_AXES else (width, height)
            return Reduced(_to_rgb(img), size, _orient_box(box, stored, orientation))
    except BadImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise arbitrary types on junk input
        raise BadImageError(label, _reason(exc)) from exc


def crop_source_side(size: int, min_scale: float, min_ratio: float = 3 / 4) -> int:
    """The shorter image side at which every random-resized crop of ``size`` px spans at least ``size`` source
    pixels on each side: the ``min_side`` that keeps a reduced decode from upsampling any such crop.

    A crop of area fraction ``s`` and aspect ``r`` of a ``W x H`` image is ``sqrt(s W H r)`` wide and
    ``sqrt(s W H / r)`` high (torchvision's ``RandomResizedCrop``, default aspects ``(3/4, 4/3)``); both are at
    least ``sqrt(s * min(r, 1/r)) * min(W, H)``, and its fallback crops are larger still. So a shorter side of
    ``size / sqrt(min_scale * min_ratio)`` suffices (e.g. 692 px for SwAV's 224 px crops of scale >= 0.14).
    """
    if size < 1 or not 0 < min_scale <= 1 or not 0 < min_ratio <= 1:
        raise ValueError(
            f"need size >= 1 and min_scale, min_ratio in (0, 1], got {size}, {min_scale}, {min_ratio}"
        )
    return math.ceil(size / math.sqrt(min_scale * min_ratio) - 1e-9)


def _draft(img: Image.Image, min_side: int | None) -> tuple[float, float, float, float]:
    """Ask a JPEG decoder for a reduced size (DCT scaling); the box of the full picture in the stored result.

    The request is square, so the reduced shorter side is >= ``min_side`` whichever axis the EXIF orientation
    later puts first: draft picks the largest scale 1/s (s in 1, 2, 4, 8) with ``s * min_side <= min(W, H)``.
    """
    width, height = img.size
    if min_side is not None and isinstance(img, JpegImageFile):  # MPO, the camera format, is a JPEG too
        drafted = img.draft(None, (min_side, min_side))
        if drafted is not None:
            left, top, right, bottom = drafted[1]
            return (float(left), float(top), float(right), float(bottom))
    return (0.0, 0.0, float(width), float(height))


# EXIF orientation -> (flip left-right, flip top-bottom, then swap the axes), as ImageOps.exif_transpose applies it
_ORIENTATIONS = {
    2: (True, False, False),  # FLIP_LEFT_RIGHT
    3: (True, True, False),  # ROTATE_180
    4: (False, True, False),  # FLIP_TOP_BOTTOM
    5: (False, False, True),  # TRANSPOSE
    6: (False, True, True),  # ROTATE_270
    7: (True, True, True),  # TRANSVERSE
    8: (True, False, True),  # ROTATE_90
}
_SWAPS_AXES = frozenset(k for k, (_, _, swap) in _ORIENTATIONS.items() if swap)


def _orient_box(
    box: tuple[float, float, float, float], size: tuple[int, int], orientation: int
) -> tuple[float, float, float, float]:
    """``box`` in an image of ``size`` (W, H), once that image is transposed per EXIF ``orientation``.

    A reduced JPEG has a partly covered last column and row; flipping moves them to the other side, so the box
    moves with them.
    """
    flip_x, flip_y, swap = _ORIENTATIONS.get(orientation, (False, False, False))
    left, top, right, bottom = box
    width, height = size
    if flip_x:
        left, right = width - right, width - left
    if flip_y:
        top, bottom = height - bottom, height - top
    return (top, left, bottom, right) if swap else (left, top, right, bottom)


def _apply_orientation(img: Image.Image, label: str) -> int:
    """Rotate ``img`` in place per its EXIF tag; broken EXIF keeps the pixels as stored.

    Returns the EXIF orientation that was applied (1 when the pixels were left as stored).
    """
    core = img.im
    orientation = 1
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # noqa: BLE001 - a bad metadata block should not drop the image
        logger.debug("ignoring unreadable EXIF orientation in %s: %s", label, exc)
    return orientation if img.im is not core and orientation in _ORIENTATIONS else 1


def _reason(exc: BaseException) -> str:
    """Turn a decoder exception into a short reason string."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return f"decompression bomb: {found.group(1) if found else '?'} pixels > limit"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    message = str(exc).strip()
    if "truncated" in message.lower() or isinstance(exc, EOFError):
        return "truncated file"
    detail = message.splitlines()[0][:120] if message else type(exc).__name__
    return f"corrupt image ({detail})"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to a new 8-bit RGB image."""
    mode = img.mode
    if mode in _ALPHA_MODES or (mode in {"P", "L", "RGB"} and "transparency" in img.info):
        # Alpha on black would turn transparent logos into black squares; white matches
        # how such images are displayed almost everywhere.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _gray_array_to_rgb(_scale_integer(np.asarray(img)))
    if mode == "F":
        return _gray_array_to_rgb(_scale_float(np.asarray(img, dtype=np.float64)))
    if mode == "RGB":
        return img.copy()
    return img.convert("RGB")


def _scale_integer(values: np.ndarray) -> np.ndarray:
    """Map integer gray data (H, W) to uint8: 16-bit range when it fits, else min-max."""
    values = values.astype(np.int64)
    if values.size and values.min() >= 0 and values.max() <= 65535:
        # 65535 / 257 == 255 exactly, so full-scale white stays white.
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    return _min_max(values.astype(np.float64))


def _scale_float(values: np.ndarray) -> np.ndarray:
    """Map float gray data (H, W) to uint8, assuming [0, 1] or [0, 255] when it fits."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(values).astype(np.uint8)
    return _min_max(values)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_array_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray), mode="L").convert("RGB")


@dataclass
class SkipLog:
    """Files that were skipped, with the reason for each. Picklable.

    Attributes:
        entries: ``(path, reason)`` pairs in the order they were added.
    """

    entries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | os.PathLike[str], reason: str) -> None:
        self.entries.append((str(path), str(reason)))

    def extend(self, other: SkipLog | Iterable[tuple[str, str]]) -> None:
        items = other.entries if isinstance(other, SkipLog) else other
        for path, reason in items:
            self.add(path, reason)

    @property
    def count(self) -> int:
        return len(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def distinct(self) -> SkipLog:
        """The first entry of each path, in order (a file drawn in several epochs is one skipped file)."""
        first: dict[str, str] = {}
        for path, reason in self.entries:
            first.setdefault(path, reason)
        return SkipLog(list(first.items()))

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write ``[{"path": ..., "reason": ...}, ...]`` (an empty list when nothing was skipped)."""
        rows = [{"path": p, "reason": r} for p, r in self.entries]
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")

    @classmethod
    def read_json(cls, path: str | os.PathLike[str]) -> SkipLog:
        """The entries :meth:`write_json` wrote; empty when the file is missing or unreadable."""
        try:
            rows = json.loads(Path(path).read_text())
            return cls([(str(row["path"]), str(row["reason"])) for row in rows])
        except (OSError, ValueError, TypeError, KeyError):
            return cls()

    def by_reason(self) -> dict[str, int]:
        """Number of skipped files per reason, most frequent first."""
        return dict(Counter(reason for _, reason in self.entries).most_common())

    def summary(self, max_items: int = 10) -> str:
        """One line with the count and reasons, then up to ``max_items`` example paths."""
        noun = "file" if self.count == 1 else "files"
        if not self.entries:
            return "skipped 0 files"
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason().items())
        lines = [f"skipped {self.count} {noun}: {reasons}"]
        lines += [f"  {path}: {reason}" for path, reason in self.entries[:max_items]]
        if self.count > max_items:
            lines.append(f"  ... and {self.count - max_items} more")
        return "\n".join(lines)
