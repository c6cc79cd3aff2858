"""Streaming uncurated images from WebDataset tar shards: packing a folder, and the multi-crop batch stream.

A shard source is a ``.tar`` file, a brace pattern (``/data/shard-{000000..000999}.tar``), a folder or file
``shards.json`` (the index ``openseer shards`` writes), or URLs and ``pipe:`` commands listed in such an index
(``pipe:aws s3 cp s3://bucket/shard-000000.tar -``). The number of samples of every shard must be known before
training, because the learning-rate schedule and the epoch boundaries count steps: it comes from the index, or,
for local tar files without one, from their headers.

Packing (:func:`write_shards`, ``openseer shards``) writes the images in a random order drawn from a seed and
records it in the index: the stream below reads each shard front to back through a buffer of ~1,000 samples, so
shards packed in listing order (a folder sorted by source or date) would give batches of neighbouring images,
where the references draw every batch from a permutation of the whole set. Reading shards whose index records no
shuffle (an index written before packing shuffled, or with ``shuffle=false``) logs a warning.

How the stream is cut (:class:`ShardBatches`):

* Ranks: rank r reads shards r, r + W, r + 2W... of the list (like ``wds.split_by_node``, but with the rank
  passed in); ranks never share a shard, so they never share an image.
* Workers: each epoch the rank's shards are shuffled (seeded by seed, epoch and rank) and dealt to the DataLoader
  workers in turn (like ``wds.split_by_worker``); each worker reads its shards through a shuffle buffer seeded the
  same way and cuts them into batches of ``batch_size`` samples. The DataLoader interleaves the workers' batches
  round-robin, so the batch sequence of a rank depends only on (seed, epoch, rank, workers).
* Epoch length: every rank stops after ``steps_per_epoch`` batches, the smallest count every rank can deliver
  whatever the shuffle (``samples // batch_size - (workers - 1)``: a worker drops its last partial batch).
* Resumption at step s of an epoch: the same sequence is rebuilt and its first s batches are skipped before
  decoding (each worker drops the raw samples of its own batches among the first s), so a resumed run sees
  exactly the batches the uninterrupted one would have: none repeated, none skipped. Resuming with another
  number of processes or workers changes the cut of the rest of that epoch.

Undecodable images are dropped from their batch (which is then smaller) and counted in ``skipped``; a batch of
only undecodable images is yielded as an empty list. Every batch position of the stream is one yield, so one
training step (the contract of every batch stream, ``openseer.train.data.BatchStream``): dropping such a batch
instead would shift the steps of the rest of the epoch against the positions that resumption skips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from openseer.config import ConfigError
from openseer.data.folders import DataError, list_images
from openseer.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, BadImageError, SkipLog, load_rgb
from openseer.data.multicrop import AugmentSpec, CropSpec, MultiCrop, collate_multicrop
from openseer.fileio.atomic import atomic_write_text

log = logging.getLogger(__name__)

INDEX = "shards.json"
SHUFFLE_BUFFER = 1000
"""Samples each DataLoader worker of the shard stream draws its next sample from, at random."""
_IMAGE_FIELDS = frozenset(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)


def _wds():  # noqa: ANN202 - the webdataset module
    try:
        import webdataset
    except ImportError as err:
        raise DataError("reading or writing shards needs webdataset: pip install 'openseer[stream]'") from err
    return webdataset


# ============ the shard list ============


@dataclass(frozen=True)
class ShardList:
    """Shard URLs (paths, http(s)/s3 URLs or ``pipe:`` commands) and the number of samples in each."""

    urls: list[str]
    samples: list[int]
    shuffled: bool | None = None
    """Whether the images were packed in a random order, as the index records it (an index without the record,
    written before ``openseer shards`` shuffled: False); None: no index to tell."""

    def __len__(self) -> int:
        return sum(self.samples)


def is_shard_source(source: str) -> bool:
    """Whether ``data.source`` names shards rather than images (see the module docstring)."""
    text = source.strip()
    if text.startswith("pipe:") or text.endswith((".tar", INDEX)):
        return True
    path = Path(text).expanduser()
    return path.is_dir() and (path / INDEX).is_file()


def count_samples(path: Path) -> int:
    """Samples in a local tar file: runs of members sharing a key (the name up to the basename's first dot)."""
    keys, last = 0, None
    with tarfile.open(path) as tar:
        for member in tar:
            name = member.name
            base = name.rsplit("/", 1)[-1]
            if not member.isfile() or base.startswith("__"):
                continue
            key = name[: len(name) - len(base)] + base.split(".", 1)[0]
            if key != last:
                keys, last = keys + 1, key
    return keys


def read_index(path: Path) -> ShardList:
    """An index written by ``openseer shards``; relative URLs are relative to the index's folder."""
    try:
        index = json.loads(path.read_text())
        entries = index["shards"]
        urls = [str(e["url"]) for e in entries]
        samples = [int(e["samples"]) for e in entries]
        shuffled = bool(index.get("shuffled", False))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"cannot read shard index {path}: {err}") from err
    local = ("://" not in u and not u.startswith("pipe:") and not Path(u).is_absolute() for u in urls)
    return ShardList(
        [str(path.parent / u) if rel else u for u, rel in zip(urls, local, strict=True)], samples, shuffled
    )


