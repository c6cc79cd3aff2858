"""Decoded-image cache: decode and resize every file once, then augment uint8 tensors.

JPEG decoding dominates the data-loading cost of small-image pretraining; keeping the
decoded, resized pixels on disk makes later epochs and runs nearly free.

On disk, in the cache folder, one entry per (file list, side, pixel limit, format version) key:

* ``<key>.u8``: the decoded images, raw uint8 rows of shape (M, 3, S, S), C order; read back memory-mapped, so
  a cache larger than RAM is paged in as batches touch it instead of being loaded whole;
* ``<key>.json``: its index, ``{"format", "size", "paths" (N), "done" (N), "rows" (M), "skipped": [[index, path,
  reason], ...]}``; row i of the images is the i-th file not skipped. Written last: an entry without it is
  incomplete and never used;
* while filling: ``<key>.u8.partial`` and ``<key>.progress.json`` (the same fields, ``done`` < N), extended chunk
  by chunk, so that an interrupted fill resumes where it stopped; ``<key>.lock`` keeps two processes (the ranks
  of one machine) from filling the same entry at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, NamedTuple

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from openseer.data.folders import DataError
from openseer.data.images import DEFAULT_MAX_PIXELS, BadImageError, SkipLog, load_rgb_reduced
from openseer.fileio.atomic import atomic_write_text

try:  # POSIX; elsewhere concurrent fills of one entry are not guarded
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

# Bump whenever the decoding or stored layout changes, so stale caches are not reused.
# 2: JPEGs decoded at reduced size (DCT scaling) before the resize; memory-mapped raw rows and a JSON index.
FORMAT_VERSION = 2

# Files decoded per chunk: the fill holds one chunk of decoded rows in memory, whatever the set's size.
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


def decode_square(
    path: str | os.PathLike[str], size: int, max_pixels: int = DEFAULT_MAX_PIXELS, reduce: bool = True
) -> torch.Tensor:
    """(3, size, size) uint8: shorter side resized to ``size`` (bilinear, antialiased), then centre-cropped.

    ``reduce``: a JPEG at least twice ``size`` on its shorter side is decoded at 1/2, 1/4 or 1/8 scale first
    (never below ``size``; :func:`openseer.data.images.load_rgb`), which changes the pixels by about as much
    as another resampling filter would; ``False`` decodes every file whole.

    Raises:
        BadImageError: the file cannot be decoded.
    """
    img, (width, height), (x0, y0, x1, y1) = load_rgb_reduced(path, max_pixels, size if reduce else None)
    side = min(width, height)
    # torchvision's centre_crop rounding: a file decoded whole keeps the pixels it always had
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    box = (x0 + left * sx, y0 + top * sy, x0 + (left + side) * sx, y0 + (top + side) * sy)
    # Cropping the central square first equals "resize shorter side, then centre-crop", but never
    # materialises a huge intermediate for extreme aspect ratios. The crop is whole pixels around the
    # square (a reduced JPEG puts it between pixels), so the resize filter never reaches past it.
    outer = (
        max(0, math.floor(box[0])),
        max(0, math.floor(box[1])),
        min(img.width, math.ceil(box[2])),
        min(img.height, math.ceil(box[3])),
    )
    inner = (
        box[0] - outer[0],
        box[1] - outer[1],
        min(box[2], outer[2]) - outer[0],
        min(box[3], outer[3]) - outer[1],
    )
    square = img.crop(outer).resize((size, size), Image.Resampling.BILINEAR, box=inner)
    return TF.pil_to_tensor(square)


def _decode_chunks(
    paths: Sequence[Path],
    size: int,
    num_threads: int,
    max_pixels: int,
    chunk: int,
    first: int = 0,
    bar: object | None = None,
) -> Iterator[tuple[torch.Tensor, list[int], list[tuple[int, str, str]]]]:
    """Decode ``paths[first:]`` ``chunk`` files at a time.

    Yields, per chunk: its decoded rows (K, 3, size, size) uint8, a view of one buffer reused for every chunk
    (valid until the next one is asked for); their indices into ``paths`` (K,); and the chunk's undecodable
    files as ``(index, path, reason)``.
    """
    buffer = torch.empty((max(1, min(chunk, len(paths) - first)), 3, size, size), dtype=torch.uint8)

    def decode(slot: int, path: Path) -> BadImageError | None:
        try:
            buffer[slot] = decode_square(path, size, max_pixels)
        except BadImageError as err:
            return err
        return None

    # Threads suffice: PIL releases the GIL while decoding and resizing.
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        for start in range(first, len(paths), chunk):
            part = paths[start : start + chunk]
            kept: list[int] = []
            skipped: list[tuple[int, str, str]] = []
            for slot, err in enumerate(pool.map(decode, range(len(part)), part)):
                if err is not None:
                    skipped.append((start + slot, err.path, err.reason))
                    continue
                if len(kept) != slot:  # close the gap a skipped file left (rows only ever move down)
                    buffer[len(kept)] = buffer[slot]
                kept.append(start + slot)
            if bar is not None:
                bar.update(len(part))
            yield buffer[: len(kept)], kept, skipped


def _progress_bar(total: int, initial: int, enabled: bool):  # noqa: ANN202 - a tqdm bar or None
    if not enabled:
        return None
    from tqdm.auto import tqdm  # optional dependency, only needed for the bar

    return tqdm(total=total, initial=initial, desc="decoding images", unit="img")


def _check(size: int, num_threads: int) -> None:
    if size < 1 or num_threads < 1:
        raise ValueError(f"size and num_threads must be >= 1, got {size}, {num_threads}")


def decode_to_uint8(
    paths: Sequence[str | os.PathLike[str]],
    size: int,
    num_threads: int = 2,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Decode ``paths`` (N files) into square uint8 images held in memory; files above ``max_pixels`` are
    skipped as bombs. For sets larger than memory, :func:`cached_decode` fills a memory-mapped file instead.

    Returns:
        images: (M, 3, size, size) uint8, contiguous, for the M files that decoded.
        kept: (M,) int64 indices into ``paths`` of those files.
        skipped: the N - M files that could not be decoded, with reasons.
    """
    _check(size, num_threads)
    paths = [Path(p) for p in paths]
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    kept: list[int] = []
    skipped = SkipLog()
    bar = _progress_bar(len(paths), 0, progress)
    for rows, indices, bad in _decode_chunks(paths, size, num_threads, max_pixels, _CHUNK, bar=bar):
        images[len(kept) : len(kept) + len(rows)] = rows
        kept += indices
        skipped.extend((path, reason) for _, path, reason in bad)
    if bar is not None:
        bar.close()
    if skipped:
        logger.warning("%s", skipped.summary())
    # Clone so a partly-filled buffer does not keep the unused rows.
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
    """:func:`decode_to_uint8`, stored in and reused from ``cache_dir`` (the layout is in this module's docstring).

    The images come back memory-mapped from the cache file (read-only on disk: writing to the tensor changes
    only this process's copy of the touched pages); filling the cache holds one chunk of images in memory.
    A missing, incomplete or unreadable entry is (re)built; an interrupted fill resumes.

    Raises:
        DataError: the cache cannot be written there, or the disk has no room for it (the message names the
            folder, the bytes needed and the alternatives).
    """
    _check(size, num_threads)
    paths = [Path(p) for p in paths]
    files = _files(Path(cache_dir), cache_key(paths, size, max_pixels))
    found = _open(files, size, len(paths))
    if found is not None:
        logger.info("using decoded-image cache %s", files.data)
        return found
    try:
        files.lock.parent.mkdir(parents=True, exist_ok=True)
        lock = open(files.lock, "ab")  # noqa: SIM115 - held for the whole fill below
    except OSError as exc:
        raise DataError(
            f"cannot write the decoded-image cache in {files.lock.parent} ({exc}); point OPENSEER_CACHE at "
            "a writable folder, or decode each image as it is used instead (data.cache_size=null)"
        ) from exc
    with lock:
        _hold(lock, files.lock)
        found = _open(files, size, len(paths))  # another process may have filled it while we waited
        if found is not None:
            return found
        _fill(files, paths, size, num_threads, progress, max_pixels)
        found = _open(files, size, len(paths))
    if found is None:
        raise DataError(f"the decoded-image cache {files.data} could not be read back after filling it")
    if found[2]:
        logger.warning("%s", found[2].summary())
    return found


