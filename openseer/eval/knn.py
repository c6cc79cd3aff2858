"""Weighted k-nearest-neighbour classifier on cosine similarity (Wu et al. 2018; dino eval_knn.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from openseer.eval.metrics import accuracy


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