def resolve_shards(source: str) -> ShardList:
    """The shards named by ``source``, with their sample counts."""
    text = source.strip()
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith(INDEX):
        return read_index(path / INDEX if path.is_dir() else path)
    urls = _wds().shardlists.expand_urls(str(path) if not text.startswith("pipe:") else text)
    counts: list[int] = []
    orders: set[bool | None] = set()
    for url in urls:
        file = Path(url)
        if not file.is_file():
            raise DataError(
                f"shard {url} is not a local file: list remote shards (URLs, pipe: commands) and their sample "
                f"counts in a {INDEX} index (as written by `openseer shards`) and point data.source at it"
            )
        known, shuffled = _index_counts(file.parent)
        counts.append(known[file.name] if file.name in known else count_samples(file))
        orders.add(shuffled if file.name in known else None)
    if not urls:
        raise DataError(f"no shards match {source}")
    return ShardList(urls, counts, orders.pop() if len(orders) == 1 else None)


def _index_counts(folder: Path) -> tuple[dict[str, int], bool | None]:
    """The sample counts of the shards an index in ``folder`` lists, and whether it records them shuffled."""
    index = folder / INDEX
    if not index.is_file():
        return {}, None
    shards = read_index(index)
    return {Path(u).name: n for u, n in zip(shards.urls, shards.samples, strict=True)}, shards.shuffled


# ============ packing a folder ============


@dataclass
class PackReport:
    shards: dict[str, int] = field(default_factory=dict)  # shard file name -> samples
    skipped: SkipLog = field(default_factory=SkipLog)

    @property
    def written(self) -> int:
        return sum(self.shards.values())


@dataclass
class ShardsConfig:
    """The typed config of ``openseer shards``: the arguments of :func:`write_shards`."""

    src: str = ""
    """Folder of images, or a .txt/.csv list of paths."""
    dst: str = ""
    """Output folder of the shards (shard-NNNNNN.tar) and their index (shards.json)."""
    max_size: float = 1e9
    """Bytes per shard at most."""
    max_count: int = 10_000
    """Images per shard at most."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are skipped as decompression bombs (as pretraining's data.max_pixels)."""
    threads: int = 4
    """Threads that decode every image once to check it."""
    shuffle: bool = True
    """Write the images in a random order (drawn from ``seed``, recorded in the index) rather than in listing
    order. Training reads a shard stream front to back through a shuffle buffer of ~1,000 images, so a folder
    listed by source or date would give batches of neighbouring images; shuffled once here, any run of the
    stream is a uniform sample of the set, as the references' samplers draw (a permutation of all images)."""
    seed: int = 0
    """Seed of the shuffle."""

    def validate(self) -> None:
        if not self.src or not self.dst:
            raise ConfigError("shards needs a source and a destination (src=FOLDER dst=FOLDER)")
        if self.max_size <= 0 or self.max_count < 1 or self.threads < 1:
            raise ConfigError("shards: max_size must be > 0, max_count and threads >= 1")


