"""Continued pretraining on a CPU: a network pretrained on one domain, trained further on another (``model.init``),
against the same initial weights untouched and against a run from scratch of the same minutes on the new domain.

1. source: the cpu preset pretrains on ``--source`` (default: the built-in Fashion-MNIST) for ``--source-minutes``;
2. continued: the cpu preset pretrains on ``--target`` (default: the CIFAR-10 JPEG folder,
   /work/shared/data/cifar10-train.tar.gz unpacked into the openseer cache) for ``--minutes``, starting from the
   source run (``model.init=SOURCE_RUN``);
3. scratch: the same, from a random initialisation, for the same ``--minutes``.

Every figure is the end-of-run evaluation's weighted kNN top-1 on the target run's held-out split (the same split
for both target runs: same data, same seed): ``knn_init`` the source network as it stands (the continued run's
"initial weights" row, which equals ``openseer knn SOURCE_RUN`` on that split), ``knn_continued`` after the
continued run, ``knn_scratch`` after the run from scratch, ``knn_random`` that run's random initialisation.

    python benchmarks/continued.py --minutes 10                 # 10 minutes on Fashion-MNIST, then 10 on CIFAR-10
    python benchmarks/continued.py --minutes 1 --limit 2000     # smoke: a class-balanced sample of the target

``--limit N``: N class-balanced target images (symbolic links under ``--out``), to keep the evaluation short;
``--set KEY=VALUE`` changes the config of every run (e.g. ``run.precision=fp32``).

Last line: ``cpu="<model>" minutes=<m> source_minutes=<m> knn_init=<x> knn_continued=<x> knn_scratch=<x>
knn_random=<x> steps_continued=<n> steps_scratch=<n>``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

import torch
from _common import CIFAR_TAR, cifar10_folder, machine  # siblings: their folder is on sys.path when run
from photos import limited

from openseer.api import pretrain
from openseer.train.pretrain import PretrainResult


def run(
    name: str, source: str, minutes: float, args: argparse.Namespace, init: Path | None = None
) -> PretrainResult:
    """The cpu preset on ``source`` for ``minutes`` of training steps into OUT/``name`` (from ``init`` when
    given), with its end-of-run evaluation."""
    overrides = [
        f"data.source={source}",
        f"run.out_dir={args.out / name}",
        f"run.budget_minutes={minutes}",
        f"data.workers={args.workers}",
        "run.progress=false",
        *args.set,
    ]
    return pretrain("cpu", overrides, init=init)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes of each target run")
    parser.add_argument(
        "--source-minutes", type=float, default=None, help="of the source run (default: --minutes)"
    )
    parser.add_argument(
        "--source", default="builtin", help="the first domain (default: built-in Fashion-MNIST)"
    )
    parser.add_argument("--target", type=Path, default=None, help="the second domain (default: CIFAR-10)")
    parser.add_argument(
        "--cifar", type=Path, default=CIFAR_TAR, help="the CIFAR-10 JPEG archive (default target)"
    )
    parser.add_argument("--limit", type=int, default=None, help="class-balanced target images (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-continued"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config of every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = args.target or cifar10_folder(args.cifar)
    if args.limit:
        target = limited(target, args.limit, args.out / "data" / "target")
    source_minutes = args.source_minutes if args.source_minutes is not None else args.minutes

    first = run("source", args.source, source_minutes, args)
    continued = run("continued", str(target), args.minutes, args, init=first.out_dir)
    scratch = run("scratch", str(target), args.minutes, args)
    c, s = continued.evaluation or {}, scratch.evaluation or {}
    name, _ = machine(torch.device("cpu"))
    figures = {
        "minutes": args.minutes,
        "source_minutes": source_minutes,
        "knn_init": f"{c['knn_top1_initial']:.4f}",
        "knn_continued": f"{c['knn_top1']:.4f}",
        "knn_scratch": f"{s['knn_top1']:.4f}",
        "knn_random": f"{s['knn_top1_random']:.4f}",
        "steps_continued": continued.steps,
        "steps_scratch": scratch.steps,
    }
    line = f"cpu={shlex.quote(name)} " + " ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    return line


if __name__ == "__main__":
    main()
