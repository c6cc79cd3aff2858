"""Pretraining data: where images come from (held out as :mod:`openseer.data.labelled` splits them), and the
multi-crop batch streams.

The batch streams share one contract (:class:`BatchStream`), ``epoch(e, start) -> iterator of crop lists``,
deterministic in (seed, epoch, step) so an interrupted run resumes on exactly the batches it would have seen:

* :class:`TensorBatches`: the whole set is a uint8 tensor in memory (built-in data, or a folder decoded once
  into the cache); multi-crop runs batched on tensors, between steps on a CPU, one step ahead in a background
  thread on a GPU. The fast path for small images.
* :class:`LoaderBatches`: images decoded and augmented one by one in DataLoader workers (any size).
* ``ShardBatches`` (:mod:`openseer.data.shards`): images streamed from WebDataset tar shards.

Every process draws a disjoint slice of the same global permutation; the slices of one step together form the
global batch of a single-process run of batch ``batch_size * world_size``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from openseer import distributed
from openseer.data.batched_crops import batched_multicrop
from openseer.data.cache import cached_decode, default_cache_dir
from openseer.data.folders import DataError, Skipped, UnlabelledImages
from openseer.data.images import DEFAULT_MAX_PIXELS, SkipLog
from openseer.data.labelled import HOLDOUT_FILE, EvalData, Split, split_source
from openseer.data.multicrop import AugmentSpec, CropSpec, MultiCrop, collate_multicrop
from openseer.data.shards import ShardList, is_shard_source, resolve_shards
from openseer.train.config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class PretrainData:
    """Unlabelled training images plus, when labels exist, a kNN bank (train part) and a held-out test part."""

    train_images: torch.Tensor | None = None  # (N,3,H,W) uint8, tensor path
    train_paths: list[Path] | None = None  # loader path
    train_shards: ShardList | None = None  # streamed from tar shards (openseer.data.shards)
    bank: EvalData | None = None
    test: EvalData | None = None
    description: str = ""
    skipped: SkipLog = field(default_factory=SkipLog)

    def training_set(self, name: str) -> EvalData:
        """The images trained on as a set to embed: the labelled bank, or the unlabelled images (rows of the
        decoded-image cache, or files) called ``name``. Not for tar shards, which are streamed."""
        if self.train_shards is not None:
            raise ValueError("images streamed from tar shards are not held as a set")
        if self.bank is not None:
            return self.bank
        return EvalData(name, images=self.train_images, paths=self.train_paths)

    def __len__(self) -> int:
        if self.train_shards is not None:
            return len(self.train_shards)
        return len(self.train_images) if self.train_images is not None else len(self.train_paths or [])


def prepare_data(
    cfg: DataConfig, seed: int = 0, progress: bool = False, run_dir: str | Path | None = None
) -> PretrainData:
    """Resolve ``cfg.source`` into training images and (when labelled) the evaluation split.

    The split is :func:`openseer.data.labelled.split_source`'s (``cfg.holdout`` of each class, drawn with
    ``seed``); with ``run_dir``, the main process records it in ``run_dir/holdout.json``
    (:class:`openseer.data.labelled.Holdout`), which every command that scores the run reads.
    """
    if is_shard_source(cfg.source):
        shards = resolve_shards(cfg.source)
        return PretrainData(
            train_shards=shards,
            description=f"{cfg.source}: {len(shards)} images in {len(shards.urls)} shards",
        )
    split = split_source(cfg.source, cfg.labels, cfg.holdout, seed)
    if run_dir is not None and distributed.is_main():
        split.record().save(Path(run_dir) / HOLDOUT_FILE)
    return pretraining_data(split, cfg, progress)


def pretraining_data(split: Split, cfg: DataConfig, progress: bool = False) -> PretrainData:
    """The images of ``split`` as pretraining reads them: in memory (built-in data, or files decoded once into
    the cache when ``cfg.cache_size`` is set) or as files. The kNN bank is the labelled training part; the test
    part is the held-out one (the training part itself when nothing is held out)."""
    train, test = split.train, split.test
    n_test = len(test) if test is not None else 0
    data = PretrainData(description=f"{split.source}: {len(train) + n_test} images")
    if train.images is None and cfg.cache_size is not None:
        paths = list(train.paths or []) + (list(test.paths or []) if test is not None else [])
        # absolute, as the evaluation lists them from the run's holdout.json: one cache entry for both
        paths = [Path(p).absolute() for p in paths]
        images, kept, data.skipped = cached_decode(
            paths,
            cfg.cache_size,
            default_cache_dir(),
            num_threads=max(1, cfg.workers),
            progress=progress,
            max_pixels=cfg.max_pixels,
        )
        # row of `images` of each path (-1 when the file could not be decoded); training paths come first
        where = torch.full((len(paths),), -1, dtype=torch.long)
        where[kept] = torch.arange(len(kept))
        train, test = (
            _decoded(train, images, where[: len(train)]),
            _decoded(test, images, where[len(train) :]) if test is not None else None,
        )
    if train.images is not None:
        data.train_images = train.images
    else:
        data.train_paths = list(train.paths or [])
    if split.labelled:
        data.bank, data.test = train, test if test is not None else train
        data.description += f" in {len(train.classes)} classes, {n_test} held out for evaluation"
    return data


def _decoded(part: EvalData, images: torch.Tensor, rows: torch.Tensor) -> EvalData:
    """``part`` as in-memory images: rows (N,) of ``images`` for each of its files, -1 for those that failed.

    The decoded rows of one part are consecutive (the cache keeps the files that decoded, in order), so the part
    is a slice of ``images``: a view, never a copy of a cache that may be larger than memory."""
    ok = rows >= 0
    targets = part.targets[ok] if part.targets is not None else None
    kept = rows[ok]
    first = int(kept[0]) if len(kept) else 0
    if not torch.equal(kept, torch.arange(first, first + len(kept))):
        raise ValueError("the decoded rows of one part of the split must be consecutive")
    return EvalData(part.name, targets, list(part.classes), images=images[first : first + len(kept)])


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_033 + step * 1_009 + rank


class BatchStream(Protocol):
    """What the training loop reads its batches from.

    ``epoch(e, start)`` yields exactly ``steps_per_epoch - start`` items, one per batch position of the epoch
    from ``start`` on, and they are the items ``epoch(e)`` yields after its first ``start``. An item is the list
    of multi-crop batches ``[(B, 3, s_k, s_k) for each crop k]`` of one position; B is smaller when some of its
    files were unreadable, and the list is empty when none was (those files are counted in ``skipped``). Each
    item is one training step, so that a run resumed at step s, which restarts the epoch at position
    ``s % steps_per_epoch``, sees exactly the batches the uninterrupted run saw.
    """

    steps_per_epoch: int
    skipped: SkipLog

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[torch.Tensor]]: ...


def full_global_batches(n_images: int, batch_size: int, world_size: int) -> int:
    """Steps in an epoch of ``n_images``: whole global batches only (the last partial one is dropped; every
    epoch reshuffles); a clear error when there is not even one."""
    steps = n_images // (batch_size * world_size)
    if steps == 0:
        raise DataError(
            f"{n_images} images cannot fill one global batch of {batch_size * world_size}; "
            "lower optim.batch_size or add images"
        )
    return steps


class TensorBatches:
    """Batched multi-crop over a uint8 tensor (in memory, or memory-mapped from the decoded-image cache: a step
    reads only the rows of its batch).

    ``rows``: the rows of ``images`` to draw from (e.g. the training part of a cached set), in place of
    ``images[rows]``, which would copy them all.

    ``prefetch > 0``: augmentation runs that many steps ahead in a background thread; ``0``: in the consumer's
    thread, when asked for. The default (None) is 2 on a GPU, whose step leaves the host free, and 0 on a CPU:
    there a prefetching thread's torch ops oversubscribe the cores the step's own threads use (measured in
    docs/benchmarks.md#speed-at-total-stride-16-cifar-10-folder-cpu-preset-regnety-200mf-2x32-crops-batch-256).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        crops: Sequence[CropSpec],
        aug: AugmentSpec,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        prefetch: int | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        self.images, self.batch_size, self.crops, self.aug = images, batch_size, list(crops), aug
        self.rows, self._count = rows, len(images) if rows is None else len(rows)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device, self.channels_last = torch.device(device), channels_last
        self.prefetch = prefetch if prefetch is not None else (2 if self.device.type == "cuda" else 0)
        self.steps_per_epoch = full_global_batches(self._count, batch_size, world_size)
        self.skipped = SkipLog()

    def _make(self, perm: torch.Tensor, epoch: int, step: int) -> list[torch.Tensor]:
        start = (step * self.world_size + self.rank) * self.batch_size
        idx = perm[start : start + self.batch_size]
        batch = self.images[idx if self.rows is None else self.rows[idx]]
        if self.device.type == "cuda":  # page-locked, so the copy overlaps the step running on the GPU
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        gen = torch.Generator(device=self.device).manual_seed(_step_seed(self.seed, epoch, step, self.rank))
        return batched_multicrop(batch, self.crops, self.aug, generator=gen, channels_last=self.channels_last)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        perm = _epoch_permutation(self._count, self.seed, epoch)
        if self.prefetch <= 0:
            for step in range(start, self.steps_per_epoch):
                yield self._make(perm, epoch, step)
            return
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():  # never block forever once the consumer is gone
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for step in range(start, self.steps_per_epoch):
                    if not put(self._make(perm, epoch, step)):
                        return
                put(None)
            except BaseException as err:  # surface augmentation errors in the training thread
                put(err)

        worker = threading.Thread(target=produce, daemon=True, name="openseer-multicrop")
        worker.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()  # a torch op still running at interpreter exit would abort the process


class _SeededMultiCrop(Dataset):
    """Per-image multi-crop whose randomness depends only on (seed, epoch, index), whichever worker runs it."""

    def __init__(self, images: UnlabelledImages, multicrop: MultiCrop, seed: int) -> None:
        self.images, self.multicrop, self.seed = images, multicrop, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):  # noqa: ANN204 - (crops, index) or Skipped
        epoch, index = key
        item = self.images[index]
        if isinstance(item, Skipped):
            return item
        img, _ = item
        if get_worker_info() is None:  # main process: do not disturb the training RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_step_seed(self.seed, epoch, index, 0))
                return self.multicrop(img), index
        torch.manual_seed(_step_seed(self.seed, epoch, index, 0))
        return self.multicrop(img), index


