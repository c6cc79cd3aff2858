"""One grammar for every command: --config files and key=value on the same typed config, positional shortcuts,
one-line errors naming the closest key, help generated from the dataclass."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from openseer.cli import COMMANDS, build_parser, main, parse_command_line
from openseer.cli.command import Command, CommandParser, Positional, add_command, split_words
from openseer.cli.reference import NO_DEFAULT, key_docs, undocumented_keys
from openseer.config import ConfigError

NAMES = [c.name for c in COMMANDS]
# keys that a command's validate() needs besides its positional shortcuts
REQUIRED = {"neighbors": ["index=some/folder"]}


def _command(name: str) -> Command:
    return next(c for c in COMMANDS if c.name == name)


def _positional_words(command: Command) -> list[str]:
    """A value for each positional shortcut (two for a list); '.onnx' so that export can tell a format."""
    words = []
    for p in command.positionals:
        words += [f"pos/{p.metavar.lower()}{i}.onnx" for i in range(2 if p.many else 1)]
    return words


def _two_values(tp: Any, default: Any) -> tuple[Any, Any] | None:
    if tp is bool:
        return (not default, default)
    if tp is int:
        return (default + 1, default + 2)
    if tp is float:
        return (default + 0.5, default + 0.25)
    if tp in (str, str | None):
        return ("from-yaml", "from-the-command-line")
    return None


def _settable_key(command: Command) -> tuple[str, tuple[Any, Any]]:
    """A key of the command's config that no positional (or REQUIRED) sets, with two values to give it, other than its
    default."""
    positional = {p.key for p in command.positionals}
    positional |= {word.split("=")[0] for word in REQUIRED.get(command.name, [])}
    for row in key_docs(command.config_class()):
        if row.kind != "value" or row.key in positional or row.default is NO_DEFAULT:
            continue
        values = _two_values(row.type, row.default)
        if values is not None:
            return row.key, values
    raise AssertionError(f"{command.name}: no key to set")


def _lookup(config: dict, key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


def _nested(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_command_takes_config_files_positionals_and_key_value(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _command(name)
    key, (in_file, on_line) = _settable_key(command)
    config = tmp_path / "over.yaml"
    config.write_text(yaml.safe_dump(_nested(key, in_file)))
    base = [name, *_positional_words(command), *REQUIRED.get(name, []), "--print-config"]

    assert main([*base, "--config", str(config)]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert _lookup(resolved, key) == in_file
    words = iter(_positional_words(command))
    for p in command.positionals:  # each positional sets exactly its key
        expected = [next(words), next(words)] if p.many else next(words)
        assert _lookup(resolved, p.key) == expected

    assert main([*base, "-c", str(config), f"{key}={yaml.safe_dump(on_line).splitlines()[0]}"]) == 0
    assert _lookup(yaml.safe_load(capsys.readouterr().out), key) == on_line  # key=value comes last


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_key_exits_2_naming_the_closest(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _command(name)
    key = max(
        (r.key for r in key_docs(command.config_class()) if r.kind == "value" and "[" not in r.key), key=len
    )
    typo = key[:-1] + key[-1] * 2  # 'temperaturee'
    argv = [name, *_positional_words(command), *REQUIRED.get(name, []), f"{typo}=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"openseer: error: unknown config key '{typo}'")
    assert f"did you mean '{key}'?" in err[0]


def test_a_key_in_the_wrong_place_and_an_old_flag_name_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knn", "run", "workers=0"]) == 2
    assert "did you mean 'features.workers'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["knn", "run", "--train", "x"])
    assert info.value.code == 2
    assert "unrecognized arguments: --train; config keys are set as key=value: did you mean train=...?" in (
        capsys.readouterr().err
    )


def test_config_files_must_exist_and_presets_are_pretraining_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knn", "run", "--config", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "openseer: error: config file does not exist: cpu"
    assert main(["pretrain", "--config", "swav-rn50", "--print-config"]) == 0
    assert "regnety_200mf" not in capsys.readouterr().out  # the preset replaced the cpu default


def test_words_switches_and_positionals_in_any_order() -> None:
    args = parse_command_line(["knn", "k=5", "--json", "runs/a", "train=~/x"])
    assert args.json and args.words == ["k=5", "runs/a", "train=~/x"]
    values, overrides = split_words(args.command, args.words)
    assert values == {"checkpoint": "runs/a"} and overrides == ["k=5", "train=~/x"]
    # a path that looks like a pair is written ./a=b.jpg; paths stay strings, never read as YAML
    predict = parse_command_line(["predict", "clf", "./a=b.jpg", "yes", "null"])
    assert split_words(predict.command, predict.words) == (
        {"checkpoint": "clf", "images": ["./a=b.jpg", "yes", "null"]},
        [],
    )
    with pytest.raises(
        ConfigError,
        match="openseer knn takes RUN; 'extra' is one positional too many and not a key=value pair$",
    ):
        split_words(args.command, ["runs/a", "extra"])
    with pytest.raises(
        ConfigError, match="'max-count=3' is one positional too many .* letters, digits, _ and dots"
    ):
        split_words(args.command, ["runs/a", "max-count=3"])


# ============ help, generated from the dataclass ============


@dataclass
class ToyInner:
    size: int = 5
    """Side of the toy."""


@dataclass
class Toy:
    """A config for these tests."""

    path: str = ""
    """Where the toy lives."""
    steps: int = 3
    """How many steps the toy takes."""
    mode: Literal["walk", "run"] = "walk"
    inner: ToyInner = field(default_factory=ToyInner)


@dataclass
class LongerToy(Toy):
    steps: int = 7


def _help(config: type) -> str:
    parser = CommandParser(prog="openseer")
    sub = parser.add_subparsers(dest="command_name", parser_class=CommandParser)
    command = Command(
        "toy", "a toy", f"{__name__}:{config.__name__}", lambda cfg, args: 0, (Positional("PATH", "path"),)
    )
    return add_command(sub, command).format_help()


def test_help_lists_keys_with_types_defaults_and_docstrings() -> None:
    text = _help(Toy)
    assert "path: str = ''  (positional PATH)\n      Where the toy lives." in text
    assert "steps: int = 3\n      How many steps the toy takes." in text
    assert "mode: walk|run = walk" in text and "inner.size: int = 5\n      Side of the toy." in text
    # another default in the dataclass: another help, the inherited docstring kept
    assert "steps: int = 7\n      How many steps the toy takes." in _help(LongerToy)


@pytest.mark.parametrize("name", NAMES)
def test_every_config_key_of_every_command_has_a_docstring(name: str) -> None:
    """--help, docs/cli.md and docs/config.md describe a key by its field's docstring and nothing else."""
    assert undocumented_keys(_command(name).config_class()) == []


def test_a_field_without_a_docstring_shows_none() -> None:
    text = _help(Toy)
    assert "  mode: walk|run = walk\n  inner.*\n  inner.size: int = 5" in text  # no borrowed description
    assert undocumented_keys(Toy) == ["mode", "inner"]


def test_real_commands_help_shows_their_own_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, line in [
        (["knn", "-h"], "  k: int = 200\n"),
        (["knn", "-h"], "  features.bn_recalibrate: bool = true\n"),
        (["clusters", "-h"], "  features.bn_recalibrate: bool = false\n"),  # ClustersConfig's own default
        (["lowshot", "-h"], "  scratch.lr: float = 0.4\n"),  # LowShotConfig.scratch, not RecipeConfig's 0.0125
        (["pretrain", "-h"], "  optim.base_lr: float = 0.3\n"),
        (["pretrain", "-h"], "  crops[i].size: int\n      Output side of these crops in pixels."),
        (["pretrain", "-h"], "  optim.momentum: float = 0.9\n      Momentum of SGD"),
        (["finetune", "-h"], "  recipe.*\n      How the classifier is trained"),
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert line in capsys.readouterr().out, (argv, line)


def test_python_dash_m_openseer() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "openseer", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "usage: openseer" in out and "import-weights" in out
