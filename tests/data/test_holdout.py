"""Pretraining's held-out split: one labelled-data layer cuts the source, the run folder records the cut
(``RUN/holdout.json``), every command reads it back, and no held-out image ever reaches a training batch."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import make_image_folder, tiny_overrides

from openseer.config import load_config
from openseer.data.folders import DataError, split_per_class
from openseer.data.labelled import HOLDOUT_FILE, Holdout, load_data, split_source
from openseer.train.config import DataConfig, PretrainConfig
from openseer.train.data import LoaderBatches, TensorBatches, prepare_data


def _paths(data) -> list[str]:  # noqa: ANN001 - an EvalData
    return [str(p) for p in data.paths]


def test_a_labelled_folder_holds_out_a_share_of_each_class(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "f", classes=3, per_class=8)
    full = load_data(str(folder))
    split = split_source(str(folder), "auto", holdout=0.25, seed=3)
    train_idx, test_idx = split_per_class(full.targets, 0.25, seed=3)
    assert _paths(split.test) == [str(full.paths[i]) for i in test_idx]
    assert _paths(split.train) == [str(full.paths[i]) for i in train_idx]
    assert torch.bincount(split.test.targets).tolist() == [2, 2, 2]
    assert split.train.classes == split.test.classes == ["class0", "class1", "class2"]
    assert not set(_paths(split.train)) & set(_paths(split.test))


def test_the_record_reads_back_the_same_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_image_folder(tmp_path / "f", classes=3, per_class=8)
    monkeypatch.chdir(tmp_path)  # a relative source is recorded as an absolute path
    split = split_source("f", "folder", holdout=0.25, seed=3)
    split.record().save(tmp_path / "run" / HOLDOUT_FILE)
    written = json.loads((tmp_path / "run" / HOLDOUT_FILE).read_text())
    assert written["source"] == str(folder) and written["classes"] == ["class0", "class1", "class2"]
    assert written["test"]["paths"][0].startswith("class0/") and len(written["test"]["paths"]) == 6
    assert written["test"]["labels"] == split.test.targets.tolist()
    monkeypatch.chdir("/")
    record = Holdout.read(tmp_path / "run" / HOLDOUT_FILE)
    assert record.same_source(str(folder)) and not record.same_source(str(tmp_path))
    again = record.split()
    assert [Path(p).resolve() for p in again.test.paths] == [(tmp_path / p).resolve() for p in split.test.paths]
    assert [Path(p).resolve() for p in again.train.paths] == [(tmp_path / p).resolve() for p in split.train.paths]
    assert torch.equal(again.test.targets, split.test.targets)
    assert torch.equal(again.train.targets, split.train.targets)


def test_the_record_outlives_changes_to_the_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Files added later join the training part (never the held-out one); a held-out file that has gone is left
    out with a warning; other classes are an error."""
    folder = make_image_folder(tmp_path / "f", classes=3, per_class=8)
    record = split_source(str(folder), holdout=0.25, seed=0).record()
    held = [folder / p for p in record.test["paths"]]
    Image.new("RGB", (20, 20)).save(folder / "class1" / "new.png")
    held[0].unlink()
    with caplog.at_level(logging.WARNING):
        split = record.split()
    assert "1 held-out files" in caplog.text
    assert _paths(split.test) == [str(p) for p in held[1:]]
    assert str(folder / "class1" / "new.png") in _paths(split.train) and len(split.train) == 19
    (folder / "class3").mkdir()
    shutil.copy(folder / "class1" / "new.png", folder / "class3" / "x.png")
    with pytest.raises(DataError, match="no longer matches"):
        record.split()


def test_builtin_unlabelled_and_nothing_held_out(tmp_path: Path) -> None:
    builtin = split_source("builtin")
    assert (builtin.train.name, builtin.test.name) == ("builtin:train", "builtin:test")
    record = builtin.record()
    assert (record.source, record.test) == ("builtin", "builtin:test") and record.same_source("builtin:train")
    assert torch.equal(record.split().test.targets, builtin.test.targets)
    folder = make_image_folder(tmp_path / "f", classes=2, per_class=4)
    nothing = split_source(str(folder), holdout=0.0)
    assert nothing.test is None and nothing.labelled and len(nothing.train) == 8
    assert nothing.record().split().test is None
    unlabelled = split_source(str(folder), "none", holdout=0.5)
    assert unlabelled.test is None and not unlabelled.labelled and unlabelled.record().classes is None
    assert _paths(unlabelled.record().split().train) == _paths(unlabelled.train)


