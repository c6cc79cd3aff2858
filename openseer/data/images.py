"""Robust image decoding: any file in, an 8-bit RGB ``PIL.Image`` or a ``BadImageError`` out.

Large scraped image collections always contain broken files; pretraining must skip them
with a reason instead of crashing a DataLoader worker hours into a run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


def load_rgb(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into a fully loaded 8-bit RGB image (size ``W x H``, mode ``"RGB"``).

    EXIF orientation is applied, transparency is composited on white, 16-bit and float
    data are rescaled to 0..255, and animated files yield their first frame.

    Raises:
        BadImageError: for every kind of failure (never any other exception type).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "empty file")
        with Image.open(path) as img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise BadImageError(path, f"zero-size image ({width}x{height})")
            if width * height > max_pixels:
                raise BadImageError(path, f"decompression bomb: {width * height} pixels > limit")
            img.load()  # decode now so truncated data fails here, not in a transform
            _apply_orientation(img, path)
            return _to_rgb(img)
    except BadImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise arbitrary types on junk input
        raise BadImageError(path, _reason(exc)) from exc


def _apply_orientation(img: Image.Image, path: Path) -> None:
    """Rotate ``img`` in place per its EXIF tag; broken EXIF keeps the pixels as stored."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # noqa: BLE001 - a bad metadata block should not drop the image
        logger.debug("ignoring unreadable EXIF orientation in %s: %s", path, exc)


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
