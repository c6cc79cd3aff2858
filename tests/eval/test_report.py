"""The run report: built from a tiny run after the quick evaluation, self-contained, rendered by Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import cache_env, make_image_folder, tiny_overrides

from openseer.cli import main as cli_main
from openseer.config import load_config
from openseer.eval.linear import ProbeConfig
from openseer.eval.neighbors import save_grid
from openseer.eval.pretraining import evaluate_pretraining
from openseer.eval.report import (
    accuracy_rows,
    before_decay,
    build_report,
    not_flattened,
    read_metrics,
    run_curves,
    summary_html,
    tail_change,
)
from openseer.train.config import PretrainConfig
from openseer.train.pretrain import pretrain

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def evaluated_run(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run after its end-of-pretraining evaluation, plus hand-written low-shot and cluster
    results."""
    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "run"
    shutil.copytree(tiny_run[0], run)
    with cache_env(tmp / "cache"):
        figures = evaluate_pretraining(run, device="cpu", probe=ProbeConfig(epochs=5))
    (run / "figures.json").write_text(json.dumps(figures))
    flat = [{"step": s, "loss": 0.2 + 10 / s, "val_top1": 0.8} for s in range(10, 210, 10)]
    falling = [{"step": s, "loss": 3 - s / 100} for s in range(10, 210, 10)]  # 2.9 -> 1.0, no flattening
    runs = [
        {"seed": 0, "top1": 0.5, "lr": 0.1, "curve": flat},
        {"seed": 1, "top1": 0.5, "lr": 0.1, "curve": falling, "val_curves": {"0.1": flat}},
    ]
    cell = {"top1_mean": 0.5, "top1_std": 0.1, "top5_mean": 0.9, "top5_std": 0.0, "runs": runs}
    lowshot = {
        "kind": "lowshot",
        "protocol": "linear",
        "test": "held-out",
        "budgets": ["1%", "10%"],
        "seeds": [0, 1, 2],
        "rows": [
            {"method": m, "name": n, "cells": {"1%": cell, "10%": cell}}
            for m, n in [
                ("ssl-linear", "self-supervised, linear probe"),
                ("supervised", "supervised from scratch"),
            ]
        ],
    }
    (run / "eval" / "lowshot.json").write_text(json.dumps(lowshot))
    rng = np.random.default_rng(0)
    png = save_grid(
        __import__("torch").from_numpy(rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)),
        run / "eval" / "clusters" / "cluster-00003.png",
    )
    clusters = {
        "kind": "clusters",
        "data": "imgs",
        "n_images": 36,
        "prototypes": 10,
        "used": 2,
        "empty": 8,
        "sizes": [0, 0, 0, 30, 6, 0, 0, 0, 0, 0],
        "clusters": [{"prototype": 3, "rank": 1, "size": 30, "png": str(png), "majority_label": "class1",
                      "majority_share": 0.5}],
    }  # fmt: skip
    (run / "eval" / "clusters.json").write_text(json.dumps(clusters))
    return run


@pytest.mark.slow
def test_end_of_pretraining_evaluation_scores_the_held_out_split_once(evaluated_run: Path) -> None:
    figures = json.loads((evaluated_run / "figures.json").read_text())
    for key in ("knn_top1", "knn_top5", "knn_top1_random", "knn_top5_random", "linear_top1", "linear_top5"):
        assert 0.0 <= figures[key] <= 1.0
    knn = json.loads((evaluated_run / "eval" / "pretraining-knn.json").read_text())
    random = json.loads((evaluated_run / "eval" / "pretraining-knn-random.json").read_text())
    linear = json.loads((evaluated_run / "eval" / "pretraining-linear.json").read_text())
    assert knn["n_test"] == random["n_test"] == linear["n_test"] == 9 and knn["n_train"] == 27
    assert (knn["top1"], random["top1"], linear["top1"]) == (
        figures["knn_top1"],
        figures["knn_top1_random"],
        figures["linear_top1"],
    )  # what is printed is what is written: one figure per score
    assert knn["protocol"] == linear["protocol"] == "end of pretraining"
    assert Path(figures["report"]) == evaluated_run / "report.html"
    page = (evaluated_run / "report.html").read_text()
    assert page.count("kNN (end of pretraining)") == 2  # pretrained and random init, once each


@pytest.mark.slow
def test_report_is_one_self_contained_page(evaluated_run: Path) -> None:
    page = build_report(evaluated_run).read_text()
    for heading in ("Training", "Accuracy", "Low-shot", "Confusion matrix", "Clusters"):
        assert f"<h2>{heading}</h2>" in page
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "supervised from scratch" in page and "50.00 ± 10.00" in page
    # one plot of training curves per low-shot method, and the runs whose loss was still falling named
    assert "<h3>Training curves</h3>" in page and len(sources) >= 7
    assert page.count("alt='training curves:") == 2
    assert "supervised from scratch, 10%, seed 1: loss still falling by" in page
    assert "seed 0: loss" not in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere


