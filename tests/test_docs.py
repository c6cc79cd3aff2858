"""The documentation stays true: generated references current, command lines valid, links and claims intact."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

from openseer.cli import parse_command_line
from openseer.cli.command import resolve_config
from openseer.cli.reference import PRETRAIN_FALLBACK
from openseer.config import preset_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocks(page: Path, languages: tuple[str, ...]) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang in languages]


def test_config_reference_is_current() -> None:
    gen = _script("gen_config_reference")
    assert (DOCS / "config.md").read_text() == gen.render(), "run: python docs/gen_config_reference.py"
    assert not set(PRETRAIN_FALLBACK) - gen.all_keys(), "PRETRAIN_FALLBACK describes keys that no longer exist"


def test_every_config_key_is_documented() -> None:
    gen = _script("gen_config_reference")
    text = (DOCS / "config.md").read_text()
    undocumented = [
        k for k in sorted(gen.all_keys()) if re.search(rf"^\| `{re.escape(k)}` \|.*\|  \|$", text, re.M)
    ]
    assert not undocumented, f"config keys without a description: {undocumented}"


def test_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text() == _script("gen_cli_reference").render(), (
        "run: python docs/gen_cli_reference.py"
    )


def _command_lines(page: Path) -> list[str]:
    """``openseer ...`` invocations in the page's shell blocks (continuations joined, comments dropped)."""
    found = []
    for block in _blocks(page, ("bash", "sh", "shell")):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip().removeprefix("$ ")
            for part in line.split("&&"):
                words = shlex.split(part)
                for i, word in enumerate(words):
                    if word == "openseer" or word.endswith("/openseer"):
                        if i == 0 or words[i - 1] == "-m":
                            found.append(shlex.join(words[i + 1 :]))
                        break
    return found


DOCUMENTED = [(page.name, cmd) for page in [*PAGES, ROOT / "README.md"] for cmd in _command_lines(page)]


@pytest.mark.parametrize(("page", "command"), DOCUMENTED, ids=[f"{p}: {c[:60]}" for p, c in DOCUMENTED])
def test_documented_command_lines_parse(page: str, command: str) -> None:
    """Each command line shown parses and resolves to a valid config (keys, types, required values)."""
    argv = shlex.split(command)
    try:
        args = parse_command_line(argv)
    except SystemExit as err:
        pytest.fail(f"{page}: `openseer {command}` does not parse (exit {err.code})")
    if all(name in preset_names() for name in args.config):  # a YAML file named in the docs is the reader's
        resolve_config(args)


def test_docs_show_every_command_of_ours() -> None:
    shown = {cmd.split()[0] for _, cmd in DOCUMENTED if cmd}
    assert {"pretrain", "import-weights", "export"} <= shown


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_snippets_compile_and_links_resolve(page: Path) -> None:
    for i, block in enumerate(_blocks(page, ("python",))):
        compile(block, f"{page.name}[python block {i}]", "exec")
    for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links to a missing page {target}"


# What docs/scaling.md's status table says is implemented, and where the code that does it lives. If one of
# these disappears, the page is no longer true: update the table (and this list).
IMPLEMENTED = {
    "FSDP (`parallel.strategy=fsdp`)": ("openseer/train/parallel.py", "fully_shard("),
    "SyncBatchNorm groups": ("openseer/train/parallel.py", "convert_sync_batchnorm("),
    "activation checkpointing": ("openseer/train/parallel.py", "checkpoint_wrapper("),
    "several nodes": ("openseer/distributed.py", "SLURM_PROCID"),
    "`openseer.load` / `openseer export` of an FSDP run": ("openseer/weights/files.py", "dcp.load("),
}


@pytest.mark.parametrize("feature", sorted(IMPLEMENTED))
def test_scaling_status_matches_the_code(feature: str) -> None:
    rows = [r for r in (DOCS / "scaling.md").read_text().splitlines() if r.startswith(f"| {feature}")]
    assert len(rows) == 1, f"docs/scaling.md has no status row for {feature}"
    file, symbol = IMPLEMENTED[feature]
    code = (ROOT / file).read_text() if (ROOT / file).exists() else ""
    assert "implemented" in rows[0] and "not implemented" not in rows[0]
    assert symbol in code, f"docs/scaling.md says {feature} is implemented, but {file} has no {symbol}"
