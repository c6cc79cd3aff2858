"""list_images, the folder datasets and the per-class splits."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from support.photos import photo_jpeg, record_decodes

from openseer.data import folders
from openseer.data.folders import (
    DataError,
    LabelledImages,
    Skipped,
    UnlabelledImages,
    list_images,
    split_per_class,
    subset_per_class,
)


def _image(path: Path, colour=(10, 20, 30), size=(4, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_lists_nested_mixed_and_uppercase_sorted(tmp_path):
    wanted = [
        _image(tmp_path / "b" / "deep" / "x.PNG"),
        _image(tmp_path / "a.jpg"),
        _image(tmp_path / "b" / "y.JpEg"),
        _image(tmp_path / "c.webp"),
        _image(tmp_path / "d.TIF"),
    ]
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "meta.json").write_text("{}")
    assert list_images(tmp_path) == sorted(wanted)
    assert list_images(str(tmp_path)) == sorted(wanted)


def test_symlink_loop_terminates_and_links_are_followed(tmp_path):
    root = tmp_path / "root"
    first = _image(root / "a" / "1.png")
    os.symlink(root, root / "a" / "loop")  # points back at an ancestor
    outside = _image(tmp_path / "elsewhere" / "2.png")
    os.symlink(outside.parent, root / "linked")
    found = list_images(root)
    assert first in found
    assert root / "linked" / "2.png" in found
    assert len(found) == 2


def test_path_list_with_comments_and_relative_paths(tmp_path):
    a = _image(tmp_path / "imgs" / "a.png")
    b = _image(tmp_path / "other" / "b.jpg")
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my images\n\n../imgs/a.png\n  {b}  \n# done\n")
    assert list_images(listing) == [tmp_path / "lists" / ".." / "imgs" / "a.png", b]
    assert all(p.exists() for p in list_images(listing))
    assert a.exists()


@pytest.mark.parametrize("header", ["path,split\n", ""])
def test_csv_list_takes_first_column(tmp_path, header):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    listing = tmp_path / "files.csv"
    listing.write_text(f"{header}a.png,train\nb.png,val\n")
    assert list_images(listing) == [tmp_path / "a.png", tmp_path / "b.png"]


def test_missing_empty_and_unknown_sources(tmp_path):
    with pytest.raises(DataError, match="data path does not exist: .*nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=r"no images found under .*empty \(looked for .*\.jpg"):
        list_images(tmp_path / "empty")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="no image paths listed"):
        list_images(tmp_path / "empty.txt")
    (tmp_path / "data.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="neither a folder nor a path list"):
        list_images(tmp_path / "data.bin")
    assert issubclass(DataError, ValueError)


def test_unreadable_folder_is_skipped_and_logged(tmp_path, monkeypatch, caplog):
    good = _image(tmp_path / "ok" / "a.png")
    locked = _image(tmp_path / "locked" / "b.png").parent
    real_scandir = os.scandir

    def scandir(path="."):  # chmod cannot lock out root, so fail the listing directly
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert list_images(tmp_path) == [good]
    assert "skipping unreadable folder" in caplog.text and "locked" in caplog.text


def test_unlabelled_returns_samples_and_skipped(tmp_path):
    _image(tmp_path / "a.png", (1, 2, 3))
    (tmp_path / "b.jpg").write_text("oops")
    _image(tmp_path / "c.png", (4, 5, 6))
    data = UnlabelledImages(tmp_path)
    assert len(data) == 3 and data.paths[1].name == "b.jpg"
    img, index = data[0]
    assert index == 0 and img.mode == "RGB" and img.getpixel((0, 0)) == (1, 2, 3)
    bad = data[1]
    assert bad == Skipped(path=str(tmp_path / "b.jpg"), reason="not an image", index=1)
    assert pickle.loads(pickle.dumps(bad)) == bad
    sized = UnlabelledImages([tmp_path / "c.png"], transform=lambda im: im.size)
    assert sized[0] == ((4, 3), 0)


def test_unlabelled_images_decode_a_large_jpeg_at_the_side_asked_for(tmp_path, monkeypatch):
    photo_jpeg(tmp_path / "big.jpg", 1600, 1200)
    calls = record_decodes(monkeypatch, folders)
    img, _ = UnlabelledImages(tmp_path, min_side=250)[0]
    assert img.size == (400, 300) and calls[0].min_side == 250  # 1/4: 1/8 would leave 150 < 250 px
    whole, _ = UnlabelledImages(tmp_path)[0]
    assert whole.size == (1600, 1200) and calls[1].min_side is None


def test_labelled_from_folder(tmp_path):
    _image(tmp_path / "zebra" / "1.png")
    _image(tmp_path / "ant" / "nested" / "2.png")
    _image(tmp_path / "ant" / "3.jpg")
    _image(tmp_path / ".ipynb_checkpoints" / "4.png")
    (tmp_path / "zebra" / "5.png").write_bytes(b"")
    data = LabelledImages.from_folder(tmp_path, transform=lambda im: im.size)
    assert data.classes == ["ant", "zebra"]
    assert data.targets.dtype == torch.int64
    assert data.targets.tolist() == [0, 0, 1, 1]
    assert [p.name for p in data.paths] == ["3.jpg", "2.png", "1.png", "5.png"]
    assert data[0] == ((4, 3), 0)
    assert isinstance(data[3], Skipped) and data[3].reason == "empty file"
    with pytest.raises(DataError, match="does not exist"):
        LabelledImages.from_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class folders"):
        LabelledImages.from_folder(tmp_path / "ant" / "nested")


def test_labelled_from_csv(tmp_path):
    _image(tmp_path / "img" / "a.png")
    _image(tmp_path / "img" / "b.png")
    absolute = _image(tmp_path / "c.png")
    table = tmp_path / "labels.csv"
    table.write_text(f"path,label\nimg/a.png,dog\nimg/b.png,cat\n{absolute},dog\n")
    data = LabelledImages.from_csv(table)
    assert data.classes == ["cat", "dog"]
    assert data.targets.tolist() == [1, 0, 1]
    assert data.paths == [tmp_path / "img" / "a.png", tmp_path / "img" / "b.png", absolute]
    img, target = data[1]
    assert target == 0 and img.mode == "RGB"
    (tmp_path / "bad.csv").write_text("file,class\na.png,dog\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        LabelledImages.from_csv(tmp_path / "bad.csv")


def _targets() -> torch.Tensor:
    # classes of sizes 50, 20, 7, 2 and 1, interleaved
    sizes = {0: 50, 1: 20, 2: 7, 3: 2, 4: 1}
    labels = torch.cat([torch.full((n,), c) for c, n in sizes.items()])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]


def test_split_per_class_is_stratified_disjoint_and_deterministic():
    targets = _targets()
    train, held = split_per_class(targets, 0.2, seed=3)
    assert train.dtype == held.dtype == torch.int64
    assert torch.equal(train, train.sort().values) and torch.equal(held, held.sort().values)
    assert torch.equal(torch.cat([train, held]).sort().values, torch.arange(len(targets)))
    counts = torch.bincount(targets[held], minlength=5).tolist()
    assert counts == [10, 4, 1, 1, 0]  # round(n * 0.2), at least 1 when n > 1
    again = split_per_class(targets, 0.2, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], held)
    assert not torch.equal(split_per_class(targets, 0.2, seed=4)[1], held)
    with pytest.raises(ValueError):
        split_per_class(targets, 1.0)


def test_subset_per_class_balanced_and_deterministic():
    targets = _targets()
    by_fraction = subset_per_class(targets, fraction=0.1, seed=0)
    assert torch.bincount(targets[by_fraction], minlength=5).tolist() == [5, 2, 1, 1, 1]
    by_count = subset_per_class(targets, per_class=10, seed=0)
    assert torch.bincount(targets[by_count], minlength=5).tolist() == [10, 10, 7, 2, 1]
    assert torch.equal(by_count, by_count.sort().values)
    assert len(set(by_count.tolist())) == len(by_count)
    assert torch.equal(subset_per_class(targets, per_class=10, seed=0), by_count)
    assert not torch.equal(subset_per_class(targets, per_class=10, seed=1), by_count)
    with pytest.raises(ValueError):
        subset_per_class(targets)
    with pytest.raises(ValueError):
        subset_per_class(targets, fraction=0.1, per_class=3)
