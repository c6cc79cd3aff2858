"""COCO instances files: read, checked (every kind of bad input a clear error naming what is wrong), split, and
served to torchvision's detectors with their boxes, labels and masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from support.dense import make_shapes_coco

from openseer.data.coco import CocoDetection, read_coco
from openseer.data.folders import DataError, Skipped


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return make_shapes_coco(tmp_path / "shapes", images=4, size=32)


def _edit(path: Path, change: Callable[[dict], None]) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_a_valid_file_reads_with_every_image_and_annotation(shapes: Path) -> None:
    raw = json.loads(shapes.read_text())
    coco = read_coco(shapes.parent)  # a folder: its instances.json
    assert len(coco) == 4 and [c["id"] for c in coco.categories] == [3, 7]
    assert coco.labels == {3: 1, 7: 2}
    assert len(coco.instances()) == len(raw["annotations"]) and coco.with_masks()
    assert all(a["area"] > 0 and a["iscrowd"] == 0 for a in coco.instances())  # filled in for the AP
    assert coco.coco_dict()["annotations"] == coco.instances()


def test_items_carry_boxes_labels_and_decoded_masks(shapes: Path) -> None:
    coco = read_coco(shapes)
    item = CocoDetection(coco, masks=True)[0]
    assert not isinstance(item, Skipped)
    image, target = item
    anns = coco.annotations[coco.images[0].id]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert target["boxes"].shape == (len(anns), 4) and target["masks"].shape == (len(anns), 32, 32)
    x, y, w, h = anns[0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
    assert target["labels"].tolist() == [coco.labels[a["category_id"]] for a in anns]
    for mask, ann in zip(target["masks"], anns, strict=True):  # polygons and run-length masks both decode
        ys, xs = np.nonzero(mask.numpy())
        assert abs(int(mask.sum()) - ann["area"]) <= 0.1 * ann["area"]
        assert xs.min() >= ann["bbox"][0] - 1 and xs.max() <= ann["bbox"][0] + ann["bbox"][2]


def test_boxes_only_and_masks_on_some_instances(shapes: Path, tmp_path: Path) -> None:
    boxes = read_coco(make_shapes_coco(tmp_path / "boxes", images=2, size=32, masks=False))
    assert not boxes.with_masks()
    assert "masks" not in CocoDetection(boxes, masks=False)[0][1]  # type: ignore[index]
    _edit(shapes, lambda d: d["annotations"][0].pop("segmentation"))
    with pytest.raises(DataError, match=r"1 of \d+ annotations have no segmentation .*model.masks=false"):
        read_coco(shapes).with_masks()


def test_split_holds_out_a_fraction_of_the_images(shapes: Path) -> None:
    train, test = read_coco(shapes).split(0.25, seed=0)
    assert (len(train), len(test)) == (3, 1)
    assert not {i.id for i in train.images} & {i.id for i in test.images}
    assert set(test.annotations) == {test.images[0].id}
    assert [i.id for i in read_coco(shapes).split(0.25, seed=0)[1].images] == [test.images[0].id]


def _outside(d: dict) -> None:
    d["annotations"][0]["bbox"] = [20, 20, 30, 5]


def _zero_area(d: dict) -> None:
    d["annotations"][0]["bbox"][3] = 0


def _unknown_category(d: dict) -> None:
    d["annotations"][0]["category_id"] = 5


def _unknown_image(d: dict) -> None:
    d["annotations"][0]["image_id"] = 99


def _mask_size(d: dict) -> None:
    ann = next(a for a in d["annotations"] if isinstance(a["segmentation"], dict))
    ann["segmentation"]["size"] = [16, 32]


def _polygon_outside(d: dict) -> None:
    ann = next(a for a in d["annotations"] if isinstance(a["segmentation"], list))
    ann["segmentation"][0][0] = 50


def _duplicate_id(d: dict) -> None:
    d["annotations"][1]["id"] = d["annotations"][0]["id"]


BAD_ANNOTATIONS = {
    "box outside the image": (
        _outside,
        r"box \[20, 20, 30, 5\] \(x, y, width, height\) reaches outside the image",
    ),
    "box of zero area": (_zero_area, r"has zero area"),
    "category id not in the file": (
        _unknown_category,
        r"category id 5 is not in the file's categories \[3, 7\]",
    ),
    "image id not in the file": (_unknown_image, r"image_id 99 is not in the file's images"),
    "mask of the wrong size": (_mask_size, r"mask of size 16x32 \(height x width\) on an image of 32x32"),
    "polygon outside the image": (_polygon_outside, r"a polygon reaches outside the image"),
    "duplicate annotation id": (_duplicate_id, r"id appears twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_each_bad_annotation_is_a_clear_error_or_skipped_on_request(shapes: Path, case: str) -> None:
    change, message = BAD_ANNOTATIONS[case]
    n = len(json.loads(shapes.read_text())["annotations"])
    _edit(shapes, change)
    with pytest.raises(DataError, match=message) as err:
        read_coco(shapes)
    assert "1 invalid annotations (invalid_annotations=skip drops them)" in str(err.value)
    assert "annotation" in str(err.value) and str(shapes) in str(err.value)
    kept = read_coco(shapes, invalid="skip")
    assert len(kept.skipped) == 1 and len(kept.instances()) == n - 1


def test_every_problem_is_listed_at_once(shapes: Path) -> None:
    _edit(
        shapes,
        lambda d: (_outside(d), _unknown_category(d), _zero_area({"annotations": d["annotations"][1:]})),
    )
    with pytest.raises(DataError, match="2 invalid annotations") as err:
        read_coco(shapes)
    assert "category id 5" in str(err.value) and "zero area" in str(err.value)


def test_a_file_that_does_not_parse(tmp_path: Path, shapes: Path) -> None:
    shapes.write_text(shapes.read_text()[:-20])
    with pytest.raises(DataError, match=r"is not valid JSON: .* at line 1, column \d+"):
        read_coco(shapes)
    shapes.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="no list of categories"):
        read_coco(shapes)
    with pytest.raises(DataError, match="COCO annotations not found: .*instances.json"):
        read_coco(tmp_path / "nowhere")


def test_images_named_but_missing(shapes: Path) -> None:
    (shapes.parent / "img1.png").unlink()
    (shapes.parent / "img3.png").unlink()
    with pytest.raises(DataError, match=r"2 of 4 images missing under .*shapes .*\n  img1.png\n  img3.png"):
        read_coco(shapes)
    moved = shapes.parent.parent / "elsewhere"
    moved.mkdir()
    for i in range(4):
        if (shapes.parent / f"img{i}.png").exists():
            (shapes.parent / f"img{i}.png").rename(moved / f"img{i}.png")
    with pytest.raises(DataError, match="images=FOLDER says where they are"):
        read_coco(shapes)


def test_an_image_whose_size_is_not_the_files(shapes: Path) -> None:
    _edit(shapes, lambda d: d["images"][0].update(width=40))
    coco = read_coco(shapes, invalid="skip")  # boxes are checked against the declared 40x32
    with pytest.raises(DataError, match=r"img0.png is 32x32 pixels but .* says 40x32"):
        CocoDetection(coco, masks=False)[0]


def test_an_unreadable_image_is_skipped_with_its_reason(shapes: Path) -> None:
    (shapes.parent / "img2.png").write_bytes(b"not a png")
    item = CocoDetection(read_coco(shapes), masks=True)[2]
    assert isinstance(item, Skipped) and item.path.endswith("img2.png") and item.reason
