"""Classifiers built on a pretrained backbone: the module, its checkpoint format, and its scores on labelled data.

A classifier checkpoint (written by ``openseer linear`` and ``openseer finetune``; its format is
:func:`openseer.weights.write_classifier`'s) is self-contained: backbone and head weights, class names, the resize
mode the head was trained with (in the stored description of the network: architecture and preprocessing), and the
pretraining recipe the backbone came from, for provenance.
Any file :func:`openseer.weights.load_weights` reads that holds a classifier is one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openseer.data.folders import DataError
from openseer.data.labelled import EvalData, align_classes
from openseer.data.preprocess import Preprocess, Resize
from openseer.eval.features import forward_batches
from openseer.eval.inputs import image_batches
from openseer.eval.metrics import accuracy, confusion_matrix
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.backbone import feature_dim
from openseer.models.config import ModelConfig
from openseer.weights import Weights, load_weights, write_classifier


def build_head(dim: int, num_classes: int, bn: bool) -> nn.Sequential:
    """(BatchNorm1d(affine=False) or Identity, Linear): features (N, dim) -> logits (N, C)."""
    norm: nn.Module = nn.BatchNorm1d(dim, affine=False) if bn else nn.Identity()
    return nn.Sequential(norm, nn.Linear(dim, num_classes))


class Classifier(nn.Module):
    """Backbone -> head, plus the :class:`~openseer.data.preprocess.Preprocess` that turns an image into its input.

    ``model`` describes the backbone (:class:`~openseer.models.config.ModelConfig`), ``preprocess`` its input as
    the head was trained: its ``resize`` is 'whole' (the whole image resized to the input size: models trained on
    in-memory sets, like pretraining's cached data) or 'center_crop' (the shorter side resized to size/0.875, then
    centre-cropped). Images become inputs through :func:`openseer.eval.inputs.image_batches` with ``preprocess``.
    ``recipe``: the pretraining config the backbone came from, a plain dict kept for provenance (or None).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Sequential,
        classes: Sequence[str],
        model: ModelConfig,
        preprocess: Preprocess,
        recipe: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.classes = list(classes)
        self.model, self.preprocess, self.recipe = model, preprocess, recipe

    @property
    def resize(self) -> Resize:
        return self.preprocess.resize

    @classmethod
    def from_parts(
        cls,
        embedder: Any,
        feature_head: nn.Sequential,
        classes: Sequence[str],
        weights: Weights,
        head_bn: bool,
        preprocess: Preprocess,
    ) -> Classifier:
        """A classifier from an Embedder's (possibly BN-recalibrated) backbone of ``weights`` and a trained feature
        head; ``preprocess``: how the head's training images became inputs."""
        head = build_head(feature_dim(embedder.backbone), len(classes), head_bn)
        head.load_state_dict(feature_head.state_dict())
        return cls(embedder.backbone, head, classes, weights.model, preprocess, weights.recipe)

    @classmethod
    def from_weights(cls, weights: Weights) -> Classifier:
        """The backbone and classifier of ``weights`` (a linear/finetune checkpoint, an imported fine-tuned SEER
        file, an exported safetensors file with a classifier...); a CheckpointError when it holds none."""
        linear = weights.build_classifier()
        if linear is None or weights.classes is None:
            raise CheckpointError(
                f"{weights.source} holds no classifier (pretraining checkpoints have none): run `openseer linear` "
                "or `openseer finetune` on it and pass their output folder"
            )
        head = nn.Sequential(nn.Identity(), linear)  # a BatchNorm in front was folded into the Linear on load
        backbone = weights.build_backbone()
        return cls(backbone, head, weights.classes, weights.model, weights.preprocess, weights.recipe).eval()

    @property
    def head_bn(self) -> bool:
        return isinstance(self.head[0], nn.BatchNorm1d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,size,size) -> logits (B, C)."""
        return self.head(self.backbone(x))


def save_classifier(
    clf: Classifier,
    folder: Path,
    protocol: str,
    source: str | os.PathLike[str] | None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write ``folder/ckpt-<step>.pt`` holding the classifier (and ``extra``, e.g. optimiser state)."""
    return write_classifier(
        folder,
        step,
        model_state=clf.state_dict(),
        classes=clf.classes,
        head_bn=clf.head_bn,
        model=clf.model,
        preprocess=clf.preprocess,
        recipe=clf.recipe,
        protocol=protocol,
        source=str(source) if source is not None else "",
        extra=extra,
        keep=keep,
    )


def load_classifier(path: str | os.PathLike[str]) -> Classifier:
    """A classifier from any weights file that holds one (see :func:`openseer.weights.load_weights`)."""
    return Classifier.from_weights(load_weights(path))


def classifier_logits(
    clf: Classifier, data: EvalData, batch_size: int = 256, workers: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (M, C), targets (M,), rows (M,)) of the M readable images of a labelled set; ``rows`` index
    ``data``."""
    device = next(clf.parameters()).device
    batches = image_batches(data, clf.preprocess, batch_size, device, workers)
    logits, rows = [], []
    for out, idx in forward_batches(clf, batches):
        logits.append(out)
        rows.append(idx)
    if not logits:
        raise DataError(f"none of the images of {data.name} could be read")
    used = torch.cat(rows).long()
    return torch.cat(logits), data.targets[used], used


def score_labelled(clf: Classifier, data: EvalData, batch_size: int = 256, workers: int = 2) -> dict:
    """{data, top1, top5, classes, confusion, images, skipped: [{path, reason}]} on a labelled set whose classes
    must be among the classifier's."""
    data = align_classes(data, clf.classes, "the classifier checkpoint")
    logits, targets, used = classifier_logits(clf, data, batch_size, workers)
    top1, top5 = accuracy(logits, targets, topk=(1, 5))
    return {
        "data": data.name,
        "top1": top1,
        "top5": top5,
        "classes": clf.classes,
        "confusion": confusion_matrix(logits, targets, len(clf.classes)).tolist(),
        "images": len(used),
        "skipped": [{"path": p, "reason": r} for p, r in data.unreadable(used).entries],
    }


def evaluate_classifier(
    clf: Classifier, data: EvalData, batch_size: int = 256, workers: int = 2
) -> tuple[float, float, torch.Tensor]:
    """(top-1, top-5, confusion (C, C)) on a labelled set whose classes must be among the classifier's."""
    scored = score_labelled(clf, data, batch_size, workers)
    return scored["top1"], scored["top5"], torch.tensor(scored["confusion"])


