"""Top-k accuracy on hand-made logits."""

import pytest
import torch

from openseer.eval.metrics import accuracy


def test_top1_top5_by_hand():
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # target 0: top-1 hit
            [0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.0],  # target 5: rank 5 -> top-5 hit only
            [0.1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.0],  # target 6: rank 7 -> miss
            [0.0, 0.0, 0.3, 0.2, 0.1, 0.0, 0.5],  # target 2: rank 2 -> top-5 hit only
        ]
    )
    target = torch.tensor([0, 5, 6, 2])
    top1, top5 = accuracy(logits, target, topk=(1, 5))
    assert top1 == pytest.approx(1 / 4)
    assert top5 == pytest.approx(3 / 4)
    assert accuracy(logits, target, topk=(2,)) == [pytest.approx(2 / 4)]
    assert accuracy(logits, target, topk=(7,)) == [1.0]


def test_k_larger_than_the_number_of_classes_is_capped():
    logits = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    target = torch.tensor([0, 2])
    top1, top5 = accuracy(logits, target, topk=(1, 5))
    assert top1 == 0.0
    assert top5 == 1.0  # only 3 classes: every target is in the "top 5"


def test_order_of_topk_is_kept():
    logits = torch.eye(4)
    target = torch.tensor([0, 1, 3, 3])
    assert accuracy(logits, target, topk=(5, 1)) == [1.0, pytest.approx(3 / 4)]


def test_empty_input():
    assert accuracy(torch.empty(0, 10), torch.empty(0, dtype=torch.long)) == [0.0, 0.0]


def test_integer_target_dtypes():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    for dtype in (torch.int32, torch.int64):
        assert accuracy(logits, torch.tensor([1, 0], dtype=dtype), topk=(1,)) == [1.0]
