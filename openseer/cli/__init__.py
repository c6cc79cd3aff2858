"""``openseer`` command line: one sub-command per job, each with one typed config and one grammar.

    openseer COMMAND [POSITIONAL ...] [--config FILE ...] [key=value ...] [switches]

The grammar and its parser are in :mod:`openseer.cli.command`; each group of commands has a module here
(pretrain, interop, evaluate, dense, use, shards) listing its :class:`~openseer.cli.command.Command` s.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

from openseer.cli import dense, evaluate, interop, pretrain, shards, use
from openseer.cli.command import Command, CommandParser, add_command, resolve_config, unknown_option_hint
from openseer.config import ConfigError, to_dict
from openseer.interrupts import ctrl_c_raises

COMMANDS: list[Command] = [
    *pretrain.COMMANDS,
    *interop.COMMANDS,
    *evaluate.COMMANDS,
    *dense.COMMANDS,
    *use.COMMANDS,
    *shards.COMMANDS,
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="openseer",
        description="openseer command line: one sub-command per job, each with one typed config. Every command "
        "reads: openseer COMMAND [POSITIONAL ...] [--config FILE ...] [key=value ...]; "
        "'openseer COMMAND --help' lists its config keys with their types and defaults.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command_name", required=True, parser_class=CommandParser)
    for command in COMMANDS:
        add_command(sub, command)
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``: switches anywhere, positional words and ``key=value`` pairs in any order between them
    (``args.words``, in the order given). An unknown ``--flag`` exits 2 naming the config key it likely meant."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    for word in extra:
        if word.startswith("-") and word != "-":
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            sub.choices[args.command_name].error(
                f"unrecognized arguments: {word}{unknown_option_hint(args.command, word)}"
            )
    args.words = [*args.words, *extra]
    return args


# 2: a bad config, data path or checkpoint, a diverged run, a full disk; the message says what to do
EXIT_USER_ERROR = 2
EXIT_OUT_OF_MEMORY = 3

OUT_OF_MEMORY_ADVICE = (
    "to fit, lower optim.batch_size (images per process), use fewer or smaller crops (crops[i].count, "
    "crops[i].size), recompute activations in the backward pass (parallel.activation_checkpointing=true), "
    "train in bf16 on a GPU (run.precision=bf16) or shard the model over several GPUs (parallel.strategy=fsdp); "
    "for an evaluation command, lower features.batch_size (finetune: recipe.batch_size); then rerun (pretrain: "
    "with --resume)"
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
    args = parse_command_line(argv)  # before importing torch: --help and usage errors stay quick
    _setup_logging(args.verbose)
    with ctrl_c_raises(keep_callers=False):  # the command owns its process
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command, its errors turned into messages and exit codes."""
    from openseer.data.folders import DataError
    from openseer.fileio.checkpoint import CheckpointError
    from openseer.train.pretrain import TrainingDiverged

    try:
        cfg = resolve_config(args)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        return args.command.run(cfg, args)
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
