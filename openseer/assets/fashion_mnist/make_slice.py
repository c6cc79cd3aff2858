"""Rebuild ``slice.npz``: a class-balanced slice of Fashion-MNIST shipped with openseer.

Takes, in file order, the first 1000 training and the first 200 test images of each class
from Debian's ``dataset-fashion-mnist`` files.

Run: ``python -m openseer.assets.fashion_mnist.make_slice [--source DIR] [--out FILE]``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from openseer.data.builtin import DEBIAN_FASHION_MNIST, read_idx

logger = logging.getLogger(__name__)

PER_CLASS = {"train": 1000, "test": 200}
FILES = {"train": "train", "test": "t10k"}


def first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Sorted indices of the first ``per_class`` samples of each class in ``labels`` (N,)."""
    picked = [torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)]
    if any(len(p) < per_class for p in picked):
        raise ValueError(f"a class has fewer than {per_class} samples")
    return torch.cat(picked).sort().values


def make_slice(source: Path, out: Path) -> None:
    """Write the slice of the IDX files in ``source`` to ``out`` (compressed .npz)."""
    arrays: dict[str, np.ndarray] = {}
    for split, prefix in FILES.items():
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        keep = first_per_class(labels, PER_CLASS[split])
        arrays[f"{split}_images"] = images[keep].numpy().astype(np.uint8)
        arrays[f"{split}_labels"] = labels[keep].numpy().astype(np.uint8)
    np.savez_compressed(out, **arrays)
    logger.info("wrote %s (%d bytes)", out, out.stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FASHION_MNIST)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("slice.npz"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_slice(args.source, args.out)


if __name__ == "__main__":
    main()
