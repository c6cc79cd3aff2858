"""The documentation stays true: generated references current, command lines valid, links and claims intact."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from openseer.cli import parse_command_line
from openseer.cli.command import resolve_config
from openseer.config import preset_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [ROOT / "README.md", *PAGES]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(page: Path, languages: tuple[str, ...]) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang in languages]


def test_config_reference_is_current(docs_generator: Callable[[str], ModuleType]) -> None:
    gen = docs_generator("gen_config_reference")
    assert (DOCS / "config.md").read_text() == gen.render(), "run: python docs/gen_config_reference.py"
    assert gen.missing_descriptions() == []  # every key described by its field's docstring


def test_every_config_key_is_documented(docs_generator: Callable[[str], ModuleType]) -> None:
    gen = docs_generator("gen_config_reference")
    text = (DOCS / "config.md").read_text()
    undocumented = [
        k for k in sorted(gen.all_keys()) if re.search(rf"^\| `{re.escape(k)}` \|.*\|  \|$", text, re.M)
    ]
    assert not undocumented, f"config keys without a description: {undocumented}"


def test_generators_write_or_report_a_stale_page(
    docs_generator: Callable[[str], ModuleType],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    generate = docs_generator("_generated").generate
    page = tmp_path / "page.md"

    def run(*argv: str, problems: Callable[[], list[str]] = list) -> int:
        monkeypatch.setattr("sys.argv", ["gen_page.py", *argv])
        return generate("docs/gen_page.py", page, lambda: "current\n", problems)

    assert run("--check") == 1  # no page yet
    assert "page.md is out of date: run python docs/gen_page.py" in capsys.readouterr().err
    assert run() == 0 and page.read_text() == "current\n"
    assert run("--check") == 0 and capsys.readouterr().err == ""
    assert run("--check", problems=lambda: ["a row no longer holds"]) == 1
    assert capsys.readouterr().err == "a row no longer holds\n"
    page.write_text("stale\n")
    assert run("--check") == 1 and page.read_text() == "stale\n"  # checking never writes


def test_cli_reference_is_current(docs_generator: Callable[[str], ModuleType]) -> None:
    gen = docs_generator("gen_cli_reference")
    assert (DOCS / "cli.md").read_text() == gen.render(), "run: python docs/gen_cli_reference.py"
    assert gen.missing_descriptions() == []


def test_a_field_without_a_docstring_is_a_problem_for_the_generators(
    docs_generator: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    from openseer.cli import reference

    def without_one(cls: type) -> dict[str, str]:
        return {k: v for k, v in real(cls).items() if k != "seed"}

    real = reference.field_docs
    monkeypatch.setattr(reference, "field_docs", without_one)
    problems = docs_generator("gen_cli_reference").missing_descriptions()
    assert "openseer pretrain: config keys without a docstring: run.seed" in problems
    assert "openseer finetune: config keys without a docstring: seed" in problems
    assert docs_generator("gen_config_reference").missing_descriptions() == [
        "config keys without a docstring under their field: run.seed"
    ]


def _command_lines(page: Path) -> list[str]:
    """``openseer ...`` invocations in the page's shell blocks (continuations joined, comments dropped) and on the
    ``$ `` prompt lines of its console blocks (transcripts: command, then its output)."""
    shell = _blocks(page, ("bash", "sh", "shell"))
    prompts = [
        "\n".join(line for line in block.splitlines() if line.startswith("$ "))
        for block in _blocks(page, ("console",))
    ]
    found = []
    for block in [*shell, *prompts]:
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


DOCUMENTED = [(page.name, cmd) for page in MARKDOWN for cmd in _command_lines(page)]


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


# The README opens with these two commands, byte for byte: set up and run the main job, set up and run the tests
# (.ci/run runs the second's steps).
README_COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/openseer pretrain --config cpu "
    "run.budget_minutes=5",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest -q -n 2",
)


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first = FENCE.search(text)
    assert first is not None and first.group(1) == "bash", "README.md must open with a bash block"
    assert text[: first.start()].strip() == "# openseer", "nothing but the title comes before the commands"
    commands = [line for line in first.group(2).splitlines() if line and not line.startswith("#")]
    assert commands == list(README_COMMANDS)


def test_readme_is_short_and_links_every_docs_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220, "README.md is a page read in minutes: measured tables go to docs/"
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    pages = {"quickstart", "commands", "cli", "config", "weights", "scaling", "conformance", "benchmarks"}
    pages |= {"troubleshooting", "python-api"}
    assert {f"{p}.md" for p in pages} <= linked


def test_readme_results_are_figures_of_the_benchmarks_page() -> None:
    """The README's one results table repeats rows of docs/benchmarks.md's time-to-accuracy table, not others."""
    header, *rows = _table((ROOT / "README.md").read_text(), "## Results")
    assert header[:4] == ["budget", "kNN top-1", "linear probe", "steps"]
    bench = (DOCS / "benchmarks.md").read_text()
    heading = "### Time to accuracy (CIFAR-10 folder, kNN top-1 on the 5,000 held-out images)"
    source = {row[0]: row for row in _table(bench, heading)[1:]}
    for budget, knn, linear, steps, lightly in rows:
        measured = source[budget]
        assert measured[1] == f"**{knn}** (linear probe {linear})", budget
        assert measured[2].startswith(f"{steps}, "), budget
        assert lightly == measured[-1], budget


@pytest.mark.parametrize("page", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_python_snippets_compile(page: Path) -> None:
    for i, block in enumerate(_blocks(page, ("python",))):
        compile(block, f"{page.name}[python block {i}]", "exec")


def _prose(text: str) -> str:
    """``text`` without fenced blocks and inline code, where brackets and ``#`` are not Markdown."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives ``page``'s headings: lower case, punctuation dropped, spaces to hyphens, a repeated
    heading numbered from -1."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link (pages, images, source files) names a file that exists, and its #anchor a heading."""
    links = re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text()))
    for link in links:
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name} links to a missing file {path}"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: #{anchor} on {path}, which is not a page"
            assert anchor in _anchors(target), (
                f"{page.name} links to {link}, a heading {path or page.name} lacks"
            )


