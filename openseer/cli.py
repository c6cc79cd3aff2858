"""``openseer`` command line: one sub-command per job, each with one typed config."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence

from openseer.config import ConfigError, load_config, preset_names, to_dict

# Each module adds its sub-commands with `register(subparsers)`; imports stay light until a command runs.
_COMMAND_MODULES: list[str] = [
    "openseer.interop.commands",
    "openseer.eval.commands",
    "openseer.eval.use_commands",
    "openseer.data.commands",
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _pretrain(args: argparse.Namespace) -> int:
    import yaml

    from openseer import api, distributed
    from openseer.train.config import PretrainConfig
    from openseer.train.pretrain import SKIPPED_FILE

    cfg = load_config(PretrainConfig, args.config or ["cpu"], args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from tqdm.contrib.logging import logging_redirect_tqdm

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
        rows = [
            ("  kNN, random initialisation", ev["knn_top1_random"], ev["knn_top5_random"]),
            ("  kNN, after pretraining", ev["knn_top1"], ev["knn_top5"]),
            ("  linear probe, after pretraining", ev["linear_top1"], ev["linear_top5"]),
        ]
        lines += [f"{name:<34}{top1:>8.4f}{top5:>8.4f}" for name, top1, top5 in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openseer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "pretrain",
        help="SwAV pretraining on a folder, a list of paths or the built-in data",
        description="SwAV pretraining. Presets: " + ", ".join(preset_names()) + ". Example: "
        "openseer pretrain --config cpu data.source=~/photos run.budget_minutes=20",
    )
    p.add_argument(
        "--config",
        "-c",
        action="append",
        metavar="PRESET_OR_YAML",
        help="a preset name or YAML file of overrides; repeatable, applied in order (default: cpu)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest valid checkpoint in run.out_dir"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. optim.base_lr=0.6 model.prototypes=300"
    )
    p.set_defaults(func=_pretrain)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


# 2: a bad config, data path or checkpoint, a diverged run, a full disk; the message says what to do
EXIT_USER_ERROR = 2
EXIT_OUT_OF_MEMORY = 3

OUT_OF_MEMORY_ADVICE = (
    "to fit, lower optim.batch_size (images per process), use fewer or smaller crops (crops[i].count, "
    "crops[i].size), recompute activations in the backward pass (parallel.activation_checkpointing=true), "
    "train in bf16 on a GPU (run.precision=bf16) or shard the model over several GPUs (parallel.strategy=fsdp); "
    "for an evaluation command, lower --batch-size; then rerun (pretrain: with --resume)"
)


def is_out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError, MemoryError, or an allocator RuntimeError (CUDA or CPU) saying it ran out."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    message = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit codes: 0 done, 1 some inputs unreadable (predict), 2 a user error (config, data,
    checkpoint, diverged run, disk full), 3 out of memory, 130 interrupted."""
    from openseer.data.folders import DataError
    from openseer.fileio.checkpoint import CheckpointError
    from openseer.train.pretrain import TrainingDiverged

    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, TrainingDiverged) as err:
        print(f"openseer: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(
            f"openseer: error: disk full ({err}); files are written to a temporary name and then renamed, so "
            "the checkpoints already written are intact: free some space (or lower run.keep_checkpoints) and "
            "rerun (pretrain: with --resume)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"openseer: error: out of memory ({first}); {OUT_OF_MEMORY_ADVICE}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        print(
            "openseer: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
