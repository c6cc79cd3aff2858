"""Weighted k-nearest-neighbour classifier on cosine similarity (Wu et al. 2018; dino eval_knn.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from openseer.config import ConfigError
from openseer.eval import cost
from openseer.eval.embed import FeatureConfig, Features, check_embedding, embedder_for
from openseer.eval.metrics import accuracy, write_result
from openseer.eval.split import SplitConfig, split_data


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (N_test, C): each of the k most similar training samples votes exp(sim / T) for its class.

    Features are L2-normalised here, so similarity is cosine.
    """
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, train.shape[0])
    out = torch.empty(test.shape[0], num_classes)
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        out[start : start + chunk] = votes
    return out


def knn_classifier(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of the weighted kNN classifier. Features (N, D); labels (N,) int64."""
    c = num_classes if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_scores(train_features, train_labels, test_features, c, k, temperature)
    top1, top5 = accuracy(scores, test_labels, topk=(1, 5))
    return top1, top5


def knn_of_features(train: Features, test: Features, k: int, temperature: float) -> tuple[float, float]:
    """:func:`knn_classifier` of labelled test features against labelled training features (the classes of the
    training set)."""
    return knn_classifier(
        train.features, train.labels, test.features, test.labels, k, temperature, len(train.classes)
    )


# ============ the knn command ============


@dataclass
class KnnConfig(SplitConfig):
    seed: int = 0
    """Seed of the random initialisation (model 'random')."""
    k: int = 200
    """Neighbours that vote."""
    temperature: float = 0.1
    """Temperature of the votes' weighting exp(similarity / temperature)."""
    model: Literal["pretrained", "random"] = "pretrained"
    """'random': score the same network at random initialisation."""
    results: str | None = None
    """Folder of the JSON result; null: RUN/eval."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """How features are computed."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before embedding when the estimate (one batch timed, times the batches) is over this many minutes;
    0 or null: no limit."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("knn needs weights (checkpoint=RUN_FOLDER_OR_FILE)")
        cost.check_max_minutes(self.max_minutes)
        if self.k < 1 or self.temperature <= 0:
            raise ConfigError(f"k must be >= 1 and temperature > 0, got k={self.k}, T={self.temperature}")


def run_knn(cfg: KnnConfig) -> dict:
    """Weighted cosine kNN of the test features against the training features; RUN/eval/knn[-random].json."""
    started = time.perf_counter()
    cfg.validate()
    embedder, weights = embedder_for(cfg.checkpoint, cfg.features, cfg.model == "random", cfg.seed)
    train, test = split_data(cfg, weights)
    check_embedding("knn", embedder, train, [train, test], cfg.max_minutes)
    embedder.prepare(train)
    train_f, test_f = embedder(train), embedder(test)
    top1, top5 = knn_of_features(train_f, test_f, cfg.k, cfg.temperature)
    result = {
        "kind": "knn",
        "model": cfg.model,
        "checkpoint": weights.source,
        "train": train.name,
        "test": test.name,
        "n_train": len(train_f.index),
        "n_test": len(test_f.index),
        "k": cfg.k,
        "temperature": cfg.temperature,
        "top1": top1,
        "top5": top5,
        "seconds": time.perf_counter() - started,
    }
    folder = Path(cfg.results) if cfg.results else weights.run_dir / "eval"
    result["result_file"] = str(
        write_result(folder, "knn-random" if cfg.model == "random" else "knn", result)
    )
    return result
