"""COCO AP through pycocotools: detections in torchvision's output format become COCO results, and hand-made
detections score what the metric says (perfect 1, none 0, a box off by half its size in between)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.dense import make_shapes_coco

from openseer.data.coco import CocoDetection, read_coco
from openseer.eval.coco_ap import STATS, coco_ap, detections_to_coco


@pytest.fixture
def shapes(tmp_path: Path):  # noqa: ANN201 - a CocoSet
    return read_coco(make_shapes_coco(tmp_path / "shapes", images=4, size=48))


def _perfect(shapes, shift: float = 0.0) -> list[dict]:  # noqa: ANN001
    """Each ground-truth object detected once (boxes moved right by ``shift`` of their width), with its mask."""
    data, categories, results = CocoDetection(shapes, masks=True), [c["id"] for c in shapes.categories], []
    for i, img in enumerate(shapes.images):
        _, target = data[i]
        boxes = target["boxes"].clone()
        boxes[:, 0::2] += shift * (boxes[:, 2:3] - boxes[:, 0:1])
        output = {
            "boxes": boxes,
            "scores": torch.linspace(0.9, 0.5, len(boxes)),
            "labels": target["labels"],
            "masks": target["masks"][:, None].float(),
        }
        results += detections_to_coco(output, img.id, categories)
    return results


def test_detections_become_coco_results(shapes) -> None:  # noqa: ANN001
    output = {
        "boxes": torch.tensor([[2.0, 4.0, 12.0, 10.0]]),
        "scores": torch.tensor([0.75]),
        "labels": torch.tensor([2]),
        "masks": torch.zeros(1, 1, 48, 48).index_fill_(3, torch.arange(2, 12), 0.9),
    }
    (result,) = detections_to_coco(output, image_id=5, categories=[3, 7])
    assert result["image_id"] == 5 and result["category_id"] == 7 and result["score"] == pytest.approx(0.75)
    assert result["bbox"] == [2.0, 4.0, 10.0, 6.0]
    from pycocotools import mask

    assert result["segmentation"]["size"] == [48, 48] and mask.area(result["segmentation"]) == 10 * 48


def test_perfect_detections_score_one_and_none_score_zero(shapes) -> None:  # noqa: ANN001
    truth = shapes.coco_dict()
    for iou_type in ("bbox", "segm"):
        perfect = coco_ap(truth, _perfect(shapes), iou_type)
        assert list(perfect) == list(STATS)
        assert perfect["AP"] == pytest.approx(1.0) and perfect["AP50"] == pytest.approx(1.0)
        assert perfect["APl"] is None  # no object over 96² pixels in 48-px images: no figure, not a zero
        none = coco_ap(truth, [], iou_type)
        assert none["AP"] == 0.0 and none["AR100"] == 0.0


def test_boxes_off_by_a_third_of_their_width_miss_the_strict_thresholds(shapes) -> None:  # noqa: ANN001
    """Shifted by a third of its width, a box overlaps its object with IoU 0.5: counted at 0.5, not at 0.75."""
    shifted = coco_ap(shapes.coco_dict(), _perfect(shapes, shift=1 / 3 - 0.01), "bbox")
    assert shifted["AP50"] == pytest.approx(1.0) and shifted["AP75"] == 0.0
    assert 0.0 < shifted["AP"] < 0.2
