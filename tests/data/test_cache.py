"""Decoding to uint8 tensors and the on-disk cache of the result: chunked fills, memory-mapped reads, resumption,
the disk check, and JPEGs decoded at reduced size close to the full decode."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from support.photos import MEAN_TOLERANCE, P99_TOLERANCE, photo_jpeg, synthetic_photo
from torchvision.transforms.v2 import functional as TF

from openseer.data import cache
from openseer.data.cache import cached_decode, decode_square, decode_to_uint8, default_cache_dir
from openseer.data.folders import DataError
from openseer.data.images import load_rgb


def _files(root: Path) -> list[Path]:
    """Four decodable images of assorted shapes around one broken file (index 2)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (size, colour) in enumerate([((8, 8), (255, 0, 0)), ((30, 12), (0, 255, 0))]):
        paths.append(root / f"{i}.png")
        Image.new("RGB", size, colour).save(paths[-1])
    paths.append(root / "broken.jpg")
    paths[-1].write_text("not an image")
    # 40x20: black 10-pixel borders left and right of a white 20x20 centre
    bordered = np.zeros((20, 40, 3), dtype=np.uint8)
    bordered[:, 10:30] = 255
    paths.append(root / "bordered.png")
    Image.fromarray(bordered).save(paths[-1])
    paths.append(root / "tiny.bmp")
    Image.new("L", (1, 1), 7).save(paths[-1])
    return paths


def test_decode_resizes_crops_and_skips(tmp_path):
    paths = _files(tmp_path / "img")
    images, kept, skipped = decode_to_uint8(paths, size=16, num_threads=2)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    assert images.is_contiguous()
    assert kept.dtype == torch.int64 and kept.tolist() == [0, 1, 3, 4]
    assert skipped.entries == [(str(paths[2]), "not an image")]
    assert images[0, 0].eq(255).all() and images[0, 1:].eq(0).all()
    assert images[1, 1].eq(255).all()
    assert images[2].eq(255).all()  # centre crop removed the black borders
    assert images[3].eq(7).all()


def test_decode_empty_and_progress(tmp_path):
    images, kept, skipped = decode_to_uint8([], size=8)
    assert images.shape == (0, 3, 8, 8) and kept.shape == (0,) and len(skipped) == 0
    images, kept, _ = decode_to_uint8(_files(tmp_path)[:1], size=8, progress=True)
    assert images.shape == (1, 3, 8, 8)
    with pytest.raises(ValueError):
        decode_to_uint8([], size=0)


def _no_decoding(*args, **kwargs):
    raise AssertionError("the cache should have been used")


def _entries(store: Path) -> list[Path]:
    """The complete cache entries (their indexes) in ``store``."""
    return sorted(p for p in store.iterdir() if p.name.endswith(".json") and ".progress" not in p.name)


def test_cache_round_trips_and_is_reused(tmp_path, monkeypatch):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    first = cached_decode(paths, 12, store)
    key = cache.cache_key(paths, 12)
    assert sorted(p.name for p in store.iterdir()) == [f"{key}.json", f"{key}.lock", f"{key}.u8"]
    assert (store / f"{key}.u8").stat().st_size == 4 * 3 * 12 * 12  # raw rows, nothing else
    index = json.loads((store / f"{key}.json").read_text())
    assert index["rows"] == 4 and index["skipped"] == [[2, str(paths[2]), "not an image"]]
    stamp = (store / f"{key}.u8").stat().st_mtime_ns
    monkeypatch.setattr(cache, "decode_square", _no_decoding)
    second = cached_decode(paths, 12, store)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert second[1].tolist() == [0, 1, 3, 4] and second[0].shape == (4, 3, 12, 12)
    assert second[2].entries == first[2].entries == [(str(paths[2]), "not an image")]
    assert (store / f"{key}.u8").stat().st_mtime_ns == stamp
    assert len(list(store.iterdir())) == 3  # no temporary files left behind


def test_cache_rebuilt_when_a_file_or_size_changes(tmp_path):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    before, _, _ = cached_decode(paths, 8, store)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # mtime certainly differs from the first write
    after, _, _ = cached_decode(paths, 8, store)
    assert after[0, 2].eq(255).all() and before[0, 0].eq(255).all()
    assert len(_entries(store)) == 2
    resized, _, _ = cached_decode(paths, 4, store)
    assert resized.shape == (4, 3, 4, 4) and len(_entries(store)) == 3


