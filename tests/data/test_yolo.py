"""YOLO labels (boxes and YOLO-seg polygons) to COCO instances files that ``openseer detect`` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from openseer.cli import main as cli_main
from openseer.data.coco import read_coco
from openseer.data.folders import DataError
from openseer.data.yolo import read_names, yolo_to_coco


def _yolo(root: Path, labels: dict[str, str], size: tuple[int, int] = (40, 20)) -> tuple[Path, Path]:
    """images/NAME.png of ``size`` (width, height) for every name, and labels/NAME.txt where given."""
    (root / "images" / "sub").mkdir(parents=True)
    (root / "labels" / "sub").mkdir(parents=True)
    for name, text in labels.items():
        Image.new("RGB", size, (90, 90, 90)).save(root / "images" / f"{name}.png")
        if text is not None:
            (root / "labels" / f"{name}.txt").write_text(text)
    return root / "images", root / "labels"


def test_boxes_and_polygons_become_coco_boxes_and_polygons(tmp_path: Path) -> None:
    images, labels = _yolo(
        tmp_path,
        {"a": "0 0.5 0.5 0.5 0.5\n", "sub/b": "2 0.1 0.1 0.6 0.1 0.6 0.9 0.1 0.9\n\n", "c": None},
    )
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n  2: bird\n")
    out = tmp_path / "coco" / "train.json"
    done = yolo_to_coco(images, labels, out, read_names(tmp_path / "data.yaml"))
    assert (done.images, done.annotations, done.polygons) == (3, 2, 1)
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog", "bird"]
    box, poly = coco["annotations"]
    assert box["bbox"] == [10.0, 5.0, 20.0, 10.0] and box["category_id"] == 0 and "segmentation" not in box
    assert poly["bbox"] == [4.0, 2.0, 20.0, 16.0] and poly["segmentation"] == [[4, 2, 24, 2, 24, 18, 4, 18]]
    read = read_coco(out)  # file_names relative to the JSON's folder; the image without labels is background
    assert len(read) == 3 and [len(read.annotations[i.id]) for i in read.images] == [1, 0, 1]


def test_images_without_labels_can_be_left_out(tmp_path: Path) -> None:
    images, labels = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": None})
    done = yolo_to_coco(images, labels, tmp_path / "c.json", missing="skip")
    assert done.images == 1 and done.skipped == [(str(images / "b.png"), "no label file")]
    assert json.loads((tmp_path / "c.json").read_text())["categories"] == [{"id": 0, "name": "0"}]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", r"3 coordinates; a box has 4 \(cx cy w h\), a polygon 6 or more"),
        ("x 0.5 0.5 0.2 0.2", "not 'class cx cy w h'"),
        ("0 0.5 0.5 1.8 0.2", "normalised to 0..1"),
        ("0 0.5 0.5 0.0 0.2", "zero width or height"),
        ("4 0.5 0.5 0.2 0.2", "class 4 is not among the 2 named classes"),
    ],
)
def test_a_bad_label_line_names_its_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    images, labels = _yolo(tmp_path, {"a": f"0 0.5 0.5 0.1 0.1\n{line}\n"})
    with pytest.raises(DataError, match=message) as err:
        yolo_to_coco(images, labels, tmp_path / "c.json", {0: "a", 1: "b"})
    assert f"{labels / 'a.txt'}:2" in str(err.value)
    assert not (tmp_path / "c.json").exists()


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = _yolo(tmp_path, {"a": "1 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    out = tmp_path / "c.json"
    assert (
        cli_main(["yolo-to-coco", str(images), str(labels), str(out), f"classes={tmp_path / 'names.txt'}"])
        == 0
    )
    assert f"1 images, 1 objects (0 with polygons) -> {out}" in capsys.readouterr().out
    assert read_coco(out).categories == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    assert cli_main(["yolo-to-coco", str(images), str(tmp_path / "nowhere"), str(out)]) == 2
    assert "YOLO labels folder not found" in capsys.readouterr().err
