"""WebDataset shards: packing a folder (bad files skipped and counted, images shuffled with a seed), sources, and
the per-rank stream (a warning for shards packed in listing order):
disjoint ranks covering the epoch, and mid-epoch resumption on exactly the remaining batches.

Images are flat colours whose red and green channels encode their index (PNG keeps them exact) and augmentation is
reduced to crops and flips, so the index behind every crop can be read back from its pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import INDEX_AUGMENT, INDEX_CROPS, crop_indices
from support.photos import photo_jpeg, record_decodes

import openseer.data.shards as shard_stream
from openseer.cli import main as cli_main
from openseer.data.folders import DataError
from openseer.data.multicrop import CropSpec, MultiCrop
from openseer.data.shards import (
    ShardBatches,
    ShardList,
    count_samples,
    is_shard_source,
    resolve_shards,
    round_robin_resume,
)
from openseer.train.config import DataConfig
from openseer.train.data import prepare_data

N, PER_SHARD, BATCH = 32, 8, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 flat images + 1 broken file, packed by the command line into 4 shards of 8."""
    src = tmp_path_factory.mktemp("src")
    for i in range(N):
        Image.new("RGB", (10, 12), (i % 256, i // 256, 7)).save(src / f"img{i:03d}.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    dst = tmp_path_factory.mktemp("shards")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(["shards", str(src), str(dst), f"max_count={PER_SHARD}", "threads=2"]) == 0
    (dst / "stdout.txt").write_text(printed.getvalue())
    return dst


def stream(shards: ShardList, rank: int = 0, world: int = 1, workers: int = 0) -> ShardBatches:
    return ShardBatches(
        shards, BATCH, INDEX_CROPS, INDEX_AUGMENT, seed=1, rank=rank, world_size=world, workers=workers, channels_last=False,
        shuffle_buffer=5,
    )  # fmt: skip


def epoch_ids(batches: ShardBatches, epoch: int, start: int = 0) -> list[list[int]]:
    out = []
    for crops in batches.epoch(epoch, start):
        per_crop = [crop_indices(c) for c in crops]
        assert all(p == per_crop[0] for p in per_crop)  # the crops of a row come from one image
        out.append(per_crop[0])
    return out


def test_pack_writes_shards_and_index_and_counts_bad_files(shards: Path) -> None:
    assert sorted(p.name for p in shards.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(4)]
    listed = resolve_shards(str(shards))
    assert listed.samples == [PER_SHARD] * 4 and len(listed) == N
    assert all(count_samples(Path(u)) == PER_SHARD for u in listed.urls)
    out = (shards / "stdout.txt").read_text()
    assert "wrote 32 images in 4 shards" in out and "skipped 1 file" in out
    assert json.loads((shards / "shards.json").read_text())["skipped"] == 1


def test_sources(shards: Path, tmp_path: Path) -> None:
    pattern = str(shards / "shard-{000001..000002}.tar")
    assert (
        is_shard_source(pattern)
        and is_shard_source(str(shards))
        and is_shard_source(str(shards / "shards.json"))
    )
    assert not is_shard_source(str(tmp_path))
    assert resolve_shards(pattern).urls == [
        str(shards / "shard-000001.tar"),
        str(shards / "shard-000002.tar"),
    ]
    lone = tmp_path / "lone.tar"  # no index next to it: counted from its headers
    lone.write_bytes((shards / "shard-000003.tar").read_bytes())
    assert resolve_shards(str(lone)).samples == [PER_SHARD]
    with pytest.raises(DataError, match="shards.json"):
        resolve_shards("pipe:cat /nowhere/shard-000000.tar")
    data = prepare_data(DataConfig(source=pattern))
    assert data.train_shards is not None and len(data) == 2 * PER_SHARD


def test_two_ranks_see_disjoint_images_that_cover_the_epoch(shards: Path) -> None:
    listed = resolve_shards(str(shards))
    seen = []
    for rank in range(2):
        batches = stream(listed, rank=rank, world=2)
        assert batches.steps_per_epoch == N // 2 // BATCH
        ids = epoch_ids(batches, 0)
        assert len(ids) == batches.steps_per_epoch and all(len(b) == BATCH for b in ids)
        seen.append([i for b in ids for i in b])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(N))


def test_epochs_are_reshuffled(shards: Path) -> None:
    batches = stream(resolve_shards(str(shards)))
    assert epoch_ids(batches, 0) != epoch_ids(batches, 1)


def test_round_robin_resume() -> None:
    assert round_robin_resume([4, 2], 0) == ([0, 0], 0)
    assert round_robin_resume([4, 2], 3) == ([2, 1], 1)
    assert round_robin_resume([4, 2], 5) == ([3, 2], 0)  # stream 1 has run out: the rest come from stream 0
    assert round_robin_resume([1, 3, 2], 5) == ([1, 2, 2], 1)


@pytest.mark.slow
def test_resume_mid_epoch_neither_repeats_nor_skips_with_workers(shards: Path) -> None:
    """3 shards of 8 on 2 workers: one worker holds 4 batches, the other 2, so the DataLoader's round-robin runs
    out of one worker mid-epoch; resuming before and after that point must continue on the very same crops."""
    listed = resolve_shards(str(shards))
    three = ShardList(listed.urls[:3], listed.samples[:3])
    full = list(stream(three, workers=2).epoch(0))
    assert len(full) == 3 * PER_SHARD // BATCH - 1  # one batch of slack per extra worker
    for start in (1, 4):
        resumed = list(stream(three, workers=2).epoch(0, start))
        assert len(resumed) == len(full) - start
        for got, want in zip(resumed, full[start:], strict=True):
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.slow
def test_pretrain_streams_from_shards(shards: Path, tmp_path: Path) -> None:
    from openseer.config import load_config
    from openseer.train.config import PretrainConfig
    from openseer.train.pretrain import pretrain

    cfg = load_config(
        PretrainConfig,
        ["cpu"],
        [
            f"data.source={shards}",
            "data.workers=0",
            "crops=[{size: 8, count: 2, scale: [0.5, 1.0]}]",
            "model.stem=small",
            "model.prototypes=10",
            "optim.batch_size=8",
            "run.max_steps=2",
            f"run.out_dir={tmp_path}",
            "run.progress=false",
            "run.tensorboard=false",
        ],
    )
    result = pretrain(cfg)
    assert result.steps == 2 and result.images_seen == 16 and result.evaluation is None


# ---- the order the images are packed in ----


def _packed_order(folder: Path) -> list[str]:
    """Source paths of the samples, shard after shard, in the order they were written."""
    names = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            names += [tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".path.txt")]
    return names