def write_shards(
    src: str | Path,
    dst: str | Path,
    max_size: float = 1e9,
    max_count: int = 10_000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    threads: int = 4,
    shuffle: bool = True,
    seed: int = 0,
) -> PackReport:
    """Pack the images under ``src`` (folder or path list) into ``dst/shard-NNNNNN.tar`` + ``dst/shards.json``.

    Every image is decoded once to check it (undecodable ones are skipped and counted); the file's own bytes are
    stored, not a re-encoding. ``shuffle``: in a random order drawn from ``seed`` (else in listing order), which
    the index records (``"shuffled"``, ``"seed"``). Sample keys are the written order; ``path.txt`` keeps the
    source path.
    """
    wds = _wds()
    paths = list_images(src)
    if shuffle:
        random.Random(seed).shuffle(paths)
    root = Path(src).expanduser()
    out = Path(dst).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    report = PackReport()
    counts: Counter[str] = Counter()

    def check(path: Path) -> str | None:
        try:
            load_rgb(path, max_pixels=max_pixels)
            return None
        except BadImageError as err:
            return err.reason

    writer = wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=max_count, maxsize=max_size, verbose=0)
    with ThreadPoolExecutor(max(1, threads)) as pool:  # decoders release the GIL
        for i, (path, reason) in enumerate(zip(paths, pool.map(check, paths), strict=True)):
            if reason is not None:
                report.skipped.add(path, reason)
                continue
            name = str(path.relative_to(root)) if root.is_dir() else str(path)
            writer.write(
                {"__key__": f"{i:09d}", path.suffix.lower().lstrip("."): path.read_bytes(), "path.txt": name}
            )
            counts[Path(writer.fname).name] += 1
    writer.close()
    report.shards = dict(sorted(counts.items()))
    index = {
        "shards": [{"url": k, "samples": n} for k, n in report.shards.items()],
        "source": str(root),
        "skipped": len(report.skipped),
        "shuffled": shuffle,
        "seed": seed if shuffle else None,
    }
    atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    return report


# ============ the training stream ============


def _seed(*parts: object) -> int:
    """A 63-bit seed from any parts, identical in every process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()) >> 1


def round_robin_resume(batches: Sequence[int], start: int) -> tuple[list[int], int]:
    """Where ``start`` batches into a round-robin over streams of ``batches[j]`` batches each (one batch from
    each stream in turn, passing over those that have run out; the DataLoader's order over its workers) we are:
    how many batches of each stream were taken, and which stream's turn is next."""
    left, skips, taken, turn = list(batches), [0] * len(batches), 0, 0
    while taken < start and any(left):
        if left[turn]:
            left[turn], skips[turn], taken = left[turn] - 1, skips[turn] + 1, taken + 1
        turn = (turn + 1) % len(left)
    while any(left) and not left[turn]:
        turn = (turn + 1) % len(left)
    return skips, turn


class _WorkerStream(IterableDataset):
    """One epoch of one rank: each DataLoader worker reads one stream of shards and yields (crops, skipped)
    batches. Worker i plays stream ``roles[i]``: on resume the streams are rotated so that the DataLoader, which
    always starts its round-robin at worker 0, starts with the stream whose turn it is."""

    def __init__(
        self,
        urls: list[list[str]],
        skips: list[int],
        roles: list[int],
        multicrop: MultiCrop,
        key: tuple,
        batch_size: int,
        shuffle_buffer: int,
        max_pixels: int,
    ) -> None:
        super().__init__()
        self.urls, self.skips, self.roles, self.multicrop, self.key = urls, skips, roles, multicrop, key
        self.batch_size, self.shuffle_buffer, self.max_pixels = batch_size, shuffle_buffer, max_pixels

    def _item(self, sample: dict[str, Any], seed: int) -> tuple[list[torch.Tensor], int] | BadImageError:
        name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        field_name = next((k for k in sample if k.lower() in _IMAGE_FIELDS), None)
        try:
            if field_name is None:
                raise BadImageError(name, "no image in sample")
            # decoded at the reduced size the crops allow (JPEG DCT scaling), as a file is in the loader
            img = load_rgb(sample[field_name], self.max_pixels, self.multicrop.source_side, name=name)
        except BadImageError as err:
            return err
        with torch.random.fork_rng(devices=[]):  # per-sample crops, whichever process runs them
            torch.manual_seed(seed)
            return self.multicrop(img), 0

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[tuple[str, str]]]]:
        wds = _wds()
        info = get_worker_info()
        role = self.roles[info.id if info is not None else 0]
        if not self.urls[role]:
            return
        stream = iter(
            wds.DataPipeline(
                wds.SimpleShardList(self.urls[role]),
                wds.tarfile_to_samples(),
                wds.shuffle(
                    self.shuffle_buffer,
                    initial=self.shuffle_buffer,
                    rng=random.Random(_seed(*self.key, role)),
                ),
            )
        )
        batch: list[dict[str, Any]] = []
        done = 0
        for sample in stream:
            batch.append(sample)
            if len(batch) < self.batch_size:
                continue
            if done >= self.skips[role]:  # batches before the resume point are dropped undecoded
                items = [self._item(s, _seed(*self.key, role, done, i)) for i, s in enumerate(batch)]
                crops, _, bad = collate_multicrop(items)
                yield crops, [(err.path, err.reason) for err in bad]
            batch, done = [], done + 1


