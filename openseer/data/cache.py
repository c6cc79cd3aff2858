"""Decoded-image cache: decode and resize every file once, then augment uint8 tensors.

JPEG decoding dominates the data-loading cost of small-image pretraining; keeping the
decoded, resized pixels on disk makes later epochs and runs nearly free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from openseer.data.images import DEFAULT_MAX_PIXELS, BadImageError, SkipLog, load_rgb
from openseer.fileio.atomic import atomic_write

logger = logging.getLogger(__name__)

# Bump whenever the decoding or stored layout changes, so stale caches are not reused.
FORMAT_VERSION = 1

# Bounds how many decoded images wait in memory for a slow neighbour.
_CHUNK = 512

Decoded = tuple[torch.Tensor, torch.Tensor, SkipLog]


def default_cache_dir() -> Path:
    """``$OPENSEER_CACHE``, else ``$XDG_CACHE_HOME/openseer``, else ``~/.cache/openseer``."""
    explicit = os.environ.get("OPENSEER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "openseer"


def _decode_one(path: Path, size: int, max_pixels: int) -> torch.Tensor | BadImageError:
    """(3, size, size) uint8: shorter side resized to ``size``, then centre-cropped."""
    try:
        img = load_rgb(path, max_pixels)
    except BadImageError as err:
        return err
    # Cropping the central square first equals "resize shorter side, then centre-crop",
    # but never materialises a huge intermediate for extreme aspect ratios.
    side = min(img.size)
    img = TF.center_crop(img, [side, side])
    img = TF.resize(img, [size, size], antialias=True)
    return TF.pil_to_tensor(img)


def decode_to_uint8(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    num_threads: int = 2,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Decode ``paths`` (N files) into square uint8 images; files above ``max_pixels`` are skipped as bombs.

    Returns:
        images: (M, 3, size, size) uint8, contiguous, for the M files that decoded.
        kept: (M,) int64 indices into ``paths`` of those files.
        skipped: the N - M files that could not be decoded, with reasons.
    """
    if size < 1 or num_threads < 1:
        raise ValueError(f"size and num_threads must be >= 1, got {size}, {num_threads}")
    paths = [Path(p) for p in paths]
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    kept: list[int] = []
    skipped = SkipLog()
    bar = None
    if progress:
        from tqdm.auto import tqdm  # optional dependency, only needed for the bar

        bar = tqdm(total=len(paths), desc="decoding images", unit="img")
    # Threads suffice: PIL releases the GIL while decoding and resizing.
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            results = pool.map(_decode_one, chunk, [size] * len(chunk), [max_pixels] * len(chunk))
            for index, result in enumerate(results, start=start):
                if isinstance(result, BadImageError):
                    skipped.add(result.path, result.reason)
                else:
                    images[len(kept)] = result
                    kept.append(index)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if skipped:
        logger.warning("%s", skipped.summary())
    # Clone so a partly-filled buffer does not keep (or save) the unused rows.
    images = images[: len(kept)].clone() if len(kept) < len(paths) else images
    return images, torch.tensor(kept, dtype=torch.int64), skipped


def cache_key(
    paths: Sequence[str | os.PathLike[str]], size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> str:
    """sha256 over the paths, their sizes and mtimes, ``size``, the pixel limit and the format version.

    The paths keep their given order: ``kept`` indexes into it, so a reordered list is a
    different cache entry.
    """
    files = []
    for p in paths:
        try:
            st = os.stat(p)
            files.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([str(p), -1, -1])
    settings = {"version": FORMAT_VERSION, "size": size}
    if max_pixels != DEFAULT_MAX_PIXELS:  # keys made before the limit was configurable stay valid
        settings["max_pixels"] = max_pixels
    blob = json.dumps({**settings, "files": files})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cached_decode(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    cache_dir: str | os.PathLike[str],
    num_threads: int = 2,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """:func:`decode_to_uint8`, stored in and reused from ``cache_dir/<key>.pt``.

    A missing or unreadable cache file is (re)built; failing to write one only logs.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{cache_key(paths, size, max_pixels)}.pt"
    if target.exists():
        loaded = _load(target, size)
        if loaded is not None:
            logger.info("using decoded-image cache %s", target)
            return loaded
    images, kept, skipped = decode_to_uint8(paths, size, num_threads, progress, max_pixels)
    payload = {"images": images, "kept": kept, "skipped": list(skipped.entries)}
    try:
        atomic_write(target, lambda f: torch.save(payload, f))
        logger.info("wrote decoded-image cache %s", target)
    except OSError as exc:
        logger.warning("could not write decoded-image cache %s: %s", target, exc)
    return images, kept, skipped


def _load(target: Path, size: int) -> Decoded | None:
    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)
        images, kept = payload["images"], payload["kept"]
        skipped = SkipLog([(str(p), str(r)) for p, r in payload["skipped"]])
        valid = (
            images.dtype == torch.uint8
            and images.ndim == 4
            and tuple(images.shape[1:]) == (3, size, size)
            and kept.dtype == torch.int64
            and kept.shape == (len(images),)
        )
        if not valid:
            raise ValueError("unexpected tensor shapes or types")
    except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
        logger.warning("ignoring unreadable decoded-image cache %s (%s); rebuilding", target, exc)
        return None
    return images.contiguous(), kept, skipped