class _Files(NamedTuple):
    data: Path
    index: Path
    partial: Path
    progress: Path
    lock: Path


def _files(folder: Path, key: str) -> _Files:
    base = str(folder / key)
    return _Files(
        Path(f"{base}.u8"),
        Path(f"{base}.json"),
        Path(f"{base}.u8.partial"),
        Path(f"{base}.progress.json"),
        Path(f"{base}.lock"),
    )


@dataclass
class _State:
    """What a cache entry holds: the index (``done == paths``) or a fill's progress (``done < paths``)."""

    size: int
    paths: int
    done: int = 0
    rows: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    format: int = FORMAT_VERSION

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self)) + "\n")

    @classmethod
    def read(cls, path: Path, size: int, paths: int) -> _State:
        """The state stored at ``path``; ValueError (or OSError) unless it is whole and of this entry."""
        raw = json.loads(path.read_text())
        state = cls(
            size=int(raw["size"]),
            paths=int(raw["paths"]),
            done=int(raw["done"]),
            rows=int(raw["rows"]),
            skipped=[(int(i), str(p), str(r)) for i, p, r in raw["skipped"]],
            format=int(raw["format"]),
        )
        indices = [i for i, _, _ in state.skipped]
        valid = (
            (state.format, state.size, state.paths) == (FORMAT_VERSION, size, paths)
            and 0 <= state.done <= paths
            and state.rows + len(state.skipped) == state.done
            and indices == sorted(set(indices))
            and all(0 <= i < state.done for i in indices)
        )
        if not valid:
            raise ValueError(f"{path.name} does not describe this cache entry")
        return state