@pytest.mark.parametrize("page", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_python_snippets_import_names_that_exist(page: Path) -> None:
    """Every ``from openseer... import name`` / ``import openseer...`` of a page's Python blocks resolves."""
    for block in _blocks(page, ("python",)):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("openseer"):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"{page.name}: {node.module} has no {', '.join(missing)}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("openseer"):
                        importlib.import_module(alias.name)


# What docs/scaling.md's status table says is implemented, and where the code that does it lives. If one of
# these disappears, the page is no longer true: update the table (and this list).
IMPLEMENTED = {
    "FSDP (`parallel.strategy=fsdp`)": ("openseer/train/parallel.py", "fully_shard("),
    "SyncBatchNorm groups": ("openseer/train/parallel.py", "convert_sync_batchnorm("),
    "activation checkpointing": ("openseer/train/parallel.py", "checkpoint_wrapper("),
    "several nodes": ("openseer/distributed.py", "SLURM_PROCID"),
    "`openseer.load` / `openseer export` of an FSDP run": ("openseer/weights/files.py", "read_sharded_tensors("),
}


@pytest.mark.parametrize("feature", sorted(IMPLEMENTED))
def test_scaling_status_matches_the_code(feature: str) -> None:
    rows = [r for r in (DOCS / "scaling.md").read_text().splitlines() if r.startswith(f"| {feature}")]
    assert len(rows) == 1, f"docs/scaling.md has no status row for {feature}"
    file, symbol = IMPLEMENTED[feature]
    code = (ROOT / file).read_text() if (ROOT / file).exists() else ""
    assert "implemented" in rows[0] and "not implemented" not in rows[0]
    assert symbol in code, f"docs/scaling.md says {feature} is implemented, but {file} has no {symbol}"


# ============ docs/weights.md's table: every command x every weight source ============

TABLE_HEADING = "## Every command x every weight source"
CELL = re.compile(r"^(yes|refused: ([^`]+?)) `(test_\w+\[\w+\])`$")


def _matrix() -> ModuleType:
    """tests/test_weights_matrix.py, whose parametrisation the table must follow."""
    spec = importlib.util.spec_from_file_location(
        "weights_matrix_for_docs", ROOT / "tests" / "test_weights_matrix.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(text: str, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table after ``heading`` (header row first, separator dropped)."""
    after = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    rows = []
    for line in after[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [rows[0], *rows[2:]]


def test_weights_table_names_the_test_behind_every_cell() -> None:
    matrix = _matrix()
    header, *rows = _table((DOCS / "weights.md").read_text(), TABLE_HEADING)
    commands = [cell.strip("`").removeprefix("openseer.") for cell in header[1:]]
    assert commands == list(matrix.COMMANDS), "the table's columns are not the matrix's commands"
    kinds = [re.search(r"\(`(\w+)`\)$", row[0]).group(1) for row in rows]  # type: ignore[union-attr]
    assert kinds == list(matrix.SOURCES), "the table's rows are not the matrix's kinds of weights"
    for kind, row in zip(kinds, rows, strict=True):
        for command, cell in zip(commands, row[1:], strict=True):
            found = CELL.match(cell)
            assert found, (
                f"docs/weights.md, {kind} x {command}: '{cell}' is not 'yes `test`' or 'refused: why `test`'"
            )
            assert found.group(3) == f"test_{command}[{kind}]", f"{kind} x {command} names {found.group(3)}"
            refused = matrix.REFUSED.get((command, kind))
            if refused is None:
                assert found.group(1) == "yes", f"{kind} x {command}: the test expects it to work"
            else:
                assert found.group(2) and refused.startswith(found.group(2)), f"{kind} x {command}: {refused}"
    # and every cell's test exists, parametrised over exactly these kinds
    tests = sorted(name for name in vars(matrix) if name.startswith("test_"))
    assert tests == sorted(f"test_{c}" for c in commands)
    for name in tests:
        marks = [m for m in getattr(matrix, name).pytestmark if m.name == "parametrize"]
        assert [(m.args[0], tuple(m.args[1])) for m in marks] == [("weight_source", tuple(matrix.SOURCES))], (
            name
        )
