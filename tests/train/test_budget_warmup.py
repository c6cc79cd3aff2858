"""A run bounded by minutes warms up for the same share of its time as the epoch-bounded run would of its steps
(optim.warmup_steps is a step count, not a number of cells of the time grid).

The loop's clock is replaced by one that advances a fixed 0.25 s per reading, so the number of steps in the
budget does not depend on the speed of this (shared) machine."""

from __future__ import annotations

import itertools
import json
import types
from dataclasses import replace
from pathlib import Path

import pytest
import support
import torch
from PIL import Image

from openseer.config import load_config
from openseer.train import pretrain as loop
from openseer.train.config import PretrainConfig


def _images(root: Path, n: int = 40, size: int = 20) -> Path:
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / f"{i}.png")
    return root


@pytest.mark.slow
def test_budgeted_run_leaves_warmup_after_its_share_of_the_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENSEER_CACHE", str(tmp_path / "cache"))
    ticks = itertools.count()
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: 0.25 * next(ticks)))
    (tmp_path / "imgs").mkdir()
    source = _images(tmp_path / "imgs")
    # 40 images, batch 8: 5 steps an epoch; 20,000 epochs = 100,000 planned steps, 5,000 of them warm-up (5%).
    # Read as cells of the 10,000-cell time grid, 5,000 warm-up steps would be half of the budget.
    overrides = support.tiny_overrides(
        source,
        tmp_path / "run",
        data__labels="none",
        crops="[{size: 8, count: 2, scale: [0.3, 1.0]}]",
        optim__epochs=20_000,
        optim__warmup_steps=5000,
        optim__warmup_epochs=0,
        run__budget_minutes=0.15,  # 9 s of the fake clock, read 3 times a step (0.75 s): about 12 steps
        run__evaluate=False,
        run__checkpoint_every=10_000,
    )
    cfg = load_config(PretrainConfig, [], overrides)
    loop.pretrain(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [line["lr"] for line in lines if "lr" in line]  # the last line holds the run's summary
    assert len(lrs) >= 10, "too few steps in the budget to see the schedule"
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    # the run warms up: its first step is at the warm-up's start (optim.start_lr), below the peak that comes
    # after it (without a warm-up the first step would be the peak) ...
    assert lrs[0] == pytest.approx(cfg.optim.start_lr * cfg.optim.lr_scale(1)) and lrs[0] < 0.5 * lrs[peak]
    assert peak >= 1 and lrs[: peak + 1] == sorted(lrs[: peak + 1])
    # ... for 5% of its time, not for the half that 5,000 steps read as cells of the time grid would be
    assert peak / len(lrs) < 0.25, f"lr still warming up after {peak} of {len(lrs)} steps"
    assert lrs[-1] < lrs[peak]


@pytest.mark.slow
def test_choosing_fast_paths_comes_out_of_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds spent timing trial steps (or compiling) at start-up shorten the training a budget allows, and the
    schedule still ends with the shortened budget."""
    monkeypatch.setenv("OPENSEER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "imgs").mkdir()
    source = _images(tmp_path / "imgs")
    real_choose = loop.choose_fast_paths

    def run(name: str, choosing_s: float) -> list[dict]:
        ticks = itertools.count()
        monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: 0.25 * next(ticks)))

        def choose(*args, **kwargs):
            fast = real_choose(*args, **kwargs)
            return replace(fast, decision=replace(fast.decision, autotune_s=choosing_s))

        monkeypatch.setattr(loop, "choose_fast_paths", choose)
        overrides = support.tiny_overrides(
            source,
            tmp_path / name,
            data__labels="none",
            crops="[{size: 8, count: 2, scale: [0.3, 1.0]}]",
            optim__warmup_fraction=0.1,
            run__budget_minutes=0.1,  # 6 s of the fake clock
            run__evaluate=False,
            run__checkpoint_every=10_000,
            run__log_every=1,
        )
        loop.pretrain(load_config(PretrainConfig, [], overrides))
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [line for line in lines if "lr" in line]

    full, after_choosing = run("full", 0.0), run("after-choosing", 3.0)  # half the budget spent choosing
    assert 0.35 < len(after_choosing) / len(full) < 0.65, (len(after_choosing), len(full))
    for lines in (full, after_choosing):  # each schedule runs its own budget to the end
        assert lines[-1]["lr"] < 0.2 * max(line["lr"] for line in lines)