@pytest.mark.parametrize("cache_size", [None, 16])
def test_prepare_data_records_the_split_it_trains_on(tmp_path: Path, cache_size: int | None) -> None:
    folder = make_image_folder(tmp_path / "f", classes=3, per_class=8)
    cfg = DataConfig(source=str(folder), holdout=0.25, cache_size=cache_size, workers=0)
    data = prepare_data(cfg, seed=5, run_dir=tmp_path / "run")
    split = Holdout.read(tmp_path / "run" / HOLDOUT_FILE).split()
    assert (split.holdout, split.seed) == (0.25, 5)
    assert len(data) == len(split.train) == 18 and len(data.test) == len(split.test) == 6
    assert torch.equal(data.bank.targets, split.train.targets) and torch.equal(data.test.targets, split.test.targets)
    if cache_size is None:
        assert data.train_paths == split.train.paths and data.bank.paths == split.train.paths
    else:  # decoded in memory, in the split's order
        assert data.train_images.shape == (18, 3, 16, 16) and data.bank.images is data.train_images
        assert data.test.images.shape == (6, 3, 16, 16)


# ============ no held-out image reaches a training batch ============


def _index_folder(root: Path, classes: int = 3, per_class: int = 12) -> dict[str, int]:
    """An ImageFolder tree of flat-colour PNGs whose red and green channels encode a global index; returns
    {path relative to root: index}."""
    index = {}
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for j in range(per_class):
            i = c * per_class + j
            Image.new("RGB", (20, 20), (i % 256, i // 256, 7)).save(root / f"class{c}" / f"{j}.png")
            index[f"class{c}/{j}.png"] = i
    return index


def _ids(crops: torch.Tensor) -> list[int]:
    rgb = (crops.float() * 255).round().long()
    assert (rgb == rgb[:, :, :1, :1]).all(), "not flat crops of index-coded images"
    return (rgb[:, 0, 0, 0] + 256 * rgb[:, 1, 0, 0]).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("cache_size", [16, "null"])
def test_no_held_out_image_ever_reaches_a_training_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_size: int | str
) -> None:
    """A pretraining of two epochs on index-coded images, augmented with crops and flips only: every crop of
    every batch the loop draws is read back to its image, and none is one the run recorded as held out."""
    index = _index_folder(tmp_path / "imgs")
    seen: list[int] = []
    for stream in (TensorBatches, LoaderBatches):
        drawn = stream.epoch

        def spy(self, epoch: int, start: int = 0, drawn=drawn):  # noqa: ANN001, ANN202 - the stream's own
            for crops in drawn(self, epoch, start):
                for crop in crops:
                    seen.extend(_ids(crop))
                yield crops

        monkeypatch.setattr(stream, "epoch", spy)
    overrides = tiny_overrides(
        tmp_path / "imgs",
        tmp_path / "run",
        data__cache_size=cache_size,
        optim__epochs=2,  # 27 training images in batches of 8: 6 steps
        run__evaluate=False,
        augment__color_p=0.0,
        augment__grayscale_p=0.0,
        augment__blur_p=0.0,
        augment__mean="[0.0, 0.0, 0.0]",
        augment__std="[1.0, 1.0, 1.0]",
    )
    from openseer.train.pretrain import pretrain

    pretrain(load_config(PretrainConfig, [], overrides))
    record = json.loads((tmp_path / "run" / HOLDOUT_FILE).read_text())
    held = {index[p] for p in record["test"]["paths"]}
    assert len(held) == 9 and len(seen) >= 6 * 8 * 4  # 4 crops of each image of every batch
    assert not held & set(seen)
    assert len(set(seen)) >= 24  # a whole epoch's images, so a leak would show
