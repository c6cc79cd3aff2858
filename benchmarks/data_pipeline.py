"""Does the input pipeline keep up with the training step?

Measures, on the preset's crops and batch (default: the cpu preset), images/s of the input pipeline alone
(no model), and of the training step alone on ready-made crops:

* the decoded-cache path the cpu preset uses (``data.cache_size``): uint8 images held in memory, multi-crop
  batched on tensors (``TensorBatches``), with 1 and with 2 intra-op threads (in CPU training it runs
  between steps, on the step's threads);
* the per-image path (``data.cache_size=null``): JPEG decoding and torchvision-v2 multi-crop per image in
  DataLoader workers (``LoaderBatches``), with 1 and 2 workers. Needs a folder (``--data cifar10``).

    python benchmarks/data_pipeline.py --data cifar10

Last line: ``pipeline_imgs_per_s=<x> step_imgs_per_s=<x>``: the preset's pipeline (the cache path when the
preset has a cache, else the loader) with 2 threads or workers, and the compute-only training step.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace

import torch
from _common import (  # the sibling module (its folder is on sys.path when run)
    cifar10_folder,
    images_per_second,
    swav_step_fn,
    synthetic_crops,
)

from openseer.config import load_config
from openseer.train.config import PretrainConfig
from openseer.train.data import LoaderBatches, TensorBatches, prepare_data


def stream_rate(batches: TensorBatches | LoaderBatches, steps: int, warmup: int) -> float:
    """Images/s of ``steps`` batches after ``warmup`` (the loader's workers start during the warm-up)."""
    it = batches.epoch(0)
    for crops in itertools.islice(it, warmup):
        del crops
    done, start = 0, time.perf_counter()
    for crops in itertools.islice(it, steps):
        done += crops[0].shape[0]
    rate = done / (time.perf_counter() - start)
    it.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default="cifar10", help="cifar10, builtin (cache path only) or a folder")
    ap.add_argument("--steps", type=int, default=10, help="timed batches per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = ap.parse_args()
    source = str(cifar10_folder()) if args.data == "cifar10" else args.data
    cfg = load_config(PretrainConfig, [args.preset], [f"data.source={source}", *args.overrides])
    stream = dict(batch_size=cfg.optim.batch_size, crops=cfg.crops, aug=cfg.augment, seed=0)
    cores = torch.get_num_threads()
    print(f"preset={args.preset} crops={[(c.size, c.count) for c in cfg.crops]} batch={cfg.optim.batch_size}")

    rates: dict[str, float] = {}
    cache_size = cfg.data.cache_size or 32
    cached = prepare_data(replace(cfg.data, cache_size=cache_size, labels="none"), progress=True)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        batches = TensorBatches(cached.train_images, prefetch=0, **stream)
        rates[f"cache_{threads}"] = stream_rate(batches, args.steps, args.warmup)
        print(
            f"decoded cache ({cache_size} px) + batched multi-crop, {threads} thread(s): "
            f"{rates[f'cache_{threads}']:.0f} img/s"
        )
    del cached
    torch.set_num_threads(cores)

    if source != "builtin":
        files = prepare_data(replace(cfg.data, cache_size=None, labels="none"))
        for workers in (1, 2):
            batches = LoaderBatches(files.train_paths, workers=workers, **stream)
            rates[f"loader_{workers}"] = stream_rate(batches, args.steps, args.warmup)
            print(
                f"per-image decode + v2 multi-crop, {workers} worker(s): {rates[f'loader_{workers}']:.0f} img/s"
            )

    step = swav_step_fn(cfg, torch.device("cpu"))
    crops = synthetic_crops(cfg, torch.device("cpu"))
    step_rate = images_per_second(lambda: step(crops), args.steps, args.warmup, torch.device("cpu"))
    print(
        f"training step on ready-made crops ({cores} threads, compile={cfg.run.compile}): {step_rate:.0f} img/s"
    )

    pipeline = rates["cache_2"] if cfg.data.cache_size is not None else rates.get("loader_2", float("nan"))
    print(f"pipeline / step = {pipeline / step_rate:.1f}x")
    print(f"pipeline_imgs_per_s={pipeline:.1f} step_imgs_per_s={step_rate:.1f}")


if __name__ == "__main__":
    main()
