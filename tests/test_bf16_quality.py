"""benchmarks/bf16_quality.py: variants as config keys, the summary paired by seed, the rehearsal's command, and a
smoke comparison whose last line has every variant's scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import support
from support.benchmarks import benchmark_module

from openseer.config import load_config, parse_override
from openseer.train.config import PretrainConfig


def test_a_variant_is_a_precision_and_the_modules_kept_in_fp32() -> None:
    bq = benchmark_module("bf16_quality")
    assert bq.parse_variant("bf16+batchnorm+head") == ("bf16", ["batchnorm", "head"])
    assert bq.parse_variant("fp32") == ("fp32", [])
    for bad in ("bf8", "bf16+prototypes"):
        with pytest.raises(SystemExit, match="expected a precision"):
            bq.parse_variant(bad)
    cfg = load_config(PretrainConfig, ["cpu"], bq.variant_overrides("bf16+batchnorm+small_maps", 3))
    assert (cfg.run.precision, cfg.run.fp32_modules, cfg.run.seed) == ("bf16", ["batchnorm", "small_maps"], 3)
    assert cfg.run.compile is False
    # the rehearsal reads its extra overrides as YAML, as the CLI does: the list arrives as a list
    command = bq.rehearsal_command(
        "seer-rg256gf", "builtin", 300, bq.variant_overrides("bf16+head", 1), [], Path("o")
    )
    assert command[1].endswith("rehearsal.py") and "run.fp32_modules=[head]" in command
    assert dict(parse_override(c) for c in command if c.startswith("run."))["run.fp32_modules"] == ["head"]


def test_the_summary_pairs_each_variant_with_fp32_seed_by_seed() -> None:
    bq = benchmark_module("bf16_quality")
    runs = {
        "fp32": {0: {"knn": 0.50, "linear": 0.70}, 1: {"knn": 0.60, "linear": 0.72}},
        "bf16+batchnorm": {0: {"knn": 0.48, "linear": 0.69}, 1: {"knn": 0.57, "linear": 0.70}},
    }
    lines, figures = bq.summary(runs)
    got = dict(f.split("=") for f in figures)
    assert float(got["fp32_knn_mean"]) == pytest.approx(0.55) and float(got["fp32_knn_sd"]) > 0
    assert float(got["bf16_batchnorm_knn_vs_fp32"]) == pytest.approx(-0.025, abs=1e-4)
    assert float(got["bf16_batchnorm_linear_vs_fp32"]) == pytest.approx(-0.015, abs=1e-4)
    assert "fp32_knn_vs_fp32" not in got and len(lines) == 2
    assert bq.last_line_figures("noise\nknn_top1=0.5 steps=3 cpu=X\n") == {
        "knn_top1": "0.5",
        "steps": "3",
        "cpu": "X",
    }


@pytest.mark.slow
def test_a_smoke_comparison_scores_every_variant_at_equal_steps(tmp_path: Path) -> None:
    folder = support.make_image_folder(tmp_path / "imgs", classes=3, per_class=12, size=20)
    tiny = [
        o
        for o in support.tiny_overrides(folder, tmp_path)
        if not o.startswith(("data.source=", "run.out_dir="))
    ]
    line = benchmark_module("bf16_quality").main(
        [
            "--steps", "2", "--seeds", "0,1", "--variants", "fp32,bf16+batchnorm+head",
            "--data", str(folder), "--out", str(tmp_path / "out"), *tiny,
        ]
    )  # fmt: skip
    figures = dict(pair.split("=", 1) for pair in line.split())
    for name in ("fp32", "bf16_batchnorm_head"):
        for metric in ("knn", "linear"):
            assert 0.0 <= float(figures[f"{name}_{metric}_mean"]) <= 1.0
    assert "bf16_batchnorm_head_knn_vs_fp32" in figures
    assert (figures["steps"], figures["seeds"], figures["preset"]) == ("2", "2", "cpu")
    assert figures["bf16"] in ("native", "emulated") and figures["cpu"]
