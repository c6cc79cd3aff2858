"""The built-in Fashion-MNIST data: IDX parsing, the shipped slice, the Debian files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from openseer.data import builtin
from openseer.data.builtin import (
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    BuiltinSplit,
    load_builtin,
    read_idx,
)
from openseer.data.folders import DataError


def _idx(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx(images, 0x08)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path)
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 4)
    assert torch.equal(out, torch.from_numpy(images))


def test_read_idx_big_endian_types(tmp_path):
    values = np.array([-5, 0, 70000], dtype=">i4")
    (tmp_path / "i.idx").write_bytes(_idx(values, 0x0C))
    assert read_idx(tmp_path / "i.idx").tolist() == [-5, 0, 70000]
    floats = np.array([[0.5, -1.25]], dtype=">f4")
    (tmp_path / "f.idx").write_bytes(_idx(floats, 0x0D))
    assert read_idx(tmp_path / "f.idx").tolist() == [[0.5, -1.25]]


def test_read_idx_rejects_bad_files(tmp_path):
    good = _idx(np.zeros((2, 2), dtype=np.uint8), 0x08)
    cases = {
        "magic": b"\x01\x02" + good[2:],
        "type": good[:2] + b"\x42" + good[3:],
        "short": good[:-1],
        "long": good + b"\0",
        "header": good[:6],
        "gzip": b"\x1f\x8b" + b"not really gzip",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=name if name in {"magic", "header"} else None):
            read_idx(tmp_path / name)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


@pytest.mark.parametrize(("split", "per_class"), [("train", 1000), ("test", 200)])
def test_shipped_slice(split, per_class):
    data = load_builtin(split, full=False)
    assert isinstance(data, BuiltinSplit)
    assert data.source == "Fashion-MNIST (shipped slice)"
    assert data.images.shape == (10 * per_class, 3, 28, 28)
    assert data.images.dtype == torch.uint8 and data.targets.dtype == torch.int64
    assert data.classes == FASHION_MNIST_CLASSES and len(data.classes) == 10
    assert torch.bincount(data.targets, minlength=10).tolist() == [per_class] * 10
    assert torch.equal(data.images[:, 0], data.images[:, 2])
    assert data.images.float().std() > 10  # real pictures, not a zero placeholder


def test_full_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_builtin("train", full=True)
    assert load_builtin("test").source == "Fashion-MNIST (shipped slice)"
    with pytest.raises(ValueError):
        load_builtin("val")  # type: ignore[arg-type]


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.exists(),
    reason=f"{DEBIAN_FASHION_MNIST} does not exist (apt-get install -y dataset-fashion-mnist)",
)
def test_full_debian_data_and_slice_agree():
    full = load_builtin("test", full=True)
    assert full.source == "Fashion-MNIST (Debian, full)"
    assert full.images.shape == (10000, 3, 28, 28) and full.targets.shape == (10000,)
    assert torch.bincount(full.targets).tolist() == [1000] * 10
    assert load_builtin("test").source == full.source
    # The slice is the first 200 test images of each class, in file order.
    first = torch.cat([torch.nonzero(full.targets == c).flatten()[:200] for c in range(10)])
    first = first.sort().values
    shipped = load_builtin("test", full=False)
    assert torch.equal(shipped.images, full.images[first])
    assert torch.equal(shipped.targets, full.targets[first])
    train = load_builtin("train", full=True)
    assert train.images.shape == (60000, 3, 28, 28)