def _open(files: _Files, size: int, n: int) -> Decoded | None:
    """The complete entry, memory-mapped; None when there is none (or it is damaged: then it is rebuilt)."""
    if not files.index.exists():
        return None
    try:
        state = _State.read(files.index, size, n)
        if state.done != n:
            raise ValueError("the index describes an unfinished fill")
        nbytes = cache_bytes(state.rows, size)
        if files.data.stat().st_size != nbytes:
            raise ValueError(f"{files.data.name} holds {files.data.stat().st_size} bytes, expected {nbytes}")
        if state.rows:
            flat = torch.from_file(str(files.data), shared=False, size=nbytes, dtype=torch.uint8)
            images = flat.view(state.rows, 3, size, size)
        else:
            images = torch.empty((0, 3, size, size), dtype=torch.uint8)
    except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
        logger.warning("ignoring unreadable decoded-image cache %s (%s); rebuilding", files.index, exc)
        return None
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.tensor([i for i, _, _ in state.skipped], dtype=torch.int64)] = False
    kept = torch.nonzero(keep).flatten()
    return images, kept, SkipLog([(p, r) for _, p, r in state.skipped])


def _hold(lock: IO[bytes], path: Path) -> None:
    """Take the entry's lock (released when ``lock`` is closed), waiting while another process fills it."""
    if fcntl is None:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("waiting for another process filling the decoded-image cache (%s)", path)
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)


def _resume(files: _Files, size: int, n: int) -> _State:
    """The progress of an interrupted fill of this entry whose rows are all on disk, else a fresh start."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        state = _State.read(files.progress, size, n)
        if state.done < n and files.partial.stat().st_size >= cache_bytes(state.rows, size):
            return state
    return _State(size=size, paths=n)


def _fill(
    files: _Files,
    paths: Sequence[Path],
    size: int,
    num_threads: int,
    progress: bool,
    max_pixels: int,
) -> None:
    """Decode ``paths`` into the entry ``files``, appending one chunk at a time to the partial file."""
    state = _resume(files, size, len(paths))
    if state.done:
        logger.info("resuming the decoded-image cache at image %d of %d", state.done, len(paths))
    check_cache_space(files.data.parent, len(paths) - state.done, size)
    bar = _progress_bar(len(paths), state.done, progress)
    try:
        files.index.unlink(missing_ok=True)  # a stale index must never describe the rows written below
        with open(files.partial, "r+b" if state.done else "wb") as out:
            out.truncate(
                cache_bytes(state.rows, size)
            )  # rows past the last recorded chunk were never committed
            out.seek(cache_bytes(state.rows, size))
            for rows, kept, skipped in _decode_chunks(
                paths, size, num_threads, max_pixels, _CHUNK, state.done, bar
            ):
                out.write(memoryview(rows.numpy()).cast("B"))
                out.flush()
                os.fsync(out.fileno())  # the rows are durable before the progress that counts them
                state = replace(
                    state,
                    done=state.done + len(kept) + len(skipped),
                    rows=state.rows + len(kept),
                    skipped=state.skipped + skipped,
                )
                state.write(files.progress)
        os.replace(files.partial, files.data)
        state.write(files.index)
        files.progress.unlink(missing_ok=True)
    except OSError as exc:
        raise DataError(
            f"could not write the decoded-image cache {files.partial} ({exc}); a later run resumes it. Free "
            "some space, point OPENSEER_CACHE at another disk, or decode each image as it is used instead "
            "(data.cache_size=null)"
        ) from exc
    finally:
        if bar is not None:
            bar.close()
    logger.info("wrote decoded-image cache %s", files.data)


def cache_bytes(n_images: int, size: int) -> int:
    """Bytes the decoded-image cache of ``n_images`` files at side ``size`` takes at most (all decodable)."""
    return n_images * 3 * size * size


def check_cache_space(folder: str | os.PathLike[str], n_images: int, size: int) -> None:
    """Raise DataError, before anything is decoded, when ``folder``'s disk cannot hold ``n_images`` more rows."""
    needed = cache_bytes(n_images, size)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DataError(
            f"the decoded-image cache of {n_images} images at {size} px needs {needed} bytes "
            f"({needed / 2**30:.1f} GiB) in {folder}, which has {free} bytes ({free / 2**30:.1f} GiB) free; "
            "free some space, point OPENSEER_CACHE at a larger disk, or decode each image as it is used "
            "instead (data.cache_size=null)"
        )