@pytest.mark.slow
def test_the_report_of_an_unlabelled_folder_shows_what_its_prototypes_group(tmp_path: Path) -> None:
    """Nothing to score without labels, but the end of pretraining still groups the images trained on, as
    `openseer clusters` does, and the report shows the groups, every grid embedded."""
    folder = make_image_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    overrides = tiny_overrides(folder, run, data__labels="none", run__max_steps=2, run__evaluate=False)
    pretrain(load_config(PretrainConfig, [], overrides))
    figures = evaluate_pretraining(run, device="cpu")
    assert set(figures) == {"report", "seconds"}  # no labels: no kNN, no probe
    result = json.loads((run / "eval" / "clusters.json").read_text())
    assert result["n_images"] == sum(result["sizes"]) == 36 and result["prototypes"] == 10
    assert result["clusters"] and all("majority_label" not in c for c in result["clusters"])
    page = (run / "report.html").read_text()
    assert "<h2>Clusters</h2>" in page and summary_html(result) in page
    grids = re.findall(r"<img src='(data:image/png;base64,[^']*)' alt='cluster (\d+)'", page)
    assert [int(p) for _, p in grids] == [c["prototype"] for c in result["clusters"]]
    assert "http://" not in page and "https://" not in page and "cluster-0" not in page  # nothing outside it
    # the gallery of the clusters command: the same paragraph and captions, its grids as files next to it
    gallery = (run / "eval" / "clusters" / "index.html").read_text()
    assert summary_html(result) in gallery
    for c in result["clusters"]:
        caption = f"#{c['rank']}: prototype {c['prototype']}, {c['size']} images"
        assert caption in page and caption in gallery and Path(c["png"]).name in gallery


def test_report_reading_is_tolerant(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 2, "final/x": 1}\n')
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]
    rows = accuracy_rows(
        [
            {
                "kind": "knn",
                "model": "pretrained",
                "protocol": "end of pretraining",
                "top1": 0.5,
                "top5": 0.75,
            },
            {"kind": "knn", "model": "random", "top1": 0.25},
            {"kind": "clusters"},
        ]
    )
    assert rows[0][0] == "kNN (end of pretraining)" and rows[0][-2:] == ["50.00", "75.00"]
    assert rows[1][1] == "random init" and rows[1][-1] == "–" and len(rows) == 2
    assert cli_main(["report", str(tmp_path)]) == 0
    assert "Nothing to report" not in (tmp_path / "report.html").read_text()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y chromium)")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(evaluated_run: Path, tmp_path: Path) -> None:
    page = build_report(evaluated_run, tmp_path / "report.html")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r"<img src=\"data:image/png;base64,", dom.stdout)) >= 7
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.shape == (2000, 1200) and pixels.std() > 10  # text, plots and grids, not a blank page
    assert len(np.unique(pixels)) > 50


def test_curve_flattening_is_judged_on_the_last_tenth_of_the_steps() -> None:
    steps = range(10, 1010, 10)
    flat = [{"step": s, "loss": 0.3 + 20 / s, "val_top1": 0.9} for s in steps]  # 2.3 -> 0.32, flat at the end
    assert not_flattened({"curve": flat}) == []
    # loss falling by 0.2 over the last 100 steps, around a level of 0.1 there; accuracy rising 5 points
    falling = [{"step": s, "loss": 2.0 - 0.002 * s} for s in steps]
    assert not_flattened({"curve": falling}) == ["loss still falling by 200% over the last 10% of the steps"]
    change, level = tail_change(falling, "loss")
    assert change == pytest.approx(-0.2, rel=1e-6) and level == pytest.approx(0.1, rel=1e-6)
    rising = [{**p, "val_top1": 0.5 + 0.0005 * p["step"]} for p in flat]
    assert not_flattened({"curve": rising}) == [
        "validation top-1 still rising by 5.0 points over the last 10% of the steps"
    ]
    # a run retrained on the whole subset (no validation split left) is judged on its validation run
    refit = {
        "curve": [{"step": p["step"], "loss": p["loss"]} for p in flat],
        "lr": 0.1,
        "val_curves": {"0.1": rising},
    }
    assert run_curves(refit)[1] is rising and len(not_flattened(refit)) == 1
    assert tail_change(flat[:2], "loss") is None and not_flattened({}) == []


def test_a_step_decay_does_not_pass_for_a_plateau_nor_a_stuck_loss_for_convergence() -> None:
    # falling steadily until the rate drops 10x at step 860, then frozen: flat over the last 10% only
    frozen = [
        {"step": s, "loss": 2.3 - 0.002 * min(s, 860), "lr": 0.1 if s <= 860 else 0.01}
        for s in range(10, 1010, 10)
    ]
    assert before_decay(frozen) == 860 and before_decay([{"step": 1, "loss": 1.0}]) is None
    assert not_flattened({"curve": frozen}) == [
        "loss still falling by 29% over the 10% before the learning rate decays"  # 0.2 around 0.68
    ]
    # a rate too small for the budget: flat, but hardly below where it started (ln 10 for ten classes)
    stuck = [{"step": s, "loss": 2.3 - 0.0002 * s} for s in range(10, 1010, 10)]
    assert not_flattened({"curve": stuck}) == ["loss barely moved: 2.3 at first, 2.11 at the end"]
