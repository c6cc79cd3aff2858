"""Does pretraining teach the network anything in a fixed CPU budget?

Pretrains with a preset (default: cpu) for ``--minutes`` of wall-clock training, then scores the backbone with
weighted kNN (k=200, T=0.1) on held-out labelled images, against the same network at random initialisation.

    python benchmarks/pretrain_knn.py --data builtin --minutes 5
    python benchmarks/pretrain_knn.py --data cifar10 --minutes 20

``--data cifar10`` uses the CIFAR-10 training split shipped as JPEG files in ``../shared/data`` (10% of each
class held out, never trained on). Last line: ``knn_top1_pretrained=<x> knn_top1_random=<y>``.
"""

from __future__ import annotations

import argparse
import logging
import time

from _common import cifar10_folder  # the sibling module (its folder is on sys.path when run)

from openseer.api import pretrain  # trains, then the one end-of-run evaluation
from openseer.config import load_config
from openseer.train.config import PretrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", choices=["builtin", "cifar10"], default="builtin")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", default=None, help="run folder (default runs/bench-<data>-<minutes>m)")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    source = "builtin" if args.data == "builtin" else str(cifar10_folder())
    out = args.out or f"runs/bench-{args.data}-{args.minutes:g}m"
    overrides = [
        f"data.source={source}",
        f"run.budget_minutes={args.minutes}",
        f"run.out_dir={out}",
        "run.evaluate=true",
        "run.progress=false",
        *args.overrides,
    ]
    cfg = load_config(PretrainConfig, [args.preset], overrides)
    started = time.perf_counter()
    result = pretrain(cfg)
    wall = time.perf_counter() - started
    rate = result.images_seen / max(result.train_seconds, 1e-9)
    ev = result.evaluation
    print(
        f"data={args.data} preset={args.preset} train_minutes={result.train_seconds / 60:.2f} "
        f"wall_minutes={wall / 60:.2f} steps={result.steps} images={result.images_seen} imgs_per_s={rate:.1f} "
        f"final_loss={result.final_loss:.4f} knn_top5_pretrained={ev['knn_top5']:.4f} "
        f"knn_top5_random={ev['knn_top5_random']:.4f} linear_top1={ev['linear_top1']:.4f}"
    )
    print(f"knn_top1_pretrained={ev['knn_top1']:.4f} knn_top1_random={ev['knn_top1_random']:.4f}")


if __name__ == "__main__":
    main()
