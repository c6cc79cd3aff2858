"""The batch streams' one contract (``openseer.train.data.BatchStream``): one item per batch position, an empty
one when none of its images was readable, and ``epoch(e, s)`` the tail of ``epoch(e)``; and a pretraining over
WebDataset shards full of unreadable files, killed with SIGKILL and resumed, that sees exactly the images of an
uninterrupted run at every step.

Images are flat colours whose red and green channels encode their index (PNG keeps them exact) and augmentation
is reduced to crops and flips, so the index behind every crop can be read back from its pixels. The pretraining
runs are this file run as a script (``python test_batch_streams.py RECORDS overrides...``), which wraps the
shard stream to write the indices of every batch the training loop draws, step by step.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import tiny_overrides
from support.photos import photo_jpeg, record_decodes

from openseer.data import folders
from openseer.data.images import crop_source_side
from openseer.data.multicrop import AugmentSpec, CropSpec
from openseer.data.shards import ShardBatches, resolve_shards
from openseer.train.data import BatchStream, LoaderBatches, TensorBatches

BATCH = 4
SHARDS, PER_SHARD = 4, 16  # 64 samples, of which BAD_FRACTION unreadable
BAD_FRACTION = 0.6
PLAIN = AugmentSpec(color_p=0.0, grayscale_p=0.0, blur_p=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
CROPS = [CropSpec(6, 2, (0.5, 1.0))]


def ids_of(crop: torch.Tensor) -> list[int]:
    """The image index behind each row of a batch of flat-colour crops."""
    rgb = (crop.float() * 255).round().long()
    assert (rgb == rgb[:, :, :1, :1]).all()
    return (rgb[:, 0, 0, 0] + 256 * rgb[:, 1, 0, 0]).tolist()


def _png(index: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (10, 12), (index % 256, index // 256, 7)).save(out, format="PNG")
    return out.getvalue()


def _samples(n: int, seed: int = 0) -> list[tuple[int, bool]]:
    """(index, readable) for n samples, BAD_FRACTION of them unreadable, in a seeded order."""
    rng = random.Random(seed)
    return [(i, rng.random() >= BAD_FRACTION) for i in range(n)]


def write_shards(root: Path) -> Path:
    """SHARDS tar shards of PER_SHARD samples (a PNG, or junk named .jpg) and their shards.json index."""
    root.mkdir(parents=True, exist_ok=True)
    samples = _samples(SHARDS * PER_SHARD)
    entries = []
    for s in range(SHARDS):
        name = f"shard-{s:06d}.tar"
        with tarfile.open(root / name, "w") as tar:
            for index, readable in samples[s * PER_SHARD : (s + 1) * PER_SHARD]:
                data = _png(index) if readable else b"\xff\xd8\xff\xe0 not really a jpeg"
                member = tarfile.TarInfo(f"{index:09d}.{'png' if readable else 'jpg'}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        entries.append({"url": name, "samples": PER_SHARD})
    (root / "shards.json").write_text(json.dumps({"shards": entries}))
    return root


def write_folder(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, readable in _samples(SHARDS * PER_SHARD):
        path = root / f"{index:03d}.{'png' if readable else 'jpg'}"
        path.write_bytes(_png(index) if readable else b"\xff\xd8\xff\xe0 junk")
        paths.append(path)
    return paths


def _items(stream: BatchStream, epoch: int, start: int = 0) -> list[list[int]]:
    return [ids_of(crops[0]) if crops else [] for crops in stream.epoch(epoch, start)]


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BatchStream]:
    root = tmp_path_factory.mktemp("streams")
    common = dict(batch_size=BATCH, crops=CROPS, aug=PLAIN, seed=3, channels_last=False)
    n = SHARDS * PER_SHARD
    flat = torch.tensor([[i % 256, i // 256, 7] for i in range(n)], dtype=torch.uint8)
    return {
        "tensor": TensorBatches(flat[:, :, None, None].expand(n, 3, 10, 12).contiguous(), **common),
        "loader": LoaderBatches(write_folder(root / "folder"), workers=0, **common),
        "shards": ShardBatches(
            resolve_shards(str(write_shards(root / "shards"))), workers=2, shuffle_buffer=8, **common
        ),
    }


@pytest.mark.parametrize("kind", ["tensor", "loader", "shards"])
def test_one_item_per_batch_position_and_resume_is_the_tail(streams: dict, kind: str) -> None:
    stream = streams[kind]
    full = _items(stream, 1)
    assert len(full) == stream.steps_per_epoch
    if kind != "tensor":  # the data is made so that whole batches are unreadable
        assert [] in full and any(0 < len(b) < BATCH for b in full)
        assert len(stream.skipped) > 0
    for start in (5, stream.steps_per_epoch - 1):
        assert _items(stream, 1, start) == full[start:], f"from {start}"


# ============ pretraining killed and resumed ============


def _command(shards: Path, out: Path, records: Path, *extra: str) -> list[str]:
    args = tiny_overrides(
        shards,
        out,
        data__workers=2,
        crops="[{size: 8, count: 2, scale: [0.5, 1.0]}]",
        augment__color_p=0,
        augment__grayscale_p=0,
        augment__blur_p=0,
        augment__mean="[0, 0, 0]",
        augment__std="[1, 1, 1]",
        model__head_bn=False,  # batches of a single readable image
        optim__batch_size=BATCH,
        optim__epochs=2,
        run__seed=5,
        run__threads=1,
        run__evaluate=False,
        run__checkpoint_every=1,
        run__keep_checkpoints=2,
    )
    return [sys.executable, __file__, str(records), *extra, *args]


def _records(path: Path) -> dict[int, list[int]]:
    """step -> image indices of the batch the loop drew at that step (the last full line wins)."""
    steps = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by the kill
                continue
            steps[entry["step"]] = entry["ids"]
    return steps


def test_the_loader_decodes_photos_no_larger_than_their_crops_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is decoded at the reduced size the crops allow (JPEG DCT scaling), never below the side from
    which the smallest random-resized crop would be enlarged."""
    paths = [photo_jpeg(tmp_path / f"{i}.jpg", 1600, 1200, seed=i) for i in range(4)]
    crops = [CropSpec(96, 2, (0.2, 1.0)), CropSpec(32, 2, (0.05, 0.2))]
    side = max(crop_source_side(96, 0.2), crop_source_side(32, 0.05))
    assert side == crop_source_side(96, 0.2) == 248
    calls = record_decodes(monkeypatch, folders)
    loader = LoaderBatches(paths, batch_size=2, crops=crops, aug=PLAIN, seed=0, workers=0, channels_last=False)
    first, second = loader.epoch(0)  # two batch positions of two photos
    assert [tuple(c.shape) for c in first] == [tuple(c.shape) for c in second] == [(2, 3, 96, 96)] * 2 + [(2, 3, 32, 32)] * 2
    assert len(calls) == 4 and {c.min_side for c in calls} == {side}
    assert {c.size for c in calls} == {(400, 300)}  # 1/4 of 1600x1200: 1/8 would leave 150 < 248 px


