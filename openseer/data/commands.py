"""``openseer shards``: pack a folder of images into WebDataset tar shards for streaming pretraining."""

from __future__ import annotations

import argparse


def _shards(args: argparse.Namespace) -> int:
    from openseer.data.shards import INDEX, write_shards

    report = write_shards(
        args.src,
        args.dst,
        max_size=args.max_size,
        max_count=args.max_count,
        max_pixels=args.max_pixels,
        threads=args.threads,
    )
    print(f"wrote {report.written} images in {len(report.shards)} shards to {args.dst} (index: {INDEX})")
    if len(report.skipped):
        print(report.skipped.summary())
    print(f"train on them with: openseer pretrain data.source={args.dst}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from openseer.data.images import (
        DEFAULT_MAX_PIXELS,  # the same bomb limit as pretraining's data.max_pixels
    )

    p = subparsers.add_parser(
        "shards",
        help="pack a folder of images into WebDataset tar shards",
        description="Pack the images under SRC (a folder or a .txt/.csv list) into DST/shard-NNNNNN.tar and "
        "DST/shards.json. Every image is decoded once to check it; unreadable files are skipped and counted. "
        "Example: openseer shards ~/photos /data/photos-shards --max-size 1e9 --max-count 10000",
    )
    p.add_argument("src", help="folder of images, or a .txt/.csv list of paths")
    p.add_argument("dst", help="output folder for the shards and their index")
    p.add_argument("--max-size", type=float, default=1e9, help="bytes per shard at most (default: 1e9)")
    p.add_argument("--max-count", type=int, default=10_000, help="images per shard at most (default: 10000)")
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger images are skipped as bombs"
    )
    p.add_argument("--threads", type=int, default=4, help="decoding threads for the check (default: 4)")
    p.set_defaults(func=_shards)
