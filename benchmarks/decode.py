"""How fast photos go into the decoded-image cache: JPEG's reduced-size decoding against the full decode.

On a folder of photos, decodes a sample to the cache's square side (``data.cache_size``) one image at a time on
one thread, both ways (``openseer.data.cache.decode_square``):

* draft: a JPEG at least twice the side on its shorter side is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
  scaling, Pillow's ``Image.draft``), then resized;
* full: every file decoded whole, then resized (the decode of cache format 1);

then fills a cache of the sample in a temporary folder with ``--threads`` threads, as a run does
(``openseer.data.cache.cached_decode``), and gives the time 10,000 such photos would take (measured on 10,000
when the sample has them, else extrapolated from the sample, which the output says).

The speed-up grows with the photos' size against the side: the reduced decode needs photos at least twice the
side (4x to reach 1/4 scale). ``--upscale F`` first writes a folder of large photos, each sampled photo enlarged
F times (Lanczos) and re-encoded as a quality-90 JPEG, under the openseer cache (reused by later runs): for
folders of small photos such as imagenette's 224-px ones. Enlarged photos are smoother than camera photos of
that size, and smooth JPEGs decode faster: prefer a folder of real large photos where there is one.

    python benchmarks/decode.py imagenette2-320/train --upscale 4 --size 128  # ~320-px photos, enlarged to ~1280 px
    python benchmarks/decode.py ~/Pictures --size 160

Last line: ``decode_draft_imgs_per_s=<x> decode_full_imgs_per_s=<y> ratio=<x/y> cache_fill_10k_s=<z>
cpu=<model>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import machine  # the sibling module (its folder is on sys.path when run)
from PIL import Image

from openseer.data.cache import cached_decode, decode_square, default_cache_dir
from openseer.data.folders import list_images
from openseer.data.images import BadImageError, load_rgb
from openseer.hardware import usable_cores

FILL_TARGET = 10_000


def sample(paths: list[Path], n: int) -> list[Path]:
    """``n`` files spread evenly over the sorted listing (every class of an ImageFolder, not the first one)."""
    if n >= len(paths):
        return paths
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def upscaled(paths: list[Path], factor: float, folder: Path) -> list[Path]:
    """Each of ``paths`` enlarged ``factor`` times and re-encoded as a JPEG in ``folder`` (kept for later runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(paths):
        target = folder / f"{i:06d}-{path.stem}.jpg"
        if not target.exists():
            try:
                img = load_rgb(path)
            except BadImageError as err:
                print(f"skipping {err.path}: {err.reason}")
                continue
            size = (round(img.width * factor), round(img.height * factor))
            img.resize(size, Image.Resampling.LANCZOS).save(target, quality=90)
        out.append(target)
    return out


def shorter_side(path: Path) -> int | None:
    """The stored shorter side, from the header; None for a file Pillow cannot open."""
    try:
        with Image.open(path) as img:
            return min(img.size)
    except Exception:  # noqa: BLE001 - the decodes report these files as skipped
        return None


def decode_rate(paths: list[Path], size: int, reduce: bool, rounds: int) -> float:
    """Images/s of ``decode_square`` over ``paths`` on this thread, the fastest of ``rounds`` passes."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for path in paths:
            try:
                decode_square(path, size, reduce=reduce)
            except BadImageError:
                pass  # a skipped file costs what finding it out costs, both ways
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder of photos (or a .txt/.csv list of them)")
    ap.add_argument("--size", type=int, default=128, help="the cache's side, data.cache_size (default 128)")
    ap.add_argument("--sample", type=int, default=500, help="photos measured (default 500)")
    ap.add_argument(
        "--upscale", type=float, default=None, help="enlarge each sampled photo this many times first"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="threads filling the cache (default: all cores)"
    )
    ap.add_argument("--rounds", type=int, default=2, help="passes over the sample per decode, fastest kept")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # the decodes run on one thread each; torch's own threads would only compete
    threads = args.threads or usable_cores()
    cpu, cores = machine(torch.device("cpu"))
    paths = sample(list_images(args.data), args.sample)
    if args.upscale:
        name = f"{Path(args.data).expanduser().resolve().name}-x{args.upscale:g}-{len(paths)}"
        paths = upscaled(paths, args.upscale, default_cache_dir() / "benchmark-photos" / name)
        print(f"enlarged {len(paths)} photos {args.upscale:g} times into {paths[0].parent if paths else '-'}")
    shorter = [side for side in map(shorter_side, paths) if side is not None] or [0]
    median = statistics.median(shorter)
    print(
        f"cpu={cpu} cores={cores} fill threads={threads} side={args.size} photos={len(paths)}: shorter side "
        f"median {median:.0f} px ({median / args.size:.1f}x the side), min {min(shorter)}, max {max(shorter)}"
    )

    for path in paths:  # read every file once, so that both decodes find them in the page cache
        path.read_bytes()
    draft = decode_rate(paths, args.size, reduce=True, rounds=args.rounds)
    full = decode_rate(paths, args.size, reduce=False, rounds=args.rounds)
    print(f"one thread, to {args.size} px: draft {draft:.1f} img/s, full decode {full:.1f} img/s")

    default_cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=default_cache_dir()) as tmp:  # on the disk the cache would use
        start = time.perf_counter()
        images, _, skipped = cached_decode(paths, args.size, tmp, num_threads=threads)
        fill_s = time.perf_counter() - start
        del images
    fill_10k = fill_s * FILL_TARGET / len(paths)
    how = f"{'measured on' if len(paths) >= FILL_TARGET else 'extrapolated from'} {len(paths)} photos"
    print(
        f"cache fill, {threads} threads: {len(paths)} photos in {fill_s:.1f} s ({len(skipped)} skipped); "
        f"{FILL_TARGET} photos: {fill_10k:.0f} s ({how})"
    )
    line = (
        f"decode_draft_imgs_per_s={draft:.1f} decode_full_imgs_per_s={full:.1f} ratio={draft / full:.2f} "
        f"cache_fill_10k_s={fill_10k:.1f} cpu={cpu.replace(' ', '_')}"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