@pytest.mark.slow
def test_shard_run_killed_and_resumed_sees_the_images_of_an_uninterrupted_run(tmp_path: Path) -> None:
    from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint

    shards = write_shards(tmp_path / "shards")
    total = 2 * ShardBatches(resolve_shards(str(shards)), BATCH, CROPS, PLAIN, seed=0).steps_per_epoch
    kill_after = random.Random(20250612).randint(3, total - 8)
    print(f"killing the run once it draws the batch of step {kill_after} (of {total})")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    straight_log, killed_log = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"

    straight = subprocess.Popen(_command(shards, tmp_path / "straight", straight_log), **quiet)
    victim = subprocess.Popen(_command(shards, tmp_path / "killed", killed_log), **quiet)
    try:
        deadline = time.monotonic() + 180
        while max(_records(killed_log), default=-1) < kill_after and victim.poll() is None:
            assert time.monotonic() < deadline, "the run never reached the step to kill it at"
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=60)
        _, err = straight.communicate(timeout=180)
    finally:
        for proc in (straight, victim):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert straight.returncode == 0, err[-3000:]
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resume_at = load_checkpoint(latest_checkpoint(tmp_path / "killed" / "checkpoints"))["step"]
    assert 0 < resume_at <= kill_after

    resumed_log = tmp_path / "resumed.jsonl"
    resumed = subprocess.run(
        _command(shards, tmp_path / "killed", resumed_log, "--resume"), **quiet, timeout=180
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want = _records(straight_log)
    assert sorted(want) == list(range(total))
    before, after = _records(killed_log), _records(resumed_log)
    assert sorted(after) == list(range(resume_at, total))
    seen = {**{s: ids for s, ids in before.items() if s < resume_at}, **after}
    for step in range(total):
        assert seen[step] == want[step], f"step {step} (resumed at {resume_at})"
    # what made the check worth running: steps with batches of only unreadable files, before the resume point
    assert [] in [want[s] for s in range(resume_at)], "no empty batch before the resume point"


def _record_batches(records: Path) -> None:
    """Wrap the shard stream so that every batch the loop draws is written down with its step."""
    original = ShardBatches.epoch

    def epoch(self: ShardBatches, epoch: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        with records.open("a") as out:
            for i, crops in enumerate(original(self, epoch, start)):
                ids = ids_of(crops[0]) if crops else []
                out.write(json.dumps({"step": epoch * self.steps_per_epoch + start + i, "ids": ids}) + "\n")
                out.flush()
                yield crops

    ShardBatches.epoch = epoch


if __name__ == "__main__":
    from openseer.cli import main

    _record_batches(Path(sys.argv[1]))
    sys.exit(main(["pretrain", *sys.argv[2:], "run.evaluate=false"]))
