"""Weighted kNN on cosine similarity (Wu et al. 2018; dino eval_knn.py): each of the k nearest training samples
votes exp(sim / T) for its class."""

import math

import pytest
import torch

from openseer.eval.knn import knn_classifier, knn_scores


def _clusters(n_per_class, noise, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 5
    feats = torch.cat([c + noise * torch.randn(n_per_class, 16, generator=g) for c in centres])
    labels = torch.arange(4).repeat_interleave(n_per_class)
    return feats, labels


def test_clustered_features_are_classified_perfectly():
    train, train_labels = _clusters(20, 0.3, seed=0)
    test, test_labels = _clusters(5, 0.3, seed=1)
    top1, top5 = knn_classifier(train, train_labels, test, test_labels, k=10, temperature=0.1)
    assert top1 == 1.0 and top5 == 1.0


def test_random_labels_are_not_classified_perfectly():
    train, _ = _clusters(20, 0.3, seed=0)
    test, test_labels = _clusters(5, 0.3, seed=1)
    shuffled = torch.randint(0, 4, (80,), generator=torch.Generator().manual_seed(2))
    top1, _ = knn_classifier(train, shuffled, test, test_labels, k=10, num_classes=4)
    assert top1 < 1.0


def _angle(theta):
    return torch.tensor([math.cos(theta), math.sin(theta)])


def test_temperature_changes_the_decision():
    # one very close neighbour of class 1 against two farther ones of class 0
    train = torch.stack([_angle(0.1), _angle(0.5), _angle(-0.5)]) * torch.tensor([[3.0], [0.5], [7.0]])
    labels = torch.tensor([1, 0, 0])
    test = _angle(0.0).view(1, 2) * 2
    sims = [math.cos(0.1), math.cos(0.5), math.cos(0.5)]
    for temperature, winner in ((0.01, 1), (10.0, 0)):
        scores = knn_scores(train, labels, test, num_classes=2, k=3, temperature=temperature)
        expected = [
            sum(math.exp(s / temperature) for s, c in zip(sims, labels.tolist(), strict=True) if c == cls)
            for cls in (0, 1)
        ]
        torch.testing.assert_close(scores[0], torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=0)
        assert scores.argmax(dim=1).item() == winner
        top1, _ = knn_classifier(train, labels, test, torch.tensor([1]), k=3, temperature=temperature)
        assert top1 == (1.0 if winner == 1 else 0.0)


def test_only_k_nearest_vote():
    train = torch.stack([_angle(0.0), _angle(0.2), _angle(1.0), _angle(1.1), _angle(1.2)])
    labels = torch.tensor([0, 0, 1, 1, 1])
    test = _angle(0.05).view(1, 2)
    assert knn_scores(train, labels, test, 2, k=2, temperature=1.0)[0, 1].item() == 0.0
    assert knn_scores(train, labels, test, 2, k=5, temperature=100.0).argmax().item() == 1  # 3 votes to 2


def test_k_is_capped_at_the_bank_size():
    train = torch.stack([_angle(0.0), _angle(0.3), _angle(2.0)])
    labels = torch.tensor([0, 1, 1])
    test = torch.stack([_angle(0.1), _angle(1.9)])
    big = knn_scores(train, labels, test, 2, k=200, temperature=0.1)
    torch.testing.assert_close(big, knn_scores(train, labels, test, 2, k=3, temperature=0.1))
    top1, top5 = knn_classifier(train, labels, test, torch.tensor([0, 1]), k=200, temperature=0.1)
    assert top5 == 1.0 and 0.0 <= top1 <= 1.0


def test_chunks_do_not_change_the_scores():
    train, labels = _clusters(10, 1.0, seed=3)
    test, _ = _clusters(7, 1.0, seed=4)
    full = knn_scores(train, labels, test, 4, k=5, chunk=1024)
    torch.testing.assert_close(knn_scores(train, labels, test, 4, k=5, chunk=3), full)


def test_features_are_l2_normalised():
    train, labels = _clusters(10, 0.5, seed=5)
    test, _ = _clusters(3, 0.5, seed=6)
    scaled = knn_scores(train * 100, labels, test * 0.01, 4, k=5)
    torch.testing.assert_close(scaled, knn_scores(train, labels, test, 4, k=5), rtol=1e-4, atol=1e-6)


def test_num_classes_defaults_to_largest_label():
    train = torch.stack([_angle(0.0), _angle(1.5)])
    _, top5 = knn_classifier(train, torch.tensor([0, 6]), train, torch.tensor([0, 6]), k=1)
    assert top5 == 1.0
    with pytest.raises(RuntimeError):  # a label beyond num_classes cannot be scattered
        knn_scores(train, torch.tensor([0, 6]), train, num_classes=3, k=1)
