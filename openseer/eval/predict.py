"""Predictions with class names from a classifier checkpoint, and the predict command.

Any file :func:`openseer.weights.load_weights` reads that holds a classifier can be used (see
:mod:`openseer.eval.classifier`); images become inputs as every command makes them
(:func:`openseer.eval.inputs.image_batches`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openseer.config import ConfigError
from openseer.data.folders import DataError, list_images
from openseer.data.images import SkipLog
from openseer.data.labelled import EvalData, load_data
from openseer.distributed import resolve_device
from openseer.eval import cost
from openseer.eval.classifier import Classifier, score_labelled
from openseer.eval.features import forward_batches
from openseer.eval.inputs import Images, image_batches
from openseer.weights import load_weights


@dataclass
class Prediction:
    label: str
    index: int
    probability: float


def class_probabilities(
    clf: Classifier, images: Images, batch_size: int = 64, workers: int = 0, skipped: SkipLog | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax class probabilities (M, C) of the M readable images and their positions (M,) in ``images`` (any
    kind :func:`~openseer.eval.inputs.image_batches` takes); unreadable files are added to ``skipped``."""
    device = next(clf.parameters()).device
    batches = image_batches(images, clf.preprocess, batch_size, device, workers, skipped=skipped)
    probs, rows = [], []
    for logits, idx in forward_batches(clf, batches):
        probs.append(logits.softmax(dim=1))
        rows.append(idx)
    if not probs:
        return torch.empty(0, len(clf.classes)), torch.empty(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(rows)


def predict_proba(clf: Classifier, images: Images, batch_size: int = 64) -> torch.Tensor:
    """Softmax class probabilities (B, C) for B images; ValueError naming a file that cannot be read."""
    skipped = SkipLog()
    probs, _ = class_probabilities(clf, images, batch_size, skipped=skipped)
    if skipped:
        path, reason = skipped.entries[0]
        raise ValueError(f"cannot read image {path}: {reason}")
    return probs


def top_predictions(classes: Sequence[str], probs: torch.Tensor, topk: int = 5) -> list[list[Prediction]]:
    """For each row of probabilities (B, C), the ``topk`` most probable classes, most probable first."""
    p, idx = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [
        [Prediction(classes[i], i, float(q)) for q, i in zip(row_p.tolist(), row_i.tolist(), strict=True)]
        for row_p, row_i in zip(p, idx, strict=True)
    ]


def predict(clf: Classifier, images: Images, topk: int = 5, batch_size: int = 64) -> list[list[Prediction]]:
    """For each image, the ``topk`` most probable classes, most probable first."""
    return top_predictions(clf.classes, predict_proba(clf, images, batch_size), topk)


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
    """DataLoader worker processes that decode the image files (0: in this process)."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before predicting when the estimate (one batch timed, times the batches) is over this many minutes;
    0 or null: no limit."""

    def validate(self) -> None:
        cost.check_max_minutes(self.max_minutes)
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
    data = load_data(cfg.data, "test", labels="required") if cfg.data else None
    check_prediction(clf, files, data, cfg)
    skipped = SkipLog()
    probs, rows = class_probabilities(clf, files, cfg.batch_size, cfg.workers, skipped)
    if files and not len(rows):
        raise DataError(
            "none of the images could be read: " + "; ".join(f"{p}: {r}" for p, r in skipped.entries)
        )
    read = dict(zip(rows.tolist(), top_predictions(clf.classes, probs, cfg.topk), strict=True))
    reasons = iter(reason for _, reason in skipped.entries)  # the unreadable files, in order
    for i, name in enumerate(files):
        if i in read:
            out["predictions"].append({"image": name, "predictions": [p.__dict__ for p in read[i]]})
        else:
            out["predictions"].append({"image": name, "error": next(reasons)})
    if data is not None:
        out["evaluation"] = score_labelled(clf, data, cfg.batch_size, cfg.workers)
    return out


def check_prediction(
    clf: Classifier, files: Sequence[str], data: EvalData | None, cfg: PredictConfig
) -> float:
    """Log what classifying ``files`` and ``data`` will cost, timed on one batch of them, and stop with a
    :class:`~openseer.eval.cost.CostError` when it is over ``cfg.max_minutes``; the estimated seconds."""
    bs = cfg.batch_size
    batches = math.ceil(len(files) / bs) + (math.ceil(len(data) / bs) if data is not None else 0)
    if batches <= 1:  # timing one batch would cost as much as the work
        return 0.0
    sample = files[:bs] if files else data.subset(torch.arange(min(bs, len(data))))
    x = next(
        iter(image_batches(sample, clf.preprocess, bs, next(clf.parameters()).device, cfg.workers)), None
    )
    if x is None:  # none of the first images reads: the command says so
        return 0.0
    part = cost.Part("predicting", batches, "batch", cost.batch_seconds(clf, x[0]), f"of {len(x[0])} images")
    return cost.check("predict", [part], cfg.max_minutes, ", predict fewer images, or on a GPU (device)")


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
