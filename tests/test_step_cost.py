"""benchmarks/step_cost.py: variants parsed as the shell hands them over, and one short comparison whose last
line names every variant's step and FLOP ratios."""

from __future__ import annotations

import pytest
from support.benchmarks import benchmark_module


def test_a_variant_keeps_spaces_inside_a_value_and_splits_between_pairs() -> None:
    parse = benchmark_module("step_cost").parse_variant
    name, overrides = parse("crop24=crops=[{size: 24, count: 2, scale: [0.2, 1.0]}] optim.batch_size=128")
    assert name == "crop24"
    assert overrides == ["crops=[{size: 24, count: 2, scale: [0.2, 1.0]}]", "optim.batch_size=128"]
    assert parse("stride4=model.output_stride=4") == ("stride4", ["model.output_stride=4"])
    with pytest.raises(SystemExit, match="NAME=OVERRIDES"):
        parse("model.output_stride")


@pytest.mark.slow
def test_the_last_line_has_each_variants_ratios() -> None:
    line = benchmark_module("step_cost").main(
        [
            "--precision",
            "fp32",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--common",
            "optim.batch_size=8 model.arch=regnety_200mf",
            "stride16=model.output_stride=16",
            "wide=model.head_hidden=[1024]",
        ]
    )
    figures = dict(pair.split("=", 1) for pair in line.split())
    assert float(figures["preset_s"]) > 0
    assert float(figures["stride16_flops_ratio"]) < 1.0  # the last stage strided again: less work
    assert float(figures["wide_flops_ratio"]) > 1.0  # a wider projection head: more
    assert {"stride16_ratio", "wide_ratio", "cpu", "threads", "precision"} <= figures.keys()
