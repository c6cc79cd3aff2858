"""``openseer shards``: pack a folder of images into WebDataset tar shards for streaming pretraining."""

from __future__ import annotations

import argparse

from openseer.cli.command import Command, Positional


def _shards(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a ShardsConfig
    from openseer.data.shards import INDEX, write_shards

    report = write_shards(
        cfg.src,
        cfg.dst,
        max_size=cfg.max_size,
        max_count=cfg.max_count,
        max_pixels=cfg.max_pixels,
        threads=cfg.threads,
        shuffle=cfg.shuffle,
        seed=cfg.seed,
    )
    order = f"shuffled with seed {cfg.seed}" if cfg.shuffle else "in listing order"
    print(
        f"wrote {report.written} images in {len(report.shards)} shards to {cfg.dst} ({order}; index: {INDEX})"
    )
    if len(report.skipped):
        print(report.skipped.summary())
    print(f"train on them with: openseer pretrain data.source={cfg.dst}")
    return 0


COMMANDS = [
    Command(
        name="shards",
        help="pack a folder of images into WebDataset tar shards",
        description="Pack the images under SRC (a folder or a .txt/.csv list) into DST/shard-NNNNNN.tar and "
        "DST/shards.json, in a random order (shuffle=false: listing order). Every image is decoded once to check it; "
        "unreadable files are skipped and counted. "
        "Example: openseer shards ~/photos /data/photos-shards max_count=10000",
        config="openseer.data.shards:ShardsConfig",
        run=_shards,
        positionals=(Positional("SRC", "src"), Positional("DST", "dst")),
    )
]
