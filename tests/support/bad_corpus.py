"""A folder of the files that break image pipelines, each with what openseer should do with it.

Scraped collections hold truncated downloads, empty files, web pages saved as ``.jpg``, decompression bombs,
exotic colour modes, animations, symlink loops and files nobody may read. :func:`write_bad_corpus` writes one of
each next to a few good images and returns, per entry, its kind and the expected outcome:

* ``used``: an 8-bit RGB image, decoded as it is;
* ``converted``: decoded after a conversion (CMYK, 16 bits, alpha on white, EXIF rotation, first frame);
* ``skipped``: not decodable; every stage that reads images must skip and count it with ``reason``.

The tests and ``benchmarks/bad_inputs.py`` run every stage over this folder. Nothing large is ever allocated:
the bomb only *declares* 30000 x 30000 pixels in its header.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Outcome = Literal["used", "converted", "skipped"]

BOMB_SIDE = 30_000
LOOP_REASON = "symlink to a folder already listed: not followed"


@dataclass(frozen=True)
class CorpusEntry:
    """One file (or link) of the corpus.

    Attributes:
        path: where it was written.
        kind: what it is, e.g. ``"truncated JPEG"``.
        outcome: what the loader should do with it.
        reason: for ``skipped``, the reason the loader gives (``BadImageError.reason``); otherwise what the
            loader does to it.
        size: ``(width, height)`` of the decoded RGB image; ``None`` when skipped.
    """

    path: Path
    kind: str
    outcome: Outcome
    reason: str = ""
    size: tuple[int, int] | None = None

    @property
    def is_image_file(self) -> bool:
        """A file the folder listing returns (the symlink loop is a folder)."""
        return not self.path.is_dir()


def _noise(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid-looking PNG declaring ``side x side`` 8-bit grey pixels, with 64 bytes of image data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _one_pixel(path: Path, size: int) -> None:
    Image.new("RGB", (1, 1), (9, 8, 7)).save(path)


def _truncated_jpeg(path: Path, size: int) -> None:
    data = _encoded(_noise(size, size, 1), "JPEG", quality=95)
    path.write_bytes(data[: len(data) // 2])


def _zero_bytes(path: Path, size: int) -> None:
    path.write_bytes(b"")


def _web_page(path: Path, size: int) -> None:
    path.write_bytes(b"<html>404 Not Found</html>\n")


def _png_garbage(path: Path, size: int) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _bomb(path: Path, size: int) -> None:
    path.write_bytes(bomb_png())


def _cmyk_jpeg(path: Path, size: int) -> None:
    _noise(size, size, 2).convert("CMYK").save(path)


def _sixteen_bit_png(path: Path, size: int) -> None:
    ramp = np.linspace(0, 65535, size * size).astype(np.uint16).reshape(size, size)
    Image.fromarray(ramp).save(path)


def _palette_transparent_png(path: Path, size: int) -> None:
    img = _noise(size, size, 7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img.save(path, transparency=0)


def _gray_alpha_png(path: Path, size: int) -> None:
    _noise(size, size, 3).convert("LA").save(path)


def _exif_rotated_jpeg(path: Path, size: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated by 90 degrees
    _noise(size + 8, size, 8).save(path, exif=exif)


def _animated(path: Path, size: int) -> None:
    frames = [Image.new("RGB", (size, size), colour) for colour in ((200, 30, 30), (30, 30, 200))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, lossless=True)


def _unreadable(path: Path, size: int) -> None:
    _noise(size, size, 9).save(path, format="JPEG")
    path.chmod(0)


def _symlink_loop(path: Path, size: int) -> None:
    os.symlink(".", path, target_is_directory=True)  # the folder holding the link: following it recurses


Writer = Callable[[Path, int], None]
Decoded = Callable[[int], tuple[int, int] | None]
_SQUARE: Decoded = lambda s: (s, s)  # noqa: E731
_NONE: Decoded = lambda s: None  # noqa: E731

# (kind, file name, writer, outcome, reason, decoded (width, height) for an image side s)
SPECIAL: list[tuple[str, str, Writer, Outcome, str, Decoded]] = [
    ("1x1 pixel", "one_pixel.png", _one_pixel, "used", "", lambda s: (1, 1)),
    ("truncated JPEG", "truncated.jpg", _truncated_jpeg, "skipped", "truncated file", _NONE),
    ("zero-byte file", "empty.jpg", _zero_bytes, "skipped", "empty file", _NONE),
    ("text file named .jpg", "page.jpg", _web_page, "skipped", "not an image", _NONE),
    ("PNG header then garbage", "garbage.png", _png_garbage, "skipped", "not an image", _NONE),
    (
        f"decompression bomb ({BOMB_SIDE}x{BOMB_SIDE} declared)",
        "bomb.png",
        _bomb,
        "skipped",
        f"decompression bomb: {BOMB_SIDE * BOMB_SIDE} pixels > limit",
        _NONE,
    ),
    ("CMYK JPEG", "cmyk.jpg", _cmyk_jpeg, "converted", "CMYK to RGB", _SQUARE),
    ("16-bit PNG", "gray16.png", _sixteen_bit_png, "converted", "16-bit grey scaled to 8 bits", _SQUARE),
    (
        "palette PNG with transparency",
        "palette_alpha.png",
        _palette_transparent_png,
        "converted",
        "transparency composited on white",
        _SQUARE,
    ),
    (
        "grayscale+alpha PNG",
        "gray_alpha.png",
        _gray_alpha_png,
        "converted",
        "alpha composited on white",
        _SQUARE,
    ),
    (
        "EXIF-rotated JPEG",
        "rotated.jpg",
        _exif_rotated_jpeg,
        "converted",
        "EXIF rotation applied",
        lambda s: (s, s + 8),
    ),
    ("animated GIF", "animated.gif", _animated, "converted", "first of 2 frames", _SQUARE),
    ("animated WebP", "animated.webp", _animated, "converted", "first of 2 frames", _SQUARE),
    ("unreadable file (chmod 000)", "locked.jpg", _unreadable, "skipped", "permission denied", _SQUARE),
    ("symlink loop", "loop", _symlink_loop, "skipped", LOOP_REASON, _NONE),
]


def write_bad_corpus(folder: str | os.PathLike[str], good: int = 3, size: int = 24) -> list[CorpusEntry]:
    """Write ``good`` RGB JPEGs and ``good`` RGB PNGs of ``size`` px plus one entry of every kind in SPECIAL.

    The unreadable file is ``chmod 000``; where this process can read it all the same (root), its outcome is
    ``used``, with a reason that says so. Returns the entries in writing order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(good):
        for ext, kind in (("jpg", "good RGB JPEG"), ("png", "good RGB PNG")):
            path = folder / f"good_{i}.{ext}"
            _noise(size, size, 100 + i).save(path)
            entries.append(CorpusEntry(path, kind, "used", "", (size, size)))
    for kind, name, write, outcome, reason, decoded in SPECIAL:
        path = folder / name
        write(path, size)
        if reason == "permission denied" and os.access(path, os.R_OK):
            outcome, reason = "used", "chmod 000, yet readable by this process (root)"
        entries.append(
            CorpusEntry(path, kind, outcome, reason, decoded(size) if outcome != "skipped" else None)
        )
    return entries
