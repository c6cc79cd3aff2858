"""benchmarks/photos.py end to end on a few generated labelled photos: each preset pretrains on the train folder
without its labels and is scored on the val folder, as is its network at random initialisation; the last line
names the CPU and every figure."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from support.benchmarks import benchmark_module
from support.photos import photo_jpeg

FIGURES = ("knn", "linear", "lowshot_1pct", "lowshot_10pct")


def _labelled(root: Path, per_class: int) -> Path:
    for c in range(3):
        (root / f"n0{c}").mkdir(parents=True)
        for i in range(per_class):
            photo_jpeg(root / f"n0{c}" / f"{i}.JPEG", 64 + 8 * c, 48, seed=100 * c + i)
    return root


@pytest.mark.slow
def test_the_last_line_has_every_figure_of_every_preset_and_the_random_networks(tmp_path: Path) -> None:
    train, val = _labelled(tmp_path / "train", 16), _labelled(tmp_path / "val", 6)
    fast = ["run.precision=fp32", "run.compile=false"]
    sets = [arg for preset in ("photos", "cpu") for value in fast for arg in ("--set", preset, value)]
    sets += ["--set", "cpu", "optim.batch_size=8"]  # the cpu preset's 256 would not fill a batch
    line = benchmark_module("photos").main(
        [
            *("--train", str(train), "--val", str(val), "--out", str(tmp_path / "runs")),
            *("--minutes", "0.05", "--limit", "30", "--probe-epochs", "2", "--workers", "0"),
            *sets,
        ]
    )
    cpu, *pairs = shlex.split(line)
    assert cpu.startswith("cpu=") and len(cpu) > len("cpu=")
    figures = dict(pair.split("=", 1) for pair in pairs)
    expected = [f"photos_0.05m_{f}" for f in ("steps", "imgs_per_s", *FIGURES)]
    expected += [f"random_photos_{f}" for f in FIGURES]
    expected += [f"cpu_0.05m_{f}" for f in ("steps", "imgs_per_s", *FIGURES)] + [f"random_cpu_{f}" for f in FIGURES]
    assert list(figures) == expected
    assert all(0.0 <= float(figures[k]) <= 1.0 for k in expected if k.endswith(FIGURES))
    assert int(figures["photos_0.05m_steps"]) >= 1
    # --limit: a class-balanced sample of the train folder (10 of each class) and half as many val photos
    assert len(list((tmp_path / "runs" / "data" / "train").rglob("*.JPEG"))) == 30
    assert len(list((tmp_path / "runs" / "data" / "val").rglob("*.JPEG"))) == 15
