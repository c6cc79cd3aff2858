"""The per-rank slices of the in-memory and per-image streams: disjoint, covering the epoch, resumable mid-epoch.

Images are flat colours whose red and green channels encode their index, and augmentation is reduced to crops and
flips, so the index of every crop can be read back from its pixels.
"""

from __future__ import annotations

import threading

import pytest
import torch
from support import INDEX_AUGMENT, INDEX_CROPS, crop_indices, index_images

from openseer.train.data import TensorBatches, _EpochBatchSampler

N, BATCH, WORLD = 40, 4, 2


def test_sampler_slices_are_disjoint_and_cover_the_epoch() -> None:
    seen = []
    for rank in range(WORLD):
        batches = list(_EpochBatchSampler(N, BATCH, seed=3, epoch=1, start=0, rank=rank, world=WORLD))
        assert len(batches) == N // (BATCH * WORLD)
        seen.append([i for batch in batches for _, i in batch])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(N))


@pytest.mark.parametrize("start", [1, 3])
def test_sampler_resumes_mid_epoch_without_repeating_or_skipping(start: int) -> None:
    full = list(_EpochBatchSampler(N, BATCH, seed=3, epoch=1, start=0, rank=1, world=WORLD))
    resumed = list(_EpochBatchSampler(N, BATCH, seed=3, epoch=1, start=start, rank=1, world=WORLD))
    assert resumed == full[start:]


def test_epochs_draw_different_orders() -> None:
    one = list(_EpochBatchSampler(N, BATCH, seed=3, epoch=1, start=0, rank=0, world=WORLD))
    two = list(_EpochBatchSampler(N, BATCH, seed=3, epoch=2, start=0, rank=0, world=WORLD))
    assert [i for b in one for _, i in b] != [i for b in two for _, i in b]


def _stream(rank: int) -> TensorBatches:
    return TensorBatches(
        index_images(N),
        BATCH,
        INDEX_CROPS,
        INDEX_AUGMENT,
        seed=5,
        rank=rank,
        world_size=WORLD,
        channels_last=False,
        prefetch=0,
    )


def test_tensor_batches_of_two_ranks_are_disjoint_and_cover_the_epoch() -> None:
    seen = []
    for rank in range(WORLD):
        ids = []
        for crops in _stream(rank).epoch(0):
            per_crop = [crop_indices(c) for c in crops]
            assert all(p == per_crop[0] for p in per_crop)  # every crop of a row comes from the same image
            ids += per_crop[0]
        seen.append(ids)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(N))


def test_tensor_batches_resume_mid_epoch_on_the_same_crops() -> None:
    full = list(_stream(1).epoch(2))
    resumed = list(_stream(1).epoch(2, start=2))
    assert len(resumed) == len(full) - 2
    for got, want in zip(resumed, full[2:], strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)


def test_prefetching_thread_gives_the_same_batches_as_the_inline_stream() -> None:
    def stream(prefetch: int | None) -> TensorBatches:
        return TensorBatches(
            index_images(N),
            BATCH,
            INDEX_CROPS,
            INDEX_AUGMENT,
            seed=5,
            world_size=1,
            channels_last=False,
            prefetch=prefetch,
        )

    assert stream(None).prefetch == 0  # on a CPU the crops are made in line, between steps
    inline, threaded = list(stream(0).epoch(1, start=1)), list(stream(2).epoch(1, start=1))
    assert len(threaded) == len(inline) == N // BATCH - 1
    for got, want in zip(threaded, inline, strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)


def test_prefetching_thread_stops_when_the_consumer_does() -> None:
    batches = TensorBatches(
        index_images(N), BATCH, INDEX_CROPS, INDEX_AUGMENT, seed=5, channels_last=False, prefetch=1
    )
    it = batches.epoch(0)
    next(it)
    it.close()  # the generator's finally joins the thread
    assert not [t for t in threading.enumerate() if t.name == "openseer-multicrop"]