@pytest.mark.parametrize("damage", ["garbage index", "short data", "missing data", "other format"])
def test_damaged_cache_is_rebuilt(tmp_path, caplog, damage):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    good, kept, _ = cached_decode(paths, 8, store)
    good = good.clone()
    key = cache.cache_key(paths, 8)
    index, data = store / f"{key}.json", store / f"{key}.u8"
    if damage == "garbage index":
        index.write_bytes(b"\x00garbage")
    elif damage == "short data":
        data.write_bytes(data.read_bytes()[:-1])
    elif damage == "missing data":
        data.unlink()
    else:
        index.write_text(index.read_text().replace(f'"format": {cache.FORMAT_VERSION}', '"format": 1'))
    with caplog.at_level(logging.WARNING, logger="openseer.data.cache"):
        rebuilt, rebuilt_kept, _ = cached_decode(paths, 8, store)
    assert "rebuilding" in caplog.text
    assert torch.equal(rebuilt, good) and torch.equal(rebuilt_kept, kept)
    assert data.stat().st_size == good.numel()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENSEER_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("OPENSEER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "openseer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "openseer"


def test_pixel_limit_skips_large_images_and_keys_the_cache(tmp_path):
    paths = _files(tmp_path / "img")
    big = tmp_path / "img" / "big.png"
    Image.new("RGB", (40, 40), (0, 255, 0)).save(big)
    store = tmp_path / "cache"
    good = [i for i, p in enumerate(paths) if p.name != "broken.jpg"]  # all at most 800 pixels
    _, kept, skipped = cached_decode([*paths, big], 8, store, max_pixels=1000)
    assert kept.tolist() == good and "decompression bomb" in dict(skipped.entries)[str(big)]
    _, kept, _ = cached_decode([*paths, big], 8, store)  # the default limit: another cache entry
    assert kept.tolist() == [*good, len(paths)] and len(_entries(store)) == 2


# ============ chunked fills, memory-mapped reads, resumption, the disk check ============


def _many(root: Path, n: int, bad_every: int = 37) -> list[Path]:
    """``n`` small images, PNG and JPEG, with an undecodable file every ``bad_every`` (chunk edges included)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        if i % bad_every == bad_every - 1:
            paths.append(root / f"{i:04d}.jpg")
            paths[-1].write_bytes(b"\xff\xd8\xff not really")
            continue
        pixels = rng.integers(0, 256, (3 + i % 5, 4, 3), dtype=np.uint8)
        img = Image.fromarray(pixels).resize((24 + i % 7, 18 + i % 5), Image.Resampling.NEAREST)
        paths.append(root / f"{i:04d}.{'png' if i % 2 else 'jpg'}")
        img.save(paths[-1])
    return paths


def _mapped(path: Path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


def test_chunked_fill_matches_the_in_memory_decode_and_is_memory_mapped(tmp_path, monkeypatch):
    paths = _many(tmp_path / "img", 300)
    monkeypatch.setattr(cache, "_CHUNK", 16)
    images, kept, skipped = cached_decode(paths, 20, tmp_path / "cache", num_threads=2)
    bad = [i for i in range(300) if i % 37 == 36]
    assert kept.tolist() == [i for i in range(300) if i not in bad]
    assert [p for p, _ in skipped.entries] == [str(paths[i]) for i in bad]
    reference, ref_kept, _ = decode_to_uint8(paths, 20, num_threads=2)
    assert torch.equal(images, reference) and torch.equal(kept, ref_kept)
    for row in (0, 15, 16, 35, len(kept) - 1):  # rows at chunk edges and around a skipped file
        assert torch.equal(images[row], decode_square(paths[kept[row]], 20))
    data = tmp_path / "cache" / f"{cache.cache_key(paths, 20)}.u8"
    if Path("/proc/self/maps").exists():
        assert _mapped(data)  # the rows are read from the file, not loaded into memory


def test_the_training_stream_reads_rows_of_the_memory_mapped_cache(tmp_path):
    from openseer.data.multicrop import AugmentSpec, CropSpec
    from openseer.train.data import TensorBatches

    paths = _many(tmp_path / "img", 40)
    images, _, _ = cached_decode(paths, 16, tmp_path / "cache")
    stream = dict(batch_size=8, crops=[CropSpec(12, 2, (0.5, 1.0))], aug=AugmentSpec(), seed=3)
    mapped = TensorBatches(images, **stream)
    in_memory = TensorBatches(images.clone(), **stream)
    assert mapped.images.data_ptr() == images.data_ptr()  # no copy of the set
    for got, expected in zip(mapped.epoch(1), in_memory.epoch(1), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    # a part of the set (the training rows of a labelled folder) without copying it out first
    rows = torch.arange(1, len(images), 2)
    part, copied = TensorBatches(images, **stream, rows=rows), TensorBatches(images[rows], **stream)
    assert part.steps_per_epoch == copied.steps_per_epoch == len(rows) // 8
    for got, expected in zip(part.epoch(0), copied.epoch(0), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


class _Interrupt(BaseException):
    """What Ctrl-C or a killed job does to a fill: a BaseException the cache must not swallow."""


def test_an_interrupted_fill_is_never_used_and_resumes(tmp_path, monkeypatch):
    paths = _many(tmp_path / "img", 100)
    store = tmp_path / "cache"
    monkeypatch.setattr(cache, "_CHUNK", 16)
    real = cache.decode_square
    calls = []

    def interrupted(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 40:  # in the third chunk
            raise _Interrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache, "decode_square", interrupted)
    with pytest.raises(_Interrupt):
        cached_decode(paths, 10, store, num_threads=1)
    key = cache.cache_key(paths, 10)
    assert not (store / f"{key}.json").exists() and not (store / f"{key}.u8").exists()
    progress = json.loads((store / f"{key}.progress.json").read_text())
    assert progress["done"] == 32 and progress["rows"] == 32 - len([i for i in range(32) if i % 37 == 36])
    (store / f"{key}.u8.partial").open("ab").write(b"rows of the chunk that never finished")

    calls.clear()
    monkeypatch.setattr(
        cache, "decode_square", lambda path, *a, **k: calls.append(path) or real(path, *a, **k)
    )
    images, kept, skipped = cached_decode(paths, 10, store, num_threads=1)
    assert calls == paths[32:]  # only what the first fill had not committed
    fresh = decode_to_uint8(paths, 10)
    assert (
        torch.equal(images, fresh[0]) and torch.equal(kept, fresh[1]) and skipped.entries == fresh[2].entries
    )
    assert sorted(p.name for p in store.iterdir()) == [f"{key}.json", f"{key}.lock", f"{key}.u8"]


def test_an_old_pt_cache_is_ignored(tmp_path, monkeypatch):
    """Format 1 kept the whole set in one torch.save'd .pt file; its key differs, and it is never read."""
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    store.mkdir()
    with monkeypatch.context() as old:
        old.setattr(cache, "FORMAT_VERSION", 1)
        old_file = store / f"{cache.cache_key(paths, 8)}.pt"
    torch.save(
        {"images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "kept": torch.arange(4), "skipped": []},
        old_file,
    )
    monkeypatch.setattr(torch, "load", _no_decoding)
    images, kept, _ = cached_decode(paths, 8, store)
    expected, expected_kept, _ = decode_to_uint8(paths, 8)
    assert torch.equal(images, expected) and torch.equal(kept, expected_kept)
    assert old_file.exists() and len(_entries(store)) == 1


def test_no_room_on_disk_is_a_clear_error_before_decoding(tmp_path, monkeypatch):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda _: SimpleNamespace(total=1000, used=0, free=1000))
    monkeypatch.setattr(cache, "decode_square", _no_decoding)
    with pytest.raises(DataError) as info:
        cached_decode(paths, 100, store)
    message = str(info.value)
    assert str(store) in message and str(5 * 3 * 100 * 100) in message and "data.cache_size=null" in message
    assert cache.cache_bytes(100_000, 160) == 100_000 * 3 * 160 * 160
    assert [p.suffix for p in store.iterdir()] == [".lock"]


def test_an_unwritable_cache_folder_is_a_clear_error(tmp_path):
    paths = _files(tmp_path / "img")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(DataError, match="OPENSEER_CACHE"):
        cached_decode(paths, 8, tmp_path / "a-file" / "cache")


# ============ what the cache stores: JPEGs decoded at reduced size ============


def _v1_square(path: Path, size: int) -> torch.Tensor:
    """Format 1's decode: the whole file, centre square, bilinear antialiased resize."""
    img = load_rgb(path)
    side = min(img.size)
    return TF.pil_to_tensor(TF.resize(TF.center_crop(img, [side, side]), [size, size], antialias=True))


@pytest.mark.parametrize(("width", "height"), [(33, 20), (41, 64), (97, 97)])
def test_files_decoded_whole_keep_the_pixels_of_format_1(tmp_path, width, height):
    picture = synthetic_photo(width, height, seed=width)
    png, jpeg = tmp_path / "a.png", tmp_path / "a.jpg"
    picture.save(png)
    picture.save(jpeg, quality=90)
    for size in (8, 16, min(width, height)):
        assert torch.equal(decode_square(png, size), _v1_square(png, size))
        assert torch.equal(decode_square(jpeg, size, reduce=False), _v1_square(jpeg, size))


@pytest.mark.parametrize(
    ("width", "height", "orientation", "size"),
    [
        (640, 480, 1, 120),  # exactly 1/4: the reduced decode is the stored square, no filter after it
        (1007, 591, 6, 128),  # odd sizes, the phones' usual rotation
        (2047, 1535, 3, 160),
        (600, 1400, 8, 112),
        (517, 1201, 5, 96),
        (4000, 3000, 1, 160),
    ],
)
def test_reduced_decode_stores_nearly_the_pixels_of_the_full_decode(
    tmp_path, width, height, orientation, size
):
    path = photo_jpeg(tmp_path / "p.jpg", width, height, seed=width, orientation=orientation)
    assert min(load_rgb(path, min_side=size).size) < min(width, height) // 2  # the draft did reduce it
    reduced = decode_square(path, size).numpy().astype(np.int16)
    full = decode_square(path, size, reduce=False).numpy().astype(np.int16)
    error = np.abs(reduced - full)
    assert error.mean() <= MEAN_TOLERANCE and np.percentile(error, 99) <= P99_TOLERANCE, (
        error.mean(),
        np.percentile(error, 99),
    )


_MEMORY_PROBE = """
import contextlib, re, sys
from pathlib import Path

import torch

from openseer.data import cache
from openseer.data.multicrop import AugmentSpec, CropSpec
from openseer.train.data import TensorBatches

paths = sorted(Path(sys.argv[1]).iterdir())
store, side = Path(sys.argv[2]), int(sys.argv[3])
cache._CHUNK = 16
crops = dict(batch_size=8, crops=[CropSpec(16, 2, (0.5, 1.0))], aug=AugmentSpec(), seed=0)


def status_mib(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def peak_growth(work):  # how far running work raises the resident high-water mark above the memory before it
    # VmHWM is this process's own; getrusage's maximum would also count the parent's from before the exec
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    before = max(status_mib("VmHWM"), status_mib("VmRSS"))
    work()
    return status_mib("VmHWM") - before


def resident_mib():  # (anonymous memory, pages of mapped files, the cache's among them)
    return [status_mib("RssAnon"), status_mib("RssFile")]


def grown(before):
    return [now - then for now, then in zip(resident_mib(), before)]


small, _, _ = cache.cached_decode(paths[:40], side, store / "warm-up")  # threads, decoders, allocator
for _ in zip(range(2), TensorBatches(small.clone(), **crops).epoch(0)):  # and the augmentation's code
    pass
fill = peak_growth(lambda: cache.cached_decode(paths, side, store))
in_memory = peak_growth(lambda: cache.decode_to_uint8(paths, side))
before = resident_mib()
images, kept, _ = cache.cached_decode(paths, side, store)  # read back
opened = sum(grown(before))
for _ in zip(range(2), TensorBatches(images, **crops).epoch(0)):
    pass
streamed = grown(before)[0]
assert images.sum(dtype=torch.int64) > 0
touched_anon, touched_file = grown(before)
print(fill, in_memory, opened, streamed, touched_anon, touched_file)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from Linux's /proc")
def test_filling_and_reading_a_cache_holds_one_chunk_not_the_set(tmp_path):
    """A subprocess measures its own memory: filling a 300-image cache in chunks of 16 raises the resident
    high-water mark by far less than the set, while the same set decoded into memory (the control) raises it
    by the whole set, which shows that the measure sees what it should. Opening the cache maps the file
    without reading it; the training stream copies only the rows it draws (the kernel may map more of the file
    around them: page cache, not the process's own memory); reading every row maps the whole file."""
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(300):
        synthetic_photo(64, 48, seed=i).save(folder / f"{i:03d}.jpg", quality=80)
    side = 256
    set_mib = 300 * 3 * side * side / 2**20  # 56 MiB; a chunk is 3 MiB
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(folder), str(tmp_path / "cache"), str(side)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    fill, in_memory, opened, streamed, touched_anon, touched_file = map(float, run.stdout.split())
    assert in_memory > 0.75 * set_mib, (in_memory, set_mib)  # the control: holding the set shows
    assert fill < 0.3 * set_mib, (fill, set_mib)
    assert opened < 0.1 * set_mib and streamed < 0.25 * set_mib, (opened, streamed, set_mib)
    # reading every row maps the whole file and copies none of it: it was mapped, not loaded
    assert touched_file > 0.9 * set_mib and touched_anon < 0.25 * set_mib, (
        touched_file,
        touched_anon,
        set_mib,
    )
