"""The photos preset on a folder of 245 photos: it runs as it is, sized from the folder, and says what it chose."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from support.photos import photo_folder

from openseer.cli import main as cli_main
from openseer.fileio.checkpoint import latest_checkpoint
from openseer.train.sizing import AUTO_KEYS

SIZED = {"optim.batch_size": 30, "model.prototypes": 30, "swav.queue_length": 30, "optim.epochs": 250}


def _sized_lines(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    lines = [r.getMessage().removeprefix("sized from the data: ") for r in caplog.records]
    return {line.split("=", 1)[0]: line for line in lines if line.split("=", 1)[0] in AUTO_KEYS}


@pytest.mark.slow
def test_the_photos_preset_sizes_itself_for_a_folder_of_245_photos(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = photo_folder(tmp_path / "phone", 245, broken=2)
    run = tmp_path / "run"
    argv = ["pretrain", "--config", "photos", f"data.source={folder}", "run.max_steps=2", f"run.out_dir={run}"]
    with caplog.at_level(logging.INFO):
        assert cli_main(argv) == 0
    lines = _sized_lines(caplog)
    assert list(lines) == list(AUTO_KEYS)  # one line per value it sized, saying why
    for key, value in SIZED.items():
        assert lines[key].startswith(f"{key}={value}: "), lines[key]
    assert "245 images make 8 full global batches of 30" in lines["optim.batch_size"]
    printed = capsys.readouterr().out
    assert "pretraining: 2 steps, 60 images" in printed
    assert "skipped images: 2 unreadable files" in printed  # counted, and the run went on
    skipped = json.loads((run / "skipped_images.json").read_text())
    assert sorted(Path(s["path"]).name for s in skipped) == ["IMG_broken_0.jpg", "IMG_broken_1.jpg"]
    # the numbers, not 'auto', are what the run keeps: its config.yaml and its checkpoints
    saved = yaml.safe_load((run / "config.yaml").read_text())
    checkpoint = torch.load(latest_checkpoint(run / "checkpoints"), map_location="cpu", weights_only=False)
    for key, value in SIZED.items():
        section, name = key.split(".")
        assert saved[section][name] == checkpoint["config"][section][name] == value
    assert checkpoint["queue"]["embeddings"].shape[2] == 30  # the queue the loss was built with: 30 rows a crop
    # no labels: nothing to score, but the report shows what the prototypes group
    report = (run / "report.html").read_text()
    assert "<h2>Clusters</h2>" in report and "245 images of" in report

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli_main([*argv[:-2], "run.max_steps=3", f"run.out_dir={run}", "--resume"]) == 0
    resumed = _sized_lines(caplog)
    assert all("as this run sized it when it started" in line for line in resumed.values())
    assert [resumed[key].split(":")[0] for key in SIZED] == [f"{k}={v}" for k, v in SIZED.items()]


def test_a_folder_of_one_photo_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = photo_folder(tmp_path / "one", 1, broken=1)
    argv = ["pretrain", "--config", "photos", f"data.source={folder}", f"run.out_dir={tmp_path / 'run'}"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "1 training image: pretraining needs at least 2 per process (1 process) to make a batch" in err
