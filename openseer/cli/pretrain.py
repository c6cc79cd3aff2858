"""``openseer pretrain``."""

from __future__ import annotations

import argparse

from openseer.cli.command import Command, Switch

START_ROWS = {"random": "random initialisation", "initial": "initial weights"}
"""The row of the network a run started from: its random draw, or its model.init file."""


def format_pretraining(result) -> str:  # noqa: ANN001 - a PretrainResult, imported lazily
    """The summary a finished run prints: its speed, then each held-out score once."""
    rate = result.images_seen / max(result.train_seconds, 1e-9)
    lines = [
        f"\npretraining: {result.steps} steps, {result.images_seen} images in "
        f"{result.train_seconds / 60:.1f} min ({rate:.0f} img/s), final loss {result.final_loss:.4f}"
    ]
    ev = result.evaluation or {}
    if "knn_top1" in ev:
        lines.append(f"{'held-out images (' + str(ev['n_test']) + ')':<34}{'top-1':>8}{'top-5':>8}")
        start = ev.get("start", "random")
        rows = [
            (f"  kNN, {START_ROWS[start]}", ev[f"knn_top1_{start}"], ev[f"knn_top5_{start}"]),
            ("  kNN, after pretraining", ev["knn_top1"], ev["knn_top5"]),
            ("  linear probe, after pretraining", ev["linear_top1"], ev["linear_top5"]),
        ]
        lines += [f"{name:<34}{top1:>8.4f}{top5:>8.4f}" for name, top1, top5 in rows]
    return "\n".join(lines)


def _pretrain(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a PretrainConfig
    from tqdm.contrib.logging import logging_redirect_tqdm

    from openseer import api, distributed
    from openseer.train.pretrain import SKIPPED_FILE

    with logging_redirect_tqdm():
        result = api.pretrain(cfg, resume=args.resume)
    if distributed.launch_rank() == 0:
        print(format_pretraining(result))
        if result.skipped_images:
            listed = result.out_dir / SKIPPED_FILE
            print(f"skipped images: {result.skipped_images} unreadable files (which and why: {listed})")
        print(f"run folder: {result.out_dir}")
        if result.evaluation and "report" in result.evaluation:
            print(f"report: {result.evaluation['report']}")
    return 0


COMMANDS = [
    Command(
        name="pretrain",
        help="SwAV pretraining on a folder, a list of paths or the built-in data",
        description="SwAV pretraining. Example: openseer pretrain --config cpu data.source=~/photos "
        "run.budget_minutes=20",
        config="openseer.train.config:PretrainConfig",
        run=_pretrain,
        switches=(Switch("--resume", "continue from the latest valid checkpoint in run.out_dir"),),
        presets=True,
        default_config=("cpu",),
    )
]
