"""The one grammar of every ``openseer`` command, and the parser that implements it.

    openseer COMMAND [POSITIONAL ...] [--config FILE ...] [key=value ...] [switches]

Each command has one typed config dataclass. Its value is, in order: the dataclass defaults, each ``--config``
YAML file (only the keys it changes; repeatable), the positional shortcuts (each sets one key, documented in
the command's help), then ``key=value`` overrides (values parsed as YAML, by :func:`openseer.config.load_config`,
the same code as ``openseer pretrain``'s). Switches that are not config (``--json``, ``--print-config``,
``--resume``) stay flags. ``openseer COMMAND --help`` lists every key with its type, default and description,
read off the dataclass (:mod:`openseer.cli.reference`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openseer.config import ConfigError, closest_key, key_paths, load_config, preset_names

# `a.b_c=...`: a config override. Anything else is a positional word (a path: `./a=b.jpg` for a file so named).
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


@dataclass(frozen=True)
class Positional:
    """A positional shortcut: ``METAVAR`` on the command line sets config key ``key``."""

    metavar: str
    key: str
    many: bool = False
    """Takes every remaining positional word, as a list (the key is a list of strings)."""


@dataclass(frozen=True)
class Switch:
    """A flag that is not part of the config (how to print, whether to continue a run)."""

    flag: str
    help: str


JSON = Switch("--json", "print the result as JSON")


@dataclass(frozen=True)
class Command:
    """One ``openseer`` sub-command: its config dataclass (``module:Class``, imported when needed so that
    ``openseer --help`` does not import torch), its positional shortcuts and switches, and the function that
    runs it on the resolved config."""

    name: str
    help: str
    config: str
    run: Callable[[Any, argparse.Namespace], int]
    positionals: tuple[Positional, ...] = ()
    switches: tuple[Switch, ...] = ()
    description: str = ""
    presets: bool = False
    """``--config`` also takes the name of a shipped preset (pretraining)."""
    default_config: tuple[str, ...] = ()
    """Applied when no ``--config`` is given (pretraining: the cpu preset)."""

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)

    def usage(self) -> str:
        switches = " ".join(f"[{s.flag}]" for s in self.switches)
        config = "PRESET_OR_YAML" if self.presets else "FILE"
        words = []
        for p in self.positionals:
            words.append(f"[{p.metavar} ...]" if p.many else p.metavar)
        return " ".join(
            part
            for part in (
                f"openseer {self.name} [-h] [--config {config}] [--print-config]",
                switches,
                *words,
                "[key=value ...]",
            )
            if part
        )


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose help ends with its command's config keys, generated when help is asked for."""

    command: Command | None = None

    def format_help(self) -> str:
        text = super().format_help()
        if self.command is None:
            return text
        return text + "\n" + config_help(self.command) + "\n"


def _width() -> int:
    # as argparse's own formatter: the terminal's width (COLUMNS), less a margin
    return max(shutil.get_terminal_size().columns - 2, 40)


def config_help(command: Command) -> str:
    """The config section of ``openseer COMMAND --help``."""
    from openseer.cli.reference import format_keys, key_docs

    cls = command.config_class()
    notes = {p.key: f"positional {p.metavar}" for p in command.positionals}
    head = (
        f"config keys of {cls.__module__}.{cls.__name__}, set as key=value (values are YAML: 0.1, [0.01, 0.1], "
        "null, true) or in --config files; key: type = default"
    )
    if command.default_config:
        head += (
            f". Without --config the {', '.join(command.default_config)} preset is applied over these defaults "
            f"(--print-config shows the result)"
        )
    width = _width()
    return "\n".join([*textwrap.wrap(head + ":", width), format_keys(key_docs(cls), width, notes)])


def add_command(sub: argparse._SubParsersAction, command: Command) -> CommandParser:
    """Register ``command`` on the ``openseer`` parser's sub-commands."""
    p = sub.add_parser(
        command.name,
        help=command.help,
        description=command.description or command.help[:1].upper() + command.help[1:] + ".",
        usage=command.usage(),
    )
    p.command = command
    if command.presets:
        p.add_argument(
            "--config",
            "-c",
            action="append",
            default=[],
            metavar="PRESET_OR_YAML",
            help=f"a preset ({', '.join(preset_names())}) or a YAML file of config keys; repeatable, applied in "
            "order",
        )
    else:
        p.add_argument(
            "--config",
            "-c",
            action="append",
            default=[],
            metavar="FILE",
            help="a YAML file of config keys; repeatable, applied in order, before key=value",
        )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    for switch in command.switches:
        p.add_argument(switch.flag, action="store_true", help=switch.help)
    shortcuts = ", ".join(f"{s.metavar} sets {s.key}" for s in command.positionals)
    p.add_argument(
        "words",
        nargs="*",
        metavar="key=value",
        help=(f"positional shortcuts ({shortcuts}) and " if shortcuts else "")
        + "config keys (below), applied last",
    )
    p.set_defaults(command=command)
    return p


def unknown_option_hint(command: Command, option: str) -> str:
    """What to write instead of ``--some-flag``: the config key it most likely means."""
    name = option.lstrip("-").split("=", 1)[0].replace("-", "_")
    key = closest_key(name, key_paths(command.config_class())) if name else None
    if key is None:
        return f"; config keys are set as key=value (see openseer {command.name} --help)"
    return f"; config keys are set as key=value: did you mean {key}=...?"


def split_words(command: Command, words: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(values of the positional shortcuts by dotted key, ``key=value`` overrides) of ``words``."""
    overrides = [w for w in words if _OVERRIDE.match(w)]
    plain = [w for w in words if not _OVERRIDE.match(w)]
    values: dict[str, Any] = {}
    slots = list(command.positionals)
    while plain:
        if not slots:
            takes = " ".join(p.metavar for p in command.positionals) or "no positional arguments"
            why = " (a key is letters, digits, _ and dots)" if "=" in plain[0] else ""
            raise ConfigError(
                f"openseer {command.name} takes {takes}; '{plain[0]}' is one positional too many and not a "
                f"key=value pair{why}"
            )
        slot = slots.pop(0)
        values[slot.key] = list(plain) if slot.many else plain[0]
        plain = [] if slot.many else plain[1:]
    return values, overrides


def resolve_config(args: argparse.Namespace) -> Any:
    """The typed config of a parsed command line: defaults <- --config files <- positionals <- key=value."""
    command: Command = args.command
    sources = list(args.config) or list(command.default_config)
    if not command.presets:
        for source in sources:
            if not Path(source).expanduser().is_file():
                raise ConfigError(f"config file does not exist: {source}")
        sources = [str(Path(s).expanduser()) for s in sources]
    values, overrides = split_words(command, args.words)
    return load_config(command.config_class(), sources, overrides, values)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, default=str))
