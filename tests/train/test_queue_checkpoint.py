"""Every process's embedding queue in checkpoints: rank r gets back what rank r saved; with another number of
processes the saved entries are shared out, none held twice. Process groups are faked by patching rank and
world size (the 2-process run is tests/distributed/test_queue_resume.py)."""

from __future__ import annotations

import pytest
import torch

from openseer import distributed
from openseer.swav import EmbeddingQueue
from openseer.train.queue_checkpoint import gather_queues, restore_queue


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "is_main", lambda: rank == 0)


def _saved(world: int, length: int, filled: list[int], n_assign: int = 2, dim: int = 3) -> dict:
    """Distinct values everywhere, so that any entry ending up in the wrong place shows."""
    embeddings = torch.arange(world * n_assign * length * dim, dtype=torch.float32)
    return {"embeddings": embeddings.reshape(world, n_assign, length, dim), "filled": torch.tensor(filled)}


def test_gather_with_one_process_is_its_queue() -> None:
    queue = EmbeddingQueue(2, 4, 3)
    queue.push(0, torch.randn(3, 3))
    queue.push(1, torch.randn(3, 3))
    got = gather_queues(queue)
    assert torch.equal(got["embeddings"], queue.embeddings.unsqueeze(0))
    assert got["filled"].tolist() == [3]


def test_gather_fills_each_processes_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of 2: its row holds its queue; the sum over processes (here: none) fills the others."""
    _as_rank(monkeypatch, 1, 2)
    queue = EmbeddingQueue(2, 4, 3)
    queue.embeddings.normal_()
    queue.filled = 4
    got = gather_queues(queue)
    assert torch.equal(got["embeddings"][1], queue.embeddings)
    assert (got["embeddings"][0] == 0).all() and got["filled"].tolist() == [0, 4]


@pytest.mark.parametrize("rank", [0, 1])
def test_same_world_gives_each_rank_its_own_queue(monkeypatch: pytest.MonkeyPatch, rank: int) -> None:
    _as_rank(monkeypatch, rank, 2)
    saved = _saved(2, 4, filled=[4, 3])
    queue = EmbeddingQueue(2, 4, 3)
    restore_queue(queue, saved)
    assert torch.equal(queue.embeddings, saved["embeddings"][rank])
    assert queue.filled == [4, 3][rank]


def test_two_saved_queues_shared_by_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each saved rank held 3 valid embeddings of 4; one process with room for 8 gets all 6, in front."""
    _as_rank(monkeypatch, 0, 1)
    saved = _saved(2, 4, filled=[3, 3])
    queue = EmbeddingQueue(2, 8, 3)
    restore_queue(queue, saved)
    assert queue.filled == 6 and not queue.full
    want = torch.cat([saved["embeddings"][0, :, :3], saved["embeddings"][1, :, :3]], dim=1)
    torch.testing.assert_close(queue.embeddings[:, :6], want, atol=0, rtol=0)
    assert (queue.embeddings[:, 6:] == 0).all()


def test_one_saved_queue_shared_by_two_processes_without_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = _saved(1, 8, filled=[7])
    held = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        queue = EmbeddingQueue(2, 4, 3)
        restore_queue(queue, saved)
        assert queue.filled == 3  # 7 entries over 2 processes: 3 each, one dropped
        held.append(queue.embeddings[:, :3])
    torch.testing.assert_close(torch.cat(held, dim=1), saved["embeddings"][0, :, :6], atol=0, rtol=0)


def test_a_single_process_queue_of_an_older_checkpoint_is_not_duplicated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Older checkpoints of multi-process runs held rank 0's queue alone, (n_assign, length, dim): it is split
    between the processes instead of being handed whole to each."""
    old = {"embeddings": torch.randn(2, 4, 3), "filled": 4}
    parts = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        queue = EmbeddingQueue(2, 4, 3)
        restore_queue(queue, old)
        assert queue.filled == 2
        parts.append(queue.embeddings[:, :2])
    torch.testing.assert_close(torch.cat(parts, dim=1), old["embeddings"], atol=0, rtol=0)


def test_other_crop_count_or_dim_is_refused() -> None:
    with pytest.raises(ValueError, match="model.out_dim"):
        restore_queue(EmbeddingQueue(2, 4, 5), _saved(1, 4, filled=[4]))


def test_no_queue_configured_ignores_a_saved_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _as_rank(monkeypatch, 0, 2)
    queue = EmbeddingQueue(2, 0, 3)
    restore_queue(queue, _saved(1, 4, filled=[4]))
    assert queue.filled == 0 and queue.length == 0


def test_sharded_checkpoints_of_the_older_layout_are_read_per_process() -> None:
    """Older sharded checkpoints held the queues concatenated, (n_assign, world * length, dim), one count."""
    from openseer.train.sharded_checkpoint import _saved_queues

    per_process = _saved(2, 4, filled=[3, 3])["embeddings"]
    concatenated = torch.cat([per_process[0], per_process[1]], dim=1)
    got = _saved_queues(concatenated, 3, world=2)
    assert torch.equal(got["embeddings"], per_process) and got["filled"] == [3, 3]
