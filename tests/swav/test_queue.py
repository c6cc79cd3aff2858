"""The embedding queue (Caron et al. 2020, Sec. 4.3; swav main_swav.py `queue`): newest embeddings first."""

import pytest
import torch

from openseer.swav.queue import EmbeddingQueue


def _batch(value: float, b: int = 2, d: int = 3) -> torch.Tensor:
    return torch.full((b, d), value) + torch.arange(b, dtype=torch.float32).view(-1, 1) / 10


def test_starts_empty_and_zero():
    q = EmbeddingQueue(n_assign=2, length=6, dim=3)
    assert q.embeddings.shape == (2, 6, 3)
    assert q.length == 6
    assert q.filled == 0 and not q.full
    assert torch.equal(q.embeddings, torch.zeros(2, 6, 3))


def test_push_puts_newest_first_and_drops_oldest():
    q = EmbeddingQueue(n_assign=1, length=6, dim=3)
    for value in (1.0, 2.0, 3.0, 4.0):
        q.push(0, _batch(value))
    # newest (4) at the front, in batch order; the oldest batch (1) has been dropped
    expected = torch.cat([_batch(4.0), _batch(3.0), _batch(2.0)])
    assert torch.equal(q.embeddings[0], expected)


def test_each_assignment_crop_has_its_own_queue():
    q = EmbeddingQueue(n_assign=2, length=4, dim=3)
    q.push(0, _batch(1.0))
    q.push(1, _batch(-1.0))
    assert torch.equal(q.embeddings[0, :2], _batch(1.0))
    assert torch.equal(q.embeddings[1, :2], _batch(-1.0))
    assert torch.equal(q.embeddings[:, 2:], torch.zeros(2, 2, 3))


def test_full_only_after_length_embeddings_of_every_crop():
    q = EmbeddingQueue(n_assign=2, length=6, dim=3)
    for step in range(3):
        q.push(0, _batch(step))
        assert not q.full  # the last assignment crop has not been pushed yet this step
        q.push(1, _batch(step))
        assert q.full == (step == 2)
        assert q.filled == 2 * (step + 1)
    q.push(0, _batch(9.0))
    q.push(1, _batch(9.0))
    assert q.full and q.filled == 6  # saturates at the length


def test_batch_larger_than_queue_keeps_its_first_rows():
    q = EmbeddingQueue(n_assign=1, length=3, dim=2)
    z = torch.arange(10, dtype=torch.float32).view(5, 2)
    q.push(0, z)
    assert torch.equal(q.embeddings[0], z[:3])
    assert q.full


def test_zero_length_queue_is_never_full_and_ignores_pushes():
    q = EmbeddingQueue(n_assign=2, length=0, dim=3)
    q.push(1, _batch(1.0))
    assert not q.full and q.filled == 0


def test_push_detaches_and_casts():
    q = EmbeddingQueue(n_assign=1, length=4, dim=3)
    z = _batch(0.5).double().requires_grad_()
    q.push(0, z)
    assert q.embeddings.dtype == torch.float32 and not q.embeddings.requires_grad
    assert torch.equal(q.embeddings[0, :2], z.detach().float())


def test_state_dict_round_trip():
    a = EmbeddingQueue(n_assign=2, length=4, dim=3)
    for value in (1.0, 2.0):
        a.push(0, _batch(value))
        a.push(1, _batch(-value))
    state = a.state_dict()
    assert state["filled"] == 4
    b = EmbeddingQueue(n_assign=2, length=4, dim=3)
    b.load_state_dict(state)
    assert torch.equal(b.embeddings, a.embeddings)
    assert b.filled == a.filled and b.full
    # loading copies: pushing into the restored queue leaves the saved state alone
    saved = state["embeddings"].clone()
    b.push(0, _batch(7.0))
    assert torch.equal(state["embeddings"], saved)
    assert not torch.equal(b.embeddings, a.embeddings)


@pytest.mark.parametrize("shape", [(1, 4, 3), (2, 5, 3), (2, 4, 8)])
def test_load_rejects_a_different_shape(shape):
    q = EmbeddingQueue(n_assign=2, length=4, dim=3)
    with pytest.raises(ValueError, match=r"queue shape in checkpoint .* != configured \(2, 4, 3\)"):
        q.load_state_dict({"embeddings": torch.zeros(shape), "filled": 0})
    assert q.filled == 0