def _pack(src: Path, dst: Path, *extra: str) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["shards", str(src), str(dst), f"max_count={PER_SHARD}", "threads=2", *extra]) == 0
    return dst


def test_pack_shuffles_with_a_seed_and_records_it(shards: Path, tmp_path: Path) -> None:
    listing = [f"img{i:03d}.png" for i in range(N)]
    order = _packed_order(shards)
    assert sorted(order) == listing and order != listing  # every image once, not in listing order
    index = json.loads((shards / "shards.json").read_text())
    assert index["shuffled"] is True and index["seed"] == 0
    assert resolve_shards(str(shards)).shuffled is True
    assert resolve_shards(str(shards / "shard-{000000..000003}.tar")).shuffled is True
    assert "shuffled with seed 0" in (shards / "stdout.txt").read_text()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(N):
        Image.new("RGB", (10, 12), (i % 256, i // 256, 7)).save(src / f"img{i:03d}.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # the fixture's listing
    assert _packed_order(_pack(src, tmp_path / "again")) == order  # the same seed, the same order
    assert _packed_order(_pack(src, tmp_path / "other", "seed=1")) not in (order, listing)
    plain = _pack(src, tmp_path / "plain", "shuffle=false")
    assert _packed_order(plain) == listing
    assert resolve_shards(str(plain)).shuffled is False


def test_reading_unshuffled_shards_warns(
    shards: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for tar in shards.glob("*.tar"):
        (old / tar.name).write_bytes(tar.read_bytes())
    index = json.loads((shards / "shards.json").read_text())
    del index["shuffled"], index["seed"]  # an index written before packing shuffled: counts as unshuffled
    (old / "shards.json").write_text(json.dumps(index))
    listed = resolve_shards(str(old))
    assert listed.shuffled is False
    with caplog.at_level(logging.WARNING, logger="openseer.data.shards"):
        stream(listed)
    assert "listing order" in caplog.text and "openseer shards" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="openseer.data.shards"):
        stream(resolve_shards(str(shards)))
        stream(resolve_shards(str(shards)), rank=1, world=2)
    assert caplog.text == ""
    # an unshuffled stream warns on its first process only
    with caplog.at_level(logging.WARNING, logger="openseer.data.shards"):
        stream(listed, rank=1, world=2)
    assert caplog.text == ""


def test_the_shard_stream_decodes_photos_no_larger_than_their_crops_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sample's bytes go through load_rgb itself, reduced as the loader reduces a file."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        photo_jpeg(src / f"{i}.jpg", 1600, 1200, seed=i)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["shards", str(src), str(tmp_path / "out"), "max_count=2", "threads=1"]) == 0
    crops = [CropSpec(96, 2, (0.2, 1.0))]
    calls = record_decodes(monkeypatch, shard_stream)
    batches = ShardBatches(
        resolve_shards(str(tmp_path / "out")), 2, crops, INDEX_AUGMENT, seed=0, workers=0, channels_last=False
    )
    items = list(batches.epoch(0))
    assert [tuple(c.shape) for c in items[0]] == [(2, 3, 96, 96)] * 2 and not batches.skipped
    assert len(calls) == 4 and all(isinstance(c.source, bytes) for c in calls)
    assert {c.min_side for c in calls} == {MultiCrop(crops).source_side} == {248}
    assert {c.size for c in calls} == {(400, 300)}  # 1/4 of 1600x1200
