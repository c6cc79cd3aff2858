"""Decoding to uint8 tensors and the on-disk cache of the result."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openseer.data import cache
from openseer.data.cache import cached_decode, decode_to_uint8, default_cache_dir


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


def test_cache_round_trips_and_is_reused(tmp_path, monkeypatch):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    first = cached_decode(paths, 12, store)
    files = list(store.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    stamp = files[0].stat().st_mtime_ns
    monkeypatch.setattr(cache, "decode_to_uint8", _no_decoding)
    second = cached_decode(paths, 12, store)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert second[2].entries == first[2].entries == [(str(paths[2]), "not an image")]
    assert files[0].stat().st_mtime_ns == stamp
    assert list(store.iterdir()) == files  # no temp files left behind


def test_cache_rebuilt_when_a_file_or_size_changes(tmp_path):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    before, _, _ = cached_decode(paths, 8, store)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))  # mtime certainly differs from the first write
    after, _, _ = cached_decode(paths, 8, store)
    assert after[0, 2].eq(255).all() and before[0, 0].eq(255).all()
    assert len(list(store.iterdir())) == 2
    resized, _, _ = cached_decode(paths, 4, store)
    assert resized.shape == (4, 3, 4, 4) and len(list(store.iterdir())) == 3


def test_corrupt_cache_is_rebuilt(tmp_path, caplog):
    paths = _files(tmp_path / "img")
    store = tmp_path / "cache"
    good, kept, _ = cached_decode(paths, 8, store)
    (target,) = store.iterdir()
    target.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="openseer.data.cache"):
        rebuilt, rebuilt_kept, _ = cached_decode(paths, 8, store)
    assert "rebuilding" in caplog.text
    assert torch.equal(rebuilt, good) and torch.equal(rebuilt_kept, kept)
    assert torch.load(target, weights_only=True)["images"].shape == good.shape


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
    assert kept.tolist() == [*good, len(paths)] and len(list(store.iterdir())) == 2