class ShardBatches:
    """Multi-crop batches streamed from tar shards; the contract of ``openseer.train.data.BatchStream``: one
    list of crops per batch position (empty when none of its images was readable), ``steps_per_epoch - start``
    of them for ``epoch(e, start)``, the same as the tail of ``epoch(e)``."""

    def __init__(
        self,
        shards: ShardList,
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
        shuffle_buffer: int = SHUFFLE_BUFFER,
    ) -> None:
        if len(shards.urls) < world_size:
            raise DataError(
                f"{len(shards.urls)} shards cannot be split over {world_size} processes: pack smaller shards "
                "(openseer shards max_count=...)"
            )
        self.shards, self.batch_size, self.multicrop = shards, batch_size, MultiCrop(crops, aug)
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.device, self.channels_last = torch.device(device), channels_last
        self.max_pixels, self.shuffle_buffer = max_pixels, shuffle_buffer
        self.steps_per_epoch = min(self._guaranteed_batches(r) for r in range(world_size))
        if self.steps_per_epoch <= 0:
            raise DataError(
                f"{len(shards)} images in {len(shards.urls)} shards cannot fill one batch of {batch_size} per "
                f"process and worker ({world_size} processes, {workers} workers); lower optim.batch_size or "
                "data.workers"
            )
        self.skipped = SkipLog()
        if shards.shuffled is False and rank == 0:
            log.warning(
                "these %d shards hold their images in listing order (their %s records no shuffle): every batch "
                "draws from about %d neighbouring images of that order, not from the whole set; repack them "
                "with `openseer shards` (which shuffles them)",
                len(shards.urls),
                INDEX,
                shuffle_buffer,
            )

    def _guaranteed_batches(self, rank: int) -> int:
        mine = self.shards.samples[rank :: self.world_size]
        workers = min(max(1, self.workers), len(mine))
        return sum(mine) // self.batch_size - (workers - 1)

    def _worker_urls(self, epoch: int) -> list[list[str]]:
        mine = list(range(self.rank, len(self.shards.urls), self.world_size))
        random.Random(_seed(self.seed, epoch, self.rank)).shuffle(mine)
        n = max(1, self.workers)
        return [[self.shards.urls[i] for i in mine[w::n]] for w in range(n)]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        urls = self._worker_urls(epoch)
        counts = dict(zip(self.shards.urls, self.shards.samples, strict=True))
        batches = [sum(counts[u] for u in mine) // self.batch_size for mine in urls]
        skips, turn = round_robin_resume(batches, start)
        stream = _WorkerStream(
            urls,
            skips,
            [(turn + i) % len(urls) for i in range(len(urls))],
            self.multicrop,
            (self.seed, epoch, self.rank),
            self.batch_size,
            self.shuffle_buffer,
            self.max_pixels,
        )
        loader = DataLoader(
            stream, batch_size=None, num_workers=self.workers, pin_memory=self.device.type == "cuda"
        )
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        wanted = self.steps_per_epoch - start
        if wanted <= 0:
            return
        for crops, skipped in loader:
            for path, reason in skipped:
                self.skipped.add(path, reason)
            # one yield per batch position, an empty list when none of its images was readable
            yield [c.to(self.device, non_blocking=True, memory_format=fmt) for c in crops]
            wanted -= 1
            if wanted == 0:
                return
        raise DataError(f"rank {self.rank}: the shards of epoch {epoch} ran out {wanted} batches early")
