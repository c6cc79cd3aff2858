"""SwAVLoss: the step's codes-then-loss, with and without the embedding queue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from openseer.swav import EmbeddingQueue, SwAVLoss
from openseer.swav.sinkhorn import sinkhorn_reference

B, D, K, CROPS = 8, 16, 5, 3


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    torch.manual_seed(seed)
    prototypes = nn.Linear(D, K, bias=False)
    prototypes.weight.data = F.normalize(prototypes.weight.data, dim=1)
    z = F.normalize(torch.randn(CROPS * B, D), dim=1)
    return z, prototypes(z), prototypes


def _loss(prototypes: nn.Linear, queue: EmbeddingQueue | None = None) -> SwAVLoss:
    return SwAVLoss(CROPS, [0, 1], 0.1, 0.05, 3, queue, prototypes)


def _full_queue() -> tuple[EmbeddingQueue, torch.Tensor]:
    """A full queue of two batches per assignment crop, and a copy of its embeddings (2, 2B, D)."""
    queue = EmbeddingQueue(2, 2 * B, D)
    old = F.normalize(torch.randn(2, 2 * B, D), dim=1)
    queue.embeddings.copy_(old)
    queue.filled = 2 * B
    return queue, old


def _swapped_loss(scores: torch.Tensor, codes: list[torch.Tensor], assign: list[int], tau: float) -> float:
    """Eq. 1-2 written out in float64: each assignment crop's codes predicted by every other crop."""
    log_p = torch.log_softmax(scores.double() / tau, dim=1).view(CROPS, B, -1)
    total = 0.0
    for q, a in zip(codes, assign, strict=True):
        others = [v for v in range(CROPS) if v != a]
        total += sum(float(-(q.double() * log_p[v]).sum(1).mean()) for v in others) / len(others)
    return total / len(assign)


def test_without_a_queue_it_is_sinkhorn_codes_then_the_swapped_loss() -> None:
    """Against independent references: the textbook float64 Sinkhorn and the loss written out."""
    z, scores, prototypes = _batch()
    loss, codes = _loss(prototypes)(z, scores)
    want_codes = [sinkhorn_reference(scores[i * B : (i + 1) * B].detach(), 0.05, 3) for i in (0, 1)]
    for got, want in zip(codes, want_codes, strict=True):
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-4)
    assert loss.item() == pytest.approx(_swapped_loss(scores.detach(), want_codes, [0, 1], 0.1), rel=1e-5)


def test_a_full_queue_joins_the_codes_and_receives_the_batch() -> None:
    z, scores, prototypes = _batch()
    queue, old = _full_queue()
    loss, codes = _loss(prototypes, queue)(z, scores)
    for i, crop in enumerate((0, 1)):
        with torch.no_grad():
            joint = torch.cat([prototypes(old[i]), scores[crop * B : (crop + 1) * B]])
        want = sinkhorn_reference(joint, 0.05, 3)[-B:]  # only the batch's rows kept
        torch.testing.assert_close(codes[i].double(), want, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(queue.embeddings[i, :B], z[crop * B : (crop + 1) * B])  # newest first
        torch.testing.assert_close(queue.embeddings[i, B:], old[i, :B])
    alone, _ = _loss(prototypes)(z, scores)
    assert not torch.allclose(loss, alone)  # the queue changed the codes, hence the loss


def test_a_queue_that_is_not_full_is_filled_but_not_used() -> None:
    z, scores, prototypes = _batch()
    queue = EmbeddingQueue(2, 4 * B, D)
    loss, _ = _loss(prototypes, queue)(z, scores)
    alone, _ = _loss(prototypes)(z, scores)
    torch.testing.assert_close(loss, alone)
    assert queue.filled == B and not queue.full


def test_the_loss_trains_the_scores_but_not_through_the_codes() -> None:
    z, _, prototypes = _batch()
    z = z.clone().requires_grad_()
    loss, codes = _loss(prototypes)(z, prototypes(z))
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(not c.requires_grad for c in codes)


def test_a_queue_left_out_of_a_step_is_neither_used_nor_filled() -> None:
    """Before swav.queue_start_epoch the loop calls with_queue=False: the codes are the batch's alone."""
    z, scores, prototypes = _batch()
    queue, old = _full_queue()
    loss, _ = _loss(prototypes, queue)(z, scores, with_queue=False)
    alone, _ = _loss(prototypes)(z, scores)
    torch.testing.assert_close(loss, alone)
    assert torch.equal(queue.embeddings, old)


def test_the_steps_temperature_replaces_the_configured_one() -> None:
    z, scores, prototypes = _batch()
    at_03, codes = _loss(prototypes)(z, scores, temperature=0.3)
    assert at_03.item() == pytest.approx(_swapped_loss(scores.detach(), codes, [0, 1], 0.3), rel=1e-5)
    configured, _ = _loss(prototypes)(z, scores)
    assert not torch.allclose(at_03, configured)


def test_a_queue_needs_the_prototypes_and_one_of_no_rows_is_no_queue() -> None:
    with pytest.raises(ValueError, match="prototypes"):
        SwAVLoss(CROPS, [0, 1], queue=EmbeddingQueue(2, B, D))
    assert SwAVLoss(CROPS, [0, 1], queue=EmbeddingQueue(2, 0, D)).queue is None
