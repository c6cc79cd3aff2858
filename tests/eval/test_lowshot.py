"""Low-shot: balanced, seeded label subsets; mean ± std over seeds; the pretrained network against baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openseer.cli import main as cli_main
from openseer.config import from_dict
from openseer.eval.lowshot import LowShotConfig, format_lowshot, label_subsets, mean_std, run_lowshot


def test_subsets_are_balanced_and_deterministic_per_seed() -> None:
    targets = torch.arange(5).repeat_interleave(200)[
        torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    ]
    subsets = label_subsets(targets, fractions=[0.01, 0.1], per_class=[3], seeds=[0, 1])
    assert list(subsets) == ["1%", "10%", "3/class"]
    for budget, per_class in (("1%", 2), ("10%", 20), ("3/class", 3)):
        for seed in (0, 1):
            idx = subsets[budget][seed]
            assert torch.bincount(targets[idx], minlength=5).tolist() == [per_class] * 5
            assert torch.equal(idx, label_subsets(targets, [0.01, 0.1], [3], [seed])[budget][seed])
        assert not torch.equal(subsets[budget][0], subsets[budget][1])
    # the 1% subset of seed 0 is not a function of the other budgets asked for
    assert torch.equal(subsets["1%"][0], label_subsets(targets, [0.01], seeds=[0])["1%"][0])


def test_mean_std() -> None:
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and s == pytest.approx(0.2)


@pytest.mark.slow
def test_linear_protocol_against_both_baselines(fresh_run, tmp_path: Path) -> None:
    run, folder = fresh_run
    cfg = from_dict(
        LowShotConfig,
        {
            "checkpoint": str(run),
            "train": str(folder),
            "fractions": [],
            "per_class": [2],
            "seeds": [0, 1],
            "probe": {"epochs": 3, "lrs": [0.1]},
            "scratch": {"epochs": 1, "batch_size": 6, "lr": 0.1},
            "features": {"workers": 0, "progress": False},
        },
    )
    seen = []
    result = run_lowshot(cfg, on_run=lambda *a: seen.append(a))
    assert [r["method"] for r in result["rows"]] == ["ssl-linear", "random", "supervised"]
    assert len(seen) == 6
    for row in result["rows"]:
        cell = row["cells"]["2/class"]
        assert [r["n_labels"] for r in cell["runs"]] == [6, 6] and 0 <= cell["top1_mean"] <= 1
        assert cell["top1_std"] >= 0
    assert json.loads((run / "eval" / "lowshot.json").read_text())["budgets"] == ["2/class"]
    assert "self-supervised, linear probe" in format_lowshot(result)


@pytest.mark.slow
def test_finetune_protocol_from_the_command_line(fresh_run, tmp_path: Path, capsys) -> None:
    run, folder = fresh_run
    argv = [
        "lowshot",
        str(run),
        "--train",
        str(folder),
        "--per-class",
        "2",
        "--seeds",
        "3",
        "--protocol",
        "finetune",
    ]
    argv += ["--baselines", "", "--set", "recipe.epochs=1", "--set", "recipe.batch_size=6", "--workers", "0"]
    assert cli_main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "self-supervised, fine-tuned" in out and "2/class" in out
    result = json.loads((run / "eval" / "lowshot.json").read_text())
    assert result["protocol"] == "finetune" and result["seeds"] == [3]
