"""Scoring learned features."""

from openseer.eval.knn import knn_classifier
from openseer.eval.metrics import accuracy

__all__ = ["accuracy", "knn_classifier"]
