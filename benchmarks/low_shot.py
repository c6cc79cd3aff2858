"""How much do the pretrained features help when labels are scarce?

From a pretraining checkpoint, for 1% and 10% of the labels of each class (3 seeds each, mean and std):

* ssl: linear probe on the pretrained backbone's frozen features;
* random: the same linear probe on the same network at random initialisation (BatchNorm re-estimated);
* supervised: the same network trained from scratch on the same labelled subset.

    python benchmarks/low_shot.py --checkpoint runs/bench-cifar10-20m --data cifar10
    python benchmarks/low_shot.py --checkpoint runs/cpu --data builtin

``--data cifar10``: the CIFAR-10 JPEG folder of ``../shared/data``, the images the checkpoint's pretraining held
out (its ``RUN/holdout.json``; for a run written before that file, the split drawn again as pretraining drew it)
as the test set, so no test image was seen during pretraining; the label fractions are of the rest. Images are
decoded as pretraining decoded them (the checkpoint's data.cache_size, through the same cache).
``--data builtin``: Fashion-MNIST, train split for labels, test split for scoring.

Supervised from scratch gets a fixed, small CPU budget: ``--scratch-epochs`` (default 50 epochs for 1% and 10
for 10%, batch 64, lr 0.1 per 256 decayed x0.1 at 6/7 of the run). That is about 67k image passes per seed,
~6 minutes for the three seeds of a RegNetY-200MF on 32-px CIFAR images on 2 cores, which keeps the whole
benchmark under 15 minutes here; it is far from a converged supervised baseline, and says so in the table.

Last line: ``ssl_1pct=<x> random_1pct=<x> supervised_1pct=<x> ssl_10pct=<x> random_10pct=<x>
supervised_10pct=<x>`` (top-1 fractions, means over the seeds).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

from openseer.config import from_dict
from openseer.data.folders import subset_per_class
from openseer.data.labelled import EvalData, load_data, split_source
from openseer.eval.lowshot import LowShotConfig, format_lowshot, lowshot
from openseer.eval.metrics import write_result
from openseer.eval.pretraining import run_config
from openseer.eval.split import pretraining_split
from openseer.train.data import pretraining_data
from openseer.weights import Weights, load_weights

FRACTIONS = (0.01, 0.1)


def cifar10_split(weights: Weights, workers: int) -> tuple[EvalData, EvalData]:
    """The checkpoint's CIFAR-10 pretraining data -> (labelled training part, held-out test part), decoded as
    pretraining decoded them."""
    from _common import cifar10_folder  # the sibling module (its folder is on sys.path when run)

    folder, pcfg = str(cifar10_folder()), run_config(weights.run_dir)
    record = pretraining_split(weights)
    if record is not None and not record.same_source(folder):
        raise SystemExit(f"{weights.source} was pretrained on {record.source}, not on {folder}")
    if record is not None:
        split = record.split()
    else:  # a run written before holdout.json: its split drawn again as pretraining drew it
        split = split_source(folder, "folder", pcfg.data.holdout, pcfg.run.seed)
    data = pretraining_data(split, replace(pcfg.data, workers=workers), progress=True)
    return replace(data.bank, name="cifar10 train part"), replace(data.test, name="cifar10 held-out part")


def merge(results: list[dict]) -> dict:
    """One low-shot result from several over different budgets (one per from-scratch budget)."""
    merged = {**results[0], "budgets": [b for r in results for b in r["budgets"]]}
    merged["seconds"] = sum(r.get("seconds", 0.0) for r in results)
    merged["rows"] = [
        {
            **row,
            "cells": {
                b: c
                for r in results
                for x in r["rows"]
                if x["method"] == row["method"]
                for b, c in x["cells"].items()
            },
        }
        for row in results[0]["rows"]
    ]
    merged.pop("config", None)
    return merged


def limit(data: EvalData, n: int | None) -> EvalData:
    """A class-balanced sample of about n images (smoke runs)."""
    if n is None or len(data) <= n:
        return data
    return data.subset(
        subset_per_class(data.targets, fraction=n / len(data), seed=0), f"{data.name} ({n} sampled)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", required=True, help="pretraining checkpoint (ckpt-*.pt) or run folder"
    )
    parser.add_argument("--data", choices=["cifar10", "builtin"], default="cifar10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument(
        "--scratch-epochs", default="50,10", help="epochs of supervised training from scratch for 1%%,10%%"
    )
    parser.add_argument("--scratch-batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", default=None, help="folder of lowshot.json (default RUN/eval)")
    parser.add_argument("--train-limit", type=int, default=None, help="smoke runs: sample the training part")
    parser.add_argument("--test-limit", type=int, default=None, help="smoke runs: sample the test part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    weights = load_weights(args.checkpoint)
    if args.data == "cifar10":
        train, test = cifar10_split(weights, args.workers)
    else:
        train, test = load_data("builtin:train"), load_data("builtin:test")
    train, test = limit(train, args.train_limit), limit(test, args.test_limit)
    seeds = [int(s) for s in args.seeds.split(",")]
    scratch_epochs = [float(e) for e in args.scratch_epochs.split(",")]
    if len(scratch_epochs) != len(FRACTIONS):
        parser.error("--scratch-epochs needs one value for 1% and one for 10%")

    base = from_dict(
        LowShotConfig,
        {
            "checkpoint": args.checkpoint,
            "fractions": [FRACTIONS[0]],
            "seeds": seeds,
            "probe": {"epochs": args.probe_epochs},
            "scratch": {"batch_size": args.scratch_batch, "lr": 0.1},
            "features": {"workers": args.workers, "progress": False},
            "results": args.results,
        },
    )
    started = time.perf_counter()
    results = []
    # one run per budget, so that each budget gets its own from-scratch epochs; features come from the cache
    for fraction, epochs in zip(FRACTIONS, scratch_epochs, strict=True):
        cfg = replace(base, fractions=[fraction], scratch=replace(base.scratch, epochs=epochs))
        results.append(lowshot(weights, train, test, cfg))
    merged = merge(results)
    merged["scratch_epochs"] = dict(zip(merged["budgets"], scratch_epochs, strict=True))
    write_result(Path(args.results) if args.results else weights.run_dir / "eval", "lowshot", merged)
    names = {"ssl-linear": "ssl", "random": "random", "supervised": "supervised"}
    figures = {
        f"{names[row['method']]}_{budget.rstrip('%')}pct": row["cells"][budget]["top1_mean"]
        for row in merged["rows"]
        for budget in merged["budgets"]
    }
    wall = time.perf_counter() - started

    print(
        f"\ndata={args.data} train={len(train)} test={len(test)} seeds={seeds} checkpoint={args.checkpoint}"
    )
    print(
        f"supervised from scratch: epochs {scratch_epochs} for 1%/10%, batch {args.scratch_batch}; wall {wall / 60:.1f} min"
    )
    print(format_lowshot(merged))
    order = [f"{m}_{t}" for t in ("1pct", "10pct") for m in ("ssl", "random", "supervised")]
    print(" ".join(f"{k}={figures[k]:.4f}" for k in order))


if __name__ == "__main__":
    main()
