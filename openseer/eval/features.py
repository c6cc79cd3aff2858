"""Pooled backbone features for a set of images, batched, in eval mode."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from openseer.data.folders import Skipped, UnlabelledImages
from openseer.data.preprocess import Preprocess


@torch.no_grad()
def recalibrate_batchnorm(backbone: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate every BatchNorm's running mean/var as a plain average over ``batches`` (eval-style images).

    A network at random initialisation still holds BN's initial statistics (mean 0, var 1), which in eval mode
    leaves its pooled features nearly identical for every image; and pretraining accumulates statistics over
    augmented crops of several sizes. Re-estimating on the images being embedded puts both on equal footing.
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = backbone.training
    backbone.train()
    try:
        for x in batches:
            backbone(x)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        backbone.train(was_training)


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    preprocess: Preprocess,
    images: torch.Tensor | None = None,
    paths: Sequence[Path] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    workers: int = 2,
    channels_last: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (M, D) float32 on CPU and the indices (M,) of the images they belong to.

    Give either ``images`` (uint8 (N,3,H,W)) or ``paths``; unreadable files are left out of the indices.
    """
    feats, index = [], []
    for f, idx in feature_batches(
        backbone, preprocess, images, paths, batch_size, device, workers, channels_last
    ):
        feats.append(f)
        index.append(idx)
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(index)


def feature_batches(
    backbone: nn.Module,
    preprocess: Preprocess,
    images: torch.Tensor | None = None,
    paths: Sequence[Path] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    workers: int = 2,
    channels_last: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`extract_features` one batch at a time: yields features (B, D) float32 on CPU and indices (B,).

    A generator so that callers can show progress or stop early; the backbone is in eval mode while it runs.
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        # no_grad per batch, never across a yield: grad mode is global and would leak into the caller
        with torch.no_grad():
            return backbone(x).float().cpu()

    try:
        if images is not None:
            for start in range(0, len(images), batch_size):
                x = preprocess.uint8_batch(images[start : start + batch_size].to(device), channels_last)
                yield forward(x), torch.arange(start, start + len(x))
            return
        dataset = UnlabelledImages(list(paths or []), transform=preprocess.transform())
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping)
        for x, idx in loader:
            if x is None:
                continue
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield forward(x.to(device)), idx
    finally:
        backbone.train(was_training)


def collate_skipping(batch: list) -> tuple[torch.Tensor | None, torch.Tensor]:
    good = [item for item in batch if not isinstance(item, Skipped)]
    if not good:
        return None, torch.empty(0, dtype=torch.long)
    return torch.stack([x for x, _ in good]), torch.tensor([i for _, i in good])