class _EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(
        self, n: int, batch_size: int, seed: int, epoch: int, start: int, rank: int, world: int
    ) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start, self.rank, self.world = start, rank, world

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = _epoch_permutation(self.n, self.seed, self.epoch).tolist()
        for step in range(self.start, self.start + len(self)):
            first = (step * self.world + self.rank) * self.batch_size
            yield [(self.epoch, i) for i in perm[first : first + self.batch_size]]


class LoaderBatches:
    """Per-image decoding and torchvision-v2 multi-crop in DataLoader workers; bad files are skipped and counted.

    A batch loses its unreadable files; one that had nothing else is yielded as an empty list.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        batch_size: int,
        crops: Sequence[CropSpec],
        aug: AugmentSpec,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 2,
        device: torch.device | str = "cpu",
        channels_last: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        multicrop = MultiCrop(crops, aug)
        # each photo decoded at the reduced size its crops allow (JPEG DCT scaling): never below the side from
        # which the smallest random-resized crop would have to be enlarged
        images = UnlabelledImages(list(paths), max_pixels=max_pixels, min_side=multicrop.source_side)
        self.dataset = _SeededMultiCrop(images, multicrop, seed)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.workers, self.device, self.channels_last = workers, torch.device(device), channels_last
        self.steps_per_epoch = full_global_batches(len(paths), batch_size, world_size)
        self.skipped = SkipLog()

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        sampler = _EpochBatchSampler(
            len(self.dataset), self.batch_size, self.seed, epoch, start, self.rank, self.world_size
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.workers,
            collate_fn=collate_multicrop,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for crops, _, skipped in loader:
            for item in skipped:
                self.skipped.add(item.path, item.reason)
            # a batch of only unreadable files is an empty list, so that step numbers stay those of the batches
            yield [c.to(self.device, non_blocking=True, memory_format=fmt) for c in crops]
