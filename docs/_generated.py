"""The command line of every page generator in docs/: rewrite its page, or with ``--check`` report it stale.

Each ``gen_*.py`` renders its page from the code and hands the text here, with whatever else its check finds
wrong (a row that no longer holds, a description of a key that is gone). The generators import this sibling
module (their folder is on ``sys.path`` when run).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

# the conformance table's data lives with the tests that check it (tests/support/reference.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def generate(
    script: str, out: Path, render: Callable[[], str], problems: Callable[[], Iterable[str]] = tuple
) -> int:
    """The generator ``script`` (its ``__file__``) writes ``render()`` to ``out``, or with ``--check`` compares
    them. Returns the exit status: 1 when checking finds the page out of date or ``problems()`` reports anything
    (each printed to standard error)."""
    source = Path(script)
    parser = argparse.ArgumentParser(
        description=sys.modules["__main__"].__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {out.name} is out of date")
    args = parser.parse_args()
    text = render()
    if not args.check:
        out.write_text(text)
        print(f"wrote {out}")
        return 0
    found = list(problems())
    if (out.read_text() if out.exists() else "") != text:
        found.append(f"{out} is out of date: run python docs/{source.name}")
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0
