"""What every evaluation scores and writes: top-k accuracy, the confusion matrix, the result file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from openseer.fileio.atomic import atomic_write_text


@torch.no_grad()
def accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction of rows whose target is among the k highest scores, for each k (k capped at the class count).

    logits: (N, C); target: (N,) int. Returns one float in [0, 1] per k.
    """
    n, c = logits.shape
    if n == 0:
        return [0.0 for _ in topk]
    top = logits.topk(min(max(topk), c), dim=1).indices
    hit = top == target.view(-1, 1)
    return [float(hit[:, : min(k, c)].any(dim=1).float().mean()) for k in topk]


@torch.no_grad()
def confusion_matrix(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts; row = true class, column = predicted class. logits (N, C), target (N,)."""
    pred = logits.argmax(dim=1)
    flat = target.long() * num_classes + pred
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def write_result(folder: Path, name: str, result: dict) -> Path:
    """``folder/name.json``, the shape every report reads."""
    return atomic_write_text(folder / f"{name}.json", json.dumps(result, indent=1))
