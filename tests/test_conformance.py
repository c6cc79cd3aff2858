"""The large-scale presets against the recipes they reproduce (tests/support/reference.py): every row holds
(a match matches, a deliberate difference differs and says why), every required quantity is stated, and
docs/conformance.md is what docs/gen_conformance.py renders."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from support.reference import NOT_RELEASED, QUANTITIES, REFERENCES, REQUIRED, Reference, Row, reference, same

from openseer.config import load_config, preset_names
from openseer.train.config import PretrainConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
LARGE = ("swav-rn50", "seer-rg32gf", "seer-rg64gf", "seer-rg128gf", "seer-rg256gf", "seer-10b")


@functools.cache
def _config(preset: str) -> PretrainConfig:
    return load_config(PretrainConfig, [preset])


def test_every_large_scale_preset_has_a_reference() -> None:
    assert [r.preset for r in REFERENCES] == list(LARGE)
    assert set(LARGE) <= set(preset_names())
    with pytest.raises(KeyError, match="no reference recipe"):
        reference("cpu")


@pytest.mark.parametrize("preset", LARGE)
def test_every_quantity_is_stated_once(preset: str) -> None:
    stated = [row.quantity for row in reference(preset).rows]
    assert sorted(stated) == sorted(REQUIRED), "missing or repeated quantities"


def _rows() -> list[tuple[Reference, Row]]:
    return [(ref, row) for ref in REFERENCES for row in ref.rows]


@pytest.mark.parametrize(("ref", "row"), _rows(), ids=[f"{r.preset}-{w.quantity}" for r, w in _rows()])
def test_row_holds(ref: Reference, row: Row) -> None:
    ours = QUANTITIES[row.quantity].of(_config(ref.preset), ref)
    if row.why:
        assert not same(ours, row.value), f"{row.quantity}: now matches the reference; drop the 'why'"
        assert len(row.why) > 40, "a deliberate difference says why"
    else:
        assert same(ours, row.value), (
            f"{row.quantity}: openseer {ours!r} != reference {row.value!r} ({row.source})"
        )


def test_every_source_names_a_file_or_the_paper() -> None:
    for ref, row in _rows():
        assert row.source.startswith(
            ("swav ", "vissl ", "fvcore ", "ClassyVision ", "SEER paper", "apex ")
        ), (
            ref.preset,
            row,
        )
        first = row.source.split(";")[0]
        assert ":" in first or first.startswith("SEER paper") or "(none)" in first, (ref.preset, row)


# quantities that code computes rather than a config number sets: their reference cell names that code
BEHAVIOUR = (
    "schedule_shape",
    "crop_pass",
    "checkpoint_granularity",
    "image_order",
    "scores_dtype",
    "start_lr",
    "queue",
    "freeze",
    "last_bn_init",
    "blur_extent",
)


@pytest.mark.parametrize("quantity", BEHAVIOUR)
def test_behaviour_rows_cite_the_code_that_computes_it(quantity: str) -> None:
    for ref in REFERENCES:
        (row,) = [r for r in ref.rows if r.quantity == quantity]
        if row.value == NOT_RELEASED or (quantity == "checkpoint_granularity" and row.value == "none"):
            continue
        assert ".py:" in row.source, (ref.preset, quantity, row.source)


def test_unreleased_numbers_say_what_the_preset_takes() -> None:
    unreleased = [(ref.preset, row) for ref, row in _rows() if row.value == NOT_RELEASED]
    assert {preset for preset, _ in unreleased} >= {"seer-rg32gf", "seer-rg64gf", "seer-rg128gf"}
    for preset, row in unreleased:
        assert row.why.startswith(("not released", "whether", "the paper")), (preset, row)


def test_same_compares_numbers_to_a_relative_tolerance() -> None:
    assert same(0.0048387 * 31, 0.15) and same(4096, 4096.0) and not same(0.05, 0.03)
    assert same(False, False) and not same(False, 0) and not same(1, True)
    assert same("DDP", "DDP") and not same("DDP", "FSDP")


def test_check_flags_a_row_that_no_longer_holds(
    monkeypatch: pytest.MonkeyPatch, docs_generator: Callable[[str], ModuleType]
) -> None:
    gen = docs_generator("gen_conformance")
    assert gen.mismatches() == []
    ten_b = reference("seer-10b")
    rows = tuple(dataclasses.replace(r, value=0.05) if r.quantity == "epsilon" else r for r in ten_b.rows)
    broken = dataclasses.replace(ten_b, rows=rows)
    monkeypatch.setattr(gen, "REFERENCES", (broken,))
    (problem,) = gen.mismatches()
    assert "seer-10b: epsilon" in problem and "0.03" in problem


def test_conformance_page_is_current(docs_generator: Callable[[str], ModuleType]) -> None:
    assert (DOCS / "conformance.md").read_text() == docs_generator("gen_conformance").render(), (
        "run: python docs/gen_conformance.py"
    )


def test_a_temperature_schedule_no_longer_matches_the_references_constant() -> None:
    ref = reference("swav-rn50")
    scheduled = load_config(PretrainConfig, ["swav-rn50"], ["swav.temperature_start=0.3"])
    ours = QUANTITIES["temperature"].of(scheduled, ref)
    assert ours == "0.3 to 0.1 (cosine over the run)" and not same(ours, 0.1)
    assert same(QUANTITIES["temperature"].of(_config("swav-rn50"), ref), 0.1)
