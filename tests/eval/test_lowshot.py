"""Low-shot: balanced, seeded label subsets; mean ± std over seeds; the pretrained network against baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from support import FAST_EVAL

from openseer.cli import main as cli_main
from openseer.config import from_dict
from openseer.data.labelled import EvalData
from openseer.eval.lowshot import LowShotConfig, format_lowshot, label_subsets, lowshot, mean_std, run_lowshot
from openseer.weights import load_weights


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
            "scratch": {"steps": 3, "batch_size": 6, "lr": 0.1, "lr_factors": [0.3, 1.0], "log_points": 3},
            "features": {"workers": 0, "progress": False},
        },
    )
    result = run_lowshot(cfg)
    assert [r["method"] for r in result["rows"]] == ["ssl-linear", "random", "supervised"]
    assert sum(len(cell["runs"]) for row in result["rows"] for cell in row["cells"].values()) == 6
    for row in result["rows"]:
        cell = row["cells"]["2/class"]
        assert [r["n_labels"] for r in cell["runs"]] == [6, 6] and 0 <= cell["top1_mean"] <= 1
        assert cell["top1_std"] >= 0
    assert json.loads((run / "eval" / "lowshot.json").read_text())["budgets"] == ["2/class"]
    assert "self-supervised, linear probe" in format_lowshot(result)
    # every run keeps how it was trained: the learning rate chosen on validation and the training curve
    probe_run, scratch_run = (
        result["rows"][1]["cells"]["2/class"]["runs"][0],
        result["rows"][2]["cells"]["2/class"]["runs"][0],
    )
    assert probe_run["lr"] == 0.1 and set(probe_run["val_top1"]) == {"0.1"}
    assert probe_run["curve"][-1]["step"] == 3 and {"loss", "val_top1"} <= set(probe_run["curve"][-1])
    assert scratch_run["steps"] == 3 and scratch_run["refit"] and scratch_run["lr"] in (0.03, 0.1)
    assert [p["step"] for p in scratch_run["curve"]] == [1, 2, 3] and set(scratch_run["val_curves"]) == {
        "0.03",
        "0.1",
    }
    assert all("val_top1" in p for p in scratch_run["val_curves"]["0.1"])


@pytest.mark.slow
def test_finetune_protocol_from_the_command_line(fresh_run, tmp_path: Path, capsys) -> None:
    run, folder = fresh_run
    argv = [
        "lowshot",
        str(run),
        f"train={folder}",
        "per_class=[2]",
        "fractions=[]",
        "seeds=[3]",
        "protocol=finetune",
    ]
    argv += ["baselines=[]", "recipe.epochs=1", "recipe.batch_size=6"]
    assert cli_main([*argv, *FAST_EVAL]) == 0
    out = capsys.readouterr().out
    assert "self-supervised, fine-tuned" in out and "2/class" in out
    result = json.loads((run / "eval" / "lowshot.json").read_text())
    assert result["protocol"] == "finetune" and result["seeds"] == [3]


def stripes(per_class: int, seed: int, size: int = 16) -> EvalData:
    """Two classes of noisy grey stripes, horizontal (0) or vertical (1), of random period and phase: the
    orientation is the only cue (no colour, no brightness), and a horizontal flip keeps it."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * per_class
    targets = torch.arange(2).repeat_interleave(per_class)
    period = torch.randint(3, 7, (n, 1, 1), generator=g).float()
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    coord = torch.arange(size).float()
    rows = torch.sin(2 * math.pi * coord.view(1, size, 1) / period + phase).expand(n, size, size)
    cols = torch.sin(2 * math.pi * coord.view(1, 1, size) / period + phase).expand(n, size, size)
    noise = 0.3 * torch.randn(n, size, size, generator=g)
    pattern = torch.where(targets.view(n, 1, 1) == 0, rows, cols) + noise
    images = ((pattern.clamp(-2, 2) + 2) * 63.75).to(torch.uint8).unsqueeze(1).expand(n, 3, size, size)
    return EvalData(f"stripes-{seed}", targets, ["horizontal", "vertical"], images=images.contiguous())


@pytest.mark.slow
def test_supervised_from_scratch_beats_chance_on_a_tiny_labelled_set(fresh_run, tmp_path: Path) -> None:
    """Trained for a budget of steps with its learning rate chosen on validation, the from-scratch baseline
    learns a task a network at random initialisation cannot solve by chance: 16 labelled images per class."""
    run, _ = fresh_run
    cfg = from_dict(
        LowShotConfig,
        {
            "checkpoint": str(run),
            "fractions": [],
            "per_class": [16],
            "seeds": [0],
            "baselines": ["supervised"],
            "probe": {"epochs": 5},
            "scratch": {"steps": 50, "batch_size": 16, "lr": 1.0, "crop_scale": [0.35, 1.0]},
            "features": {"workers": 0, "progress": False},
        },
    )
    result = lowshot(load_weights(run), stripes(16, seed=0), stripes(50, seed=1), cfg)
    cell = result["rows"][1]["cells"]["16/class"]
    assert cell["top1_mean"] >= 0.8, cell  # chance is 0.5
    assert cell["runs"][0]["steps"] == 50
