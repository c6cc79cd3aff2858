"""The built-in default dataset: Fashion-MNIST (MIT licence, Copyright (c) 2017 Zalando SE).

The full data comes from Debian's ``dataset-fashion-mnist`` package when installed; a
balanced slice ships inside the package so that everything works offline and in CI.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from openseer.data.folders import DataError

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

SLICE_PACKAGE = "openseer.assets.fashion_mnist"
SLICE_NAME = "slice.npz"

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX type codes; all multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass
class BuiltinSplit:
    """One split of the built-in dataset.

    Attributes:
        images: (N, 3, H, W) uint8 RGB (the grayscale channel repeated three times).
        targets: (N,) int64 class indices.
        classes: class names, indexed by target.
        source: short description of where the data came from.
    """

    images: torch.Tensor
    targets: torch.Tensor
    classes: list[str]
    source: str


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Parse an IDX file (gzipped or not) into a tensor of its declared shape and type.

    Raises:
        DataError: the file is missing, truncated or not an IDX file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the suffix says
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"not an IDX file (bad magic number): {path}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"not an IDX file (bad header): {path}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes, header shape {shape} needs {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    # torch needs native byte order and a writable buffer.
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


def load_builtin(split: Literal["train", "test"], full: bool | None = None) -> BuiltinSplit:
    """Load Fashion-MNIST ``split`` as (N, 3, 28, 28) uint8 images and (N,) targets.

    Args:
        full: True = the full Debian data (error when missing), False = the shipped slice
            (1000 train / 200 test images per class), None = full when installed, else slice.
    """
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = DEBIAN_FASHION_MNIST
    files = [root / name for name in _IDX_FILES[split]]
    have_full = all(f.is_file() for f in files)
    if full and not have_full:
        raise DataError(
            f"full Fashion-MNIST not found in {root}; install it with "
            "`apt-get install -y dataset-fashion-mnist`, or use the shipped slice (full=False)"
        )
    if have_full and full is not False:
        images, targets = read_idx(files[0]), read_idx(files[1])
        source = "Fashion-MNIST (Debian, full)"
    else:
        images, targets = _read_slice(split)
        source = "Fashion-MNIST (shipped slice)"
    if images.ndim != 3 or images.dtype != torch.uint8 or len(images) != len(targets):
        shapes = f"{tuple(images.shape)}, {tuple(targets.shape)}"
        raise DataError(f"{source} has unexpected shapes {shapes}")
    logger.debug("loaded %s %s split: %d images", source, split, len(images))
    return BuiltinSplit(
        images=images.unsqueeze(1).repeat(1, 3, 1, 1),
        targets=targets.to(torch.int64),
        classes=list(FASHION_MNIST_CLASSES),
        source=source,
    )


def _read_slice(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped slice's (N, 28, 28) uint8 images and (N,) labels."""
    resource = resources.files(SLICE_PACKAGE).joinpath(SLICE_NAME)
    with resource.open("rb") as handle, np.load(handle, allow_pickle=False) as arrays:
        images = arrays[f"{split}_images"]
        labels = arrays[f"{split}_labels"]
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
