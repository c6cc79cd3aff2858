"""Data and weights for the dense-task tests: a tiny COCO-format set of shapes on noisy backgrounds (boxes,
polygon masks and run-length masks), and a weights file of a trunk at random initialisation (no pretraining)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from openseer.train.config import PretrainConfig

CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]  # ids with gaps, as COCO's
# keeps the detector small and quick in tests: torchvision's heads at a fraction of their width, tiny images
FAST_DETECT = [
    "model.min_size=64",
    "model.max_size=64",
    "model.fpn_channels=16",
    "model.box_head_size=32",
    "model.mask_head_channels=[16]",
    "model.box_batch_size_per_image=32",
    "recipe.batch_size=2",
    "workers=0",
    "progress=false",
]


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def make_shapes_coco(root: Path, images: int = 6, size: int = 64, seed: int = 0, masks: bool = True) -> Path:
    """``root/instances.json`` and ``root/img{i}.png``: 1-3 shapes per image on a noisy background; squares
    carry polygon masks, discs run-length masks (``masks=False``: boxes only). Returns the JSON's path."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    coco: dict = {"images": [], "annotations": [], "categories": CATEGORIES}
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(images):
        pixels = rng.integers(60, 120, (size, size, 3)).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            side = int(rng.integers(size // 5, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
            square = bool(rng.integers(0, 2))
            if square:
                mask = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
                seg: object = [[x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]]
            else:
                r = side / 2
                mask = (xx + 0.5 - x0 - r) ** 2 + (yy + 0.5 - y0 - r) ** 2 <= r**2
                seg = _rle(mask)
            pixels[mask] = (230, 40, 40) if square else (40, 40, 230)
            ys, xs = np.nonzero(mask)
            ann = {
                "id": len(coco["annotations"]) + 1,
                "image_id": i + 1,
                "category_id": 3 if square else 7,
                "bbox": [
                    int(xs.min()),
                    int(ys.min()),
                    int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1),
                ],
                "iscrowd": 0,
            }
            if masks:
                ann["segmentation"] = seg
            coco["annotations"].append(ann)
        Image.fromarray(pixels).save(root / f"img{i}.png")
        coco["images"].append({"id": i + 1, "file_name": f"img{i}.png", "width": size, "height": size})
    (root / "instances.json").write_text(json.dumps(coco))
    return root / "instances.json"


def random_weights_file(path: Path, config: PretrainConfig | None = None, seed: int = 0) -> Path:
    """A weights file (what ``openseer export format=safetensors`` writes) of the trunk of ``config`` (default: a
    RegNetY-200MF with the small stem, 224-px inputs) at random initialisation drawn with ``seed``, its BatchNorm
    statistics randomised so that layouts and stages tell apart."""
    from openseer.config import to_dict
    from openseer.models import build_backbone
    from openseer.weights import Weights, save_weights
    from openseer.weights.core import imported_model
    from openseer.weights.description import IMPORTED_PREPROCESS
    from support import randomize_batchnorm

    if config is None:
        m, preprocess, recipe = imported_model("regnety_200mf", "small", None), IMPORTED_PREPROCESS, None
    else:
        m, preprocess, recipe = config.model.network(), config.preprocess(), to_dict(config)
    torch.manual_seed(seed)
    backbone = randomize_batchnorm(build_backbone(m.arch, m.stem, output_stride=m.output_stride), seed)
    (file, _) = save_weights(
        Weights(m, preprocess, backbone.state_dict(), source="random", recipe=recipe), path
    )
    return file
