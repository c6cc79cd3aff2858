"""Classifiers built on a pretrained backbone: their checkpoint format, loading, and predictions with names.

A classifier checkpoint (written by ``openseer linear`` and ``openseer finetune``; its format is
:func:`openseer.weights.write_classifier`'s) is self-contained: backbone and head weights, class names, the resize
mode the head was trained with, and the pretraining config that describes the architecture and normalisation.
Any file :func:`openseer.weights.load_weights` reads that holds a classifier can be used to predict.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from openseer.config import ConfigError
from openseer.data.folders import DataError, UnlabelledImages, list_images
from openseer.data.images import BadImageError, load_rgb
from openseer.data.labelled import EvalData, align_classes, load_data
from openseer.data.preprocess import Resize
from openseer.distributed import resolve_device
from openseer.eval.features import collate_skipping
from openseer.eval.linear import confusion_matrix
from openseer.eval.metrics import accuracy
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.backbone import feature_dim
from openseer.train.config import PretrainConfig
from openseer.weights import Weights, load_weights, write_classifier

ImageLike = PIL.Image.Image | torch.Tensor


def build_head(dim: int, num_classes: int, bn: bool) -> nn.Sequential:
    """(BatchNorm1d(affine=False) or Identity, Linear): features (N, dim) -> logits (N, C)."""
    norm: nn.Module = nn.BatchNorm1d(dim, affine=False) if bn else nn.Identity()
    return nn.Sequential(norm, nn.Linear(dim, num_classes))


class Classifier(nn.Module):
    """Backbone -> head, plus the :class:`~openseer.data.preprocess.Preprocess` that turns an image into its input.

    ``resize``: 'whole' resizes the whole image to the input size (models trained on in-memory uint8 sets, like
    pretraining's cached data); 'center_crop' resizes the shorter side to size/0.875 and centre-crops.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Sequential,
        classes: Sequence[str],
        pretrain_config: PretrainConfig,
        resize: Resize = "center_crop",
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.classes = list(classes)
        self.pretrain_config = pretrain_config
        self.preprocess = pretrain_config.preprocess(resize)

    @property
    def resize(self) -> Resize:
        return self.preprocess.resize

    @classmethod
    def from_parts(
        cls,
        embedder: Any,
        feature_head: nn.Sequential,
        classes: Sequence[str],
        pretrain_config: PretrainConfig,
        head_bn: bool,
        resize: Resize = "center_crop",
    ) -> Classifier:
        """A classifier from an Embedder's (possibly BN-recalibrated) backbone and a trained feature head."""
        head = build_head(feature_dim(embedder.backbone), len(classes), head_bn)
        head.load_state_dict(feature_head.state_dict())
        return cls(embedder.backbone, head, classes, pretrain_config, resize)

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
        return cls(weights.build_backbone(), head, weights.classes, weights.config, weights.resize).eval()

    @property
    def head_bn(self) -> bool:
        return isinstance(self.head[0], nn.BatchNorm1d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B,3,size,size) -> logits (B, C)."""
        return self.head(self.backbone(x))

    def transform(self) -> v2.Compose:
        """One image (PIL, or a (3,H,W) uint8 / [0,1] float tensor) -> normalised (3, size, size)."""
        return self.preprocess.transform()


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
        resize=clf.resize,
        head_bn=clf.head_bn,
        pretrain_config=clf.pretrain_config,
        protocol=protocol,
        source=str(source) if source is not None else "",
        extra=extra,
        keep=keep,
    )


def load_classifier(path: str | os.PathLike[str]) -> Classifier:
    """A classifier from any weights file that holds one (see :func:`openseer.weights.load_weights`)."""
    return Classifier.from_weights(load_weights(path))


# ============ predictions ============


@dataclass
class Prediction:
    label: str
    index: int
    probability: float


def to_inputs(clf: Classifier, images: Sequence[ImageLike] | torch.Tensor) -> torch.Tensor:
    """PIL images or tensors ((3,H,W) each, or one (B,3,H,W) batch; uint8, or float in [0,1]) ->
    normalised (B, 3, size, size), as the classifier's preprocessing says."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4:
            raise ValueError(f"expected (3,H,W) or (B,3,H,W) images, got {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if clf.resize == "whole":  # the path of training on in-memory sets, batched
            x = images if images.dtype == torch.uint8 else images.float() * 255
            return clf.preprocess.uint8_batch(x)
        images = list(images)
    return torch.stack([clf.preprocess.image(img) for img in images])


@torch.no_grad()
def predict_proba(
    clf: Classifier, images: Sequence[ImageLike] | torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Softmax class probabilities (B, C) for B images."""
    clf.eval()
    device = next(clf.parameters()).device
    x = to_inputs(clf, images)
    return torch.cat(
        [
            clf(x[i : i + batch_size].to(device)).float().softmax(dim=1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    )


def predict(
    clf: Classifier, images: Sequence[ImageLike] | torch.Tensor, topk: int = 5, batch_size: int = 64
) -> list[list[Prediction]]:
    """For each image, the ``topk`` most probable classes, most probable first."""
    probs = predict_proba(clf, images, batch_size)
    p, idx = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [
        [Prediction(clf.classes[i], i, float(q)) for q, i in zip(row_p.tolist(), row_i.tolist(), strict=True)]
        for row_p, row_i in zip(p, idx, strict=True)
    ]


@torch.no_grad()
def classifier_logits(
    clf: Classifier, data: EvalData, batch_size: int = 256, workers: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (M, C), targets (M,), rows (M,)) of the M readable images of a labelled set, preprocessed as the
    classifier was trained; ``rows`` index ``data``."""
    clf.eval()
    device = next(clf.parameters()).device
    logits, rows = [], []
    if data.images is not None:
        for start in range(0, len(data), batch_size):
            x = to_inputs(clf, data.images[start : start + batch_size])
            logits.append(clf(x.to(device)).float().cpu())
        rows = [torch.arange(len(data))]
    else:
        dataset = UnlabelledImages(list(data.paths or []), transform=clf.transform())
        for x, idx in DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping
        ):
            if x is not None:
                logits.append(clf(x.to(device)).float().cpu())
                rows.append(idx)
    if not logits:
        raise DataError(f"none of the images of {data.name} could be read")
    used = torch.cat(rows).long()
    return torch.cat(logits), data.targets[used], used


def evaluate_classifier(
    clf: Classifier, data: EvalData, batch_size: int = 256, workers: int = 2
) -> tuple[float, float, torch.Tensor]:
    """(top-1, top-5, confusion (C, C)) on a labelled set whose classes must be among the classifier's."""
    scored = score_labelled(clf, data, batch_size, workers)
    return scored["top1"], scored["top5"], torch.tensor(scored["confusion"])


# ============ the predict command ============


@dataclass
class PredictConfig:
    checkpoint: str = ""
    """A classifier: the output folder or checkpoint of openseer linear or finetune, or an imported
    fine-tuned file."""
    images: list[str] | None = None
    """Image files, or folders of them."""
    data: str | None = None
    """A labelled set to score instead of (or as well as) single images."""
    topk: int = 5
    """Labels per image."""
    device: str = "auto"
    """'auto' (this process's GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:1' ..."""
    batch_size: int = 64
    """Images per forward pass."""
    workers: int = 2
    """DataLoader worker processes that decode the images of `data` (0: in this process)."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError(
                "predict needs a classifier checkpoint (the output of openseer linear/finetune)"
            )
        if not self.images and not self.data:
            raise ConfigError(
                "predict needs image files (after the checkpoint, or images=[...]), or data=LABELLED_SET to score"
            )
        if self.topk < 1:
            raise ConfigError(f"topk: got {self.topk}, expected >= 1")


def image_files(entries: Sequence[str]) -> list[str]:
    """Image files as given, with each folder replaced by the images under it (sorted)."""
    files = []
    for entry in entries:
        path = Path(entry).expanduser()
        files += [str(p) for p in list_images(path)] if path.is_dir() else [entry]
    return files


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


def run_predict(cfg: PredictConfig) -> dict:
    """{'predictions': [{image, predictions | error}], 'evaluation': {top1, top5, confusion, skipped...} | None}.

    A folder among ``cfg.images`` stands for the images under it.
    """
    weights = load_weights(cfg.checkpoint)
    clf = Classifier.from_weights(weights).to(resolve_device(cfg.device))
    out: dict[str, Any] = {
        "checkpoint": weights.source,
        "predictions": [],
        "evaluation": None,
    }
    files = image_files(cfg.images or [])
    good, names = [], []
    for name in files:
        try:
            good.append(load_rgb(name))
            names.append(name)
        except BadImageError as err:
            out["predictions"].append({"image": name, "error": err.reason})
    if files and not good:
        raise DataError(
            "none of the images could be read: "
            + "; ".join(f"{p['image']}: {p['error']}" for p in out["predictions"])
        )
    if good:
        for name, preds in zip(names, predict(clf, good, cfg.topk, cfg.batch_size), strict=True):
            out["predictions"].append({"image": name, "predictions": [p.__dict__ for p in preds]})
        order = {name: i for i, name in enumerate(files)}
        out["predictions"].sort(key=lambda p: order[p["image"]])
    if cfg.data:
        data = load_data(cfg.data, "test", labels="required")
        out["evaluation"] = score_labelled(clf, data, cfg.batch_size, cfg.workers)
    return out


def format_predictions(result: dict) -> str:
    """A readable table: image, rank, label, probability."""
    rows = []
    width = max([len("image")] + [len(p["image"]) for p in result["predictions"]])
    labels = [q["label"] for p in result["predictions"] for q in p.get("predictions", [])]
    lw = max([len("label")] + [len(x) for x in labels])
    if result["predictions"]:
        rows.append(f"{'image':<{width}}  rank  {'label':<{lw}}  probability")
    for p in result["predictions"]:
        if "error" in p:
            rows.append(f"{p['image']:<{width}}  -     unreadable: {p['error']}")
            continue
        for rank, q in enumerate(p["predictions"], 1):
            shown = p["image"] if rank == 1 else ""
            rows.append(f"{shown:<{width}}  {rank:<4}  {q['label']:<{lw}}  {q['probability']:.4f}")
    ev = result.get("evaluation")
    if ev:
        rows.append(f"{ev['data']}: top-1 {ev['top1']:.4f}  top-5 {ev['top5']:.4f} on {ev['images']} images")
        rows += [f"  skipped {s['path']}: {s['reason']}" for s in ev["skipped"]]
    return "\n".join(rows)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=1)
