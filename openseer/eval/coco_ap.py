"""COCO average precision of detections, computed by pycocotools (the reference implementation of the COCO
detection metric, Lin et al. 2014), for boxes and for instance masks.

AP is the mean over IoU thresholds 0.50:0.05:0.95 and the categories; AP50 and AP75 at one threshold; APs, APm,
APl for objects under 32², between 32² and 96², and over 96² pixels of area; AR1, AR10, AR100 the recall with at
most that many detections per image. A figure pycocotools cannot compute (no object of that size in the test
set) is None.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any, Literal

import numpy as np
import torch

from openseer.data.coco import mask_utils

log = logging.getLogger(__name__)

IouType = Literal["bbox", "segm"]
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of the twelve figures of pycocotools' ``COCOeval.stats``, in its order."""


def detections_to_coco(
    output: dict[str, torch.Tensor], image_id: int, categories: list[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One image's detections (a torchvision detector's output: ``boxes`` (N, 4) x1 y1 x2 y2, ``scores`` (N,),
    ``labels`` (N,) in 1..K, optionally ``masks`` (N, 1, H, W) probabilities) as COCO results: box
    ``[x, y, width, height]`` and, with masks, the mask above ``mask_threshold`` run-length encoded.

    ``categories[label - 1]`` is the category id of label ``label``."""
    boxes = output["boxes"].detach().float().cpu()
    boxes[:, 2:] -= boxes[:, :2]
    scores, labels = output["scores"].tolist(), output["labels"].tolist()
    results = [
        {"image_id": image_id, "category_id": categories[label - 1], "bbox": box, "score": score}
        for box, score, label in zip(boxes.tolist(), scores, labels, strict=True)
    ]
    if "masks" in output:
        binary = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        for result, mask in zip(results, binary, strict=True):
            rle = mask_utils().encode(np.asfortranarray(mask))
            result["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return results


def coco_ap(
    ground_truth: dict, detections: list[dict[str, Any]], iou_type: IouType
) -> dict[str, float | None]:
    """{name: value} of :data:`STATS` for ``detections`` (COCO results) against ``ground_truth`` (a COCO
    instances dict: images, annotations with area and iscrowd, categories), by pycocotools' ``COCOeval``.

    No detection at all scores 0 wherever the test set has objects."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        from openseer.data.folders import DataError

        raise DataError("COCO AP needs pycocotools: pip install 'openseer[dense]'") from err
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools reports progress with print()
        gt = COCO()
        gt.dataset = copy.deepcopy(ground_truth)
        gt.createIndex()
        if detections:
            dt = gt.loadRes(copy.deepcopy(detections))
        else:  # loadRes refuses an empty list
            dt = COCO()
            dt.dataset = {
                "images": gt.dataset["images"],
                "categories": gt.dataset["categories"],
                "annotations": [],
            }
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("pycocotools %s:\n%s", iou_type, printed.getvalue())
    return {name: (float(v) if v >= 0 else None) for name, v in zip(STATS, evaluator.stats, strict=True)}
