"""Real photos on a CPU: the photos preset against the cpu preset and a random network, at equal minutes.

Each preset pretrains on the train folder of Imagenette as unlabelled photos (``data.labels=none``) for each
budget of ``--minutes`` (minutes of training steps, ``run.budget_minutes``); its network is then scored with the
labelled train folder as the bank and training set and the val folder as the test set:

* kNN: weighted cosine kNN (k=200, T=0.1, BatchNorm re-estimated on the train folder: ``openseer knn``);
* linear: a linear probe on frozen features, its rate chosen on a tenth of the train folder (``openseer linear``);
* low-shot: the same probe trained on 1% and 10% of the labels of each class, 3 seeds (``openseer lowshot``).

The same network at random initialisation (each preset's own, drawn with its run's seed) is scored the same way.
Images are read as each network's weights say (``Preprocess``: 96 px for photos, 32 px for cpu).

    python benchmarks/photos.py --train /work/data/imagenette/train --val /work/data/imagenette/val \\
        --minutes 5,20,60
    python benchmarks/photos.py --train ... --val ... --minutes 0.5 --limit 500 --probe-epochs 5   # smoke

The data (not shipped): Imagenette, 10 easily told ImageNet classes (tench, English springer, cassette player,
chain saw, church, French horn, garbage truck, gas pump, golf ball, parachute), 9,469 train and 3,925 val photos.
fast.ai publishes it (https://github.com/fastai/imagenette: imagenette2.tgz, -320, -160); the copy at 224 px
this script was written against is https://github.com/thunderInfy/imagenette (``train/<wnid>/*.JPEG``,
``val/<wnid>/*.JPEG``). Its terms are ImageNet's: see docs/photos.md.

``--limit N``: N class-balanced train photos and N // 2 val photos (symbolic links under ``--out``), for a check
of the pipeline end to end; its figures mean nothing. ``--set PRESET KEY=VALUE`` changes one preset's config
(e.g. ``--set photos "crops=[{size: 96, count: 2, scale: [0.2, 1.0]}, {size: 48, count: 4, scale: [0.05, 0.2]}]"``
to measure multi-crop).

Last line: ``cpu="<model>" <preset>_<minutes>m_<figure>=<value> ... random_<preset>_<figure>=<value> ...``, the
figures being knn, linear, lowshot_1pct, lowshot_10pct (top-1 fractions; low-shot: means over the seeds), and for
the pretrained runs steps and imgs_per_s.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

import torch
from _common import machine  # the sibling module (its folder is on sys.path when run)

from openseer.api import pretrain
from openseer.config import from_dict, load_config
from openseer.data.folders import list_images
from openseer.eval.knn import KnnConfig, run_knn
from openseer.eval.linear import LinearConfig, run_linear
from openseer.eval.lowshot import LowShotConfig, run_lowshot
from openseer.train.config import PretrainConfig

PRESETS = ("photos", "cpu")
FRACTIONS = (0.01, 0.1)


def limited(folder: Path, n: int, out: Path) -> Path:
    """A class-balanced sample of about ``n`` photos of the class folders under ``folder``, as symbolic links in
    ``out`` (drawn with seed 0)."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = max(1, n // len(classes))
    rng = random.Random(0)
    for c in classes:
        (out / c.name).mkdir(parents=True, exist_ok=True)
        files = list_images(c)
        for f in rng.sample(files, min(per_class, len(files))):
            link = out / c.name / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return out


def evaluate(run: Path, train: Path, val: Path, model: str, args: argparse.Namespace) -> dict[str, float]:
    """kNN, linear probe and low-shot top-1 of the run's network ('pretrained' or 'random'), results in
    RUN/eval/bench-<model>/."""
    common = {
        "checkpoint": str(run),
        "train": str(train),
        "test": str(val),
        "results": str(run / "eval" / f"bench-{model}"),
        "features": {"workers": args.workers, "progress": False},
    }
    probe = {"epochs": args.probe_epochs}
    knn = run_knn(from_dict(KnnConfig, {**common, "model": model}))
    linear = run_linear(from_dict(LinearConfig, {**common, "model": model, "save": False, "probe": probe}))
    # the command always probes the pretrained network; the random one is its 'random' baseline row
    baselines = ["random"] if model == "random" else []
    lowshot = run_lowshot(
        from_dict(
            LowShotConfig,
            {
                **common,
                "fractions": list(FRACTIONS),
                "seeds": [0, 1, 2],
                "baselines": baselines,
                "probe": probe,
            },
        )
    )
    (row,) = [r for r in lowshot["rows"] if r["method"] == ("random" if model == "random" else "ssl-linear")]
    figures = {"knn": knn["top1"], "linear": linear["top1"]}
    for budget, name in zip(lowshot["budgets"], ("lowshot_1pct", "lowshot_10pct"), strict=True):
        figures[name] = row["cells"][budget]["top1_mean"]
    return figures


def main(argv: list[str] | None = None) -> str:
    """Runs the benchmark; returns its last line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, required=True, help="Imagenette train folder (<wnid>/*.JPEG)")
    parser.add_argument("--val", type=Path, required=True, help="Imagenette val folder (<wnid>/*.JPEG)")
    parser.add_argument("--minutes", default="5,20,60", help="training budgets in minutes, comma-separated")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--limit", type=int, default=None, help="smoke runs: about this many train photos")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-photos"))
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("PRESET", "KEY=VALUE"),
        help="a preset's override",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for folder in (args.train, args.val):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder: get Imagenette first (see --help)")
    minutes = [float(m) for m in args.minutes.split(",")]
    presets = args.presets.split(",")
    train, val = args.train, args.val
    if args.limit is not None:
        train = limited(args.train, args.limit, args.out / "data" / "train")
        val = limited(args.val, args.limit // 2, args.out / "data" / "val")
    cpu_name, cores = machine(torch.device("cpu"))
    print(f"cpu={cpu_name} cores={cores} train={len(list_images(train))} val={len(list_images(val))}")

    figures: dict[str, float | int] = {}
    started = time.perf_counter()
    for preset in presets:
        extra = [value for name, value in args.set if name == preset]
        for m in minutes:
            run = args.out / f"{preset}-{m:g}m"
            overrides = [
                f"data.source={train}",
                "data.labels=none",
                f"run.budget_minutes={m}",
                f"run.out_dir={run}",
                "run.evaluate=false",
                "run.progress=false",
                *extra,
            ]
            result = pretrain(load_config(PretrainConfig, [preset], overrides))
            key = f"{preset}_{m:g}m"
            figures[f"{key}_steps"] = result.steps
            figures[f"{key}_imgs_per_s"] = result.images_seen / max(result.train_seconds, 1e-9)
            for name, value in evaluate(run, train, val, "pretrained", args).items():
                figures[f"{key}_{name}"] = value
            print(" ".join(f"{k}={v:.4g}" for k, v in figures.items() if k.startswith(key)), flush=True)
        # the preset's network at random initialisation (its first run's architecture and seed)
        first = args.out / f"{preset}-{minutes[0]:g}m"
        for name, value in evaluate(first, train, val, "random", args).items():
            figures[f"random_{preset}_{name}"] = value
    print(f"wall_minutes={(time.perf_counter() - started) / 60:.1f}")
    values = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    line = f'cpu="{cpu_name}" {values}'
    print(line)
    return line


if __name__ == "__main__":
    main()
