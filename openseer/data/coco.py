"""COCO-format instance annotations (``instances.json`` + images), read and checked before any work starts.

The format is COCO's (Lin et al. 2014, cocodataset.org "data format"): ``images`` (id, file_name, width,
height), ``annotations`` (id, image_id, category_id, bbox ``[x, y, width, height]`` in pixels, optional
``segmentation`` as polygons or run-length encoding, ``iscrowd``, ``area``) and ``categories`` (id, name).
:func:`read_coco` checks every entry and reports all problems at once, each naming the annotation, its image and
what is wrong; nothing is trained on a file that does not hold together. Masks are decoded with pycocotools,
whose AP the detection command reports.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from openseer.data.folders import DataError, Skipped
from openseer.data.images import BadImageError, load_rgb

log = logging.getLogger(__name__)

Invalid = Literal["error", "skip"]
EDGE_TOLERANCE = 1.0
"""Pixels a box or polygon may reach past the image edge (rounding in exported annotations); beyond, an error."""
_SHOWN = 10  # problems listed in one error message


def mask_utils() -> Any:
    """``pycocotools.mask``, or a DataError saying how to install it."""
    try:
        from pycocotools import mask
    except ImportError as err:
        raise DataError("COCO masks and AP need pycocotools: pip install 'openseer[dense]'") from err
    return mask


@dataclass(frozen=True)
class CocoImage:
    id: int
    path: Path
    width: int
    height: int


@dataclass
class CocoSet:
    """A checked COCO instances file: its images (files known to exist), annotations per image and categories.

    ``annotations[image_id]``: the image's annotations as in the file, with ``area`` and ``iscrowd`` filled in
    where the file left them out; ``categories``: sorted by id.
    """

    source: str
    images: list[CocoImage]
    annotations: dict[int, list[dict]]
    categories: list[dict]
    skipped: list[str] = field(default_factory=list)
    """Annotations dropped with ``invalid='skip'``, each with its reason."""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> dict[int, int]:
        """Category id -> contiguous label 1..K (0 is the detectors' background)."""
        return {c["id"]: i + 1 for i, c in enumerate(self.categories)}

    def instances(self) -> list[dict]:
        """Every annotation of these images that is not a crowd region (what a detector is trained on)."""
        return [a for img in self.images for a in self.annotations[img.id] if not a["iscrowd"]]

    def with_masks(self) -> bool:
        """Whether the instances carry masks: True when every one has a segmentation, False when none has;
        a DataError when only some do (a mask AP over part of the objects would mean nothing)."""
        instances = self.instances()
        without = [a for a in instances if not a.get("segmentation")]
        if without and len(without) < len(instances):
            shown = ", ".join(str(a["id"]) for a in without[:_SHOWN])
            raise DataError(
                f"{self.source}: {len(without)} of {len(instances)} annotations have no segmentation (ids "
                f"{shown}{', ...' if len(without) > _SHOWN else ''}): give every instance a mask, or train boxes "
                "only (model.masks=false)"
            )
        return bool(instances) and not without

    def subset(self, indices: Sequence[int], name: str | None = None) -> CocoSet:
        images = [self.images[i] for i in indices]
        return replace(
            self,
            source=name or self.source,
            images=images,
            annotations={i.id: self.annotations[i.id] for i in images},
        )

    def split(self, fraction: float, seed: int) -> tuple[CocoSet, CocoSet]:
        """(train, test): ``fraction`` of the images, drawn with ``seed``, held out (at least one each)."""
        if len(self) < 2:
            raise DataError(f"{self.source}: {len(self)} image(s), too few to hold out a test split")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = min(len(self) - 1, max(1, round(fraction * len(self))))
        test, train = sorted(order[:n_test]), sorted(order[n_test:])
        return self.subset(train, f"{self.source} (train split)"), self.subset(
            test, f"{self.source} (test split)"
        )

    def coco_dict(self) -> dict:
        """The ground truth as pycocotools reads it (images, annotations, categories of these images)."""
        return {
            "images": [
                {"id": i.id, "file_name": i.path.name, "width": i.width, "height": i.height}
                for i in self.images
            ],
            "annotations": [a for img in self.images for a in self.annotations[img.id]],
            "categories": self.categories,
        }


def resolve_source(source: str | Path) -> Path:
    """A JSON file as given, or ``instances.json`` in a folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "instances.json"
    if not path.is_file():
        raise DataError(f"COCO annotations not found: {path} (give instances.json or the folder holding it)")
    return path


def read_coco(source: str | Path, images: str | Path | None = None, invalid: Invalid = "error") -> CocoSet:
    """Read and check a COCO instances file; ``images``: the folder the ``file_name`` s are relative to (default:
    the JSON's folder).

    Every problem is a :class:`DataError` listing them all: a file that is not JSON or misses a section, image
    files that do not exist, duplicate ids, annotations of unknown images or categories, boxes of zero area or
    outside their image, polygons outside their image, run-length masks whose size is not their image's. With
    ``invalid='skip'`` the faulty annotations are dropped instead (logged and listed in ``skipped``); the file's
    structure, its images and its categories must still hold.
    """
    path = resolve_source(source)
    root = Path(images).expanduser() if images is not None else path.parent
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not a COCO JSON file (not text: {err})") from err
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO file is a JSON object with images, annotations and categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path}: no list of {', '.join(missing)} (a COCO instances file has all three)")
    categories = _categories(data["categories"], path)
    image_list = _images(data["images"], root, path)
    by_id = {img.id: img for img in image_list}
    annotations: dict[int, list[dict]] = {img.id: [] for img in image_list}
    problems: list[str] = []
    seen: set[int] = set()
    for n, raw in enumerate(data["annotations"]):
        ann, why = _annotation(raw, n, by_id, {c["id"] for c in categories}, seen)
        if why:
            problems.append(why)
        elif ann is not None:
            annotations[ann["image_id"]].append(ann)
    if problems and invalid == "error":
        raise DataError(
            _listing(path, problems, "invalid annotations", "invalid_annotations=skip drops them")
        )
    if problems:
        log.warning("%s: dropped %d invalid annotations, e.g. %s", path, len(problems), problems[0])
    _fill_areas(annotations, by_id)
    return CocoSet(str(path), image_list, annotations, categories, problems)


def _listing(path: Path, problems: list[str], what: str, hint: str) -> str:
    shown = "\n  ".join(problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"{path}: {len(problems)} {what} ({hint}):\n  {shown}{more}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _categories(raw: list, path: Path) -> list[dict]:
    problems, ids = [], set()
    for n, cat in enumerate(raw):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            problems.append(f"categories[{n}]: needs an integer id, got {cat!r}")
        elif cat["id"] in ids:
            problems.append(f"categories[{n}]: id {cat['id']} appears twice")
        else:
            ids.add(cat["id"])
    if problems:
        raise DataError(_listing(path, problems, "invalid categories", "each needs a unique integer id"))
    if not raw:
        raise DataError(f"{path}: no categories")
    return sorted(({**c, "name": str(c.get("name", c["id"]))} for c in raw), key=lambda c: c["id"])


def _images(raw: list, root: Path, path: Path) -> list[CocoImage]:
    problems, absent, ids, out = [], [], set(), []
    for n, img in enumerate(raw):
        if not isinstance(img, dict):
            problems.append(f"images[{n}]: not an object")
            continue
        fields = (img.get("id"), img.get("file_name"), img.get("width"), img.get("height"))
        if not (
            _is_int(fields[0]) and isinstance(fields[1], str) and _is_int(fields[2]) and _is_int(fields[3])
        ):
            problems.append(f"images[{n}]: needs integer id, width, height and a file_name, got {img!r}")
        elif fields[2] < 1 or fields[3] < 1:
            problems.append(
                f"images[{n}] ({fields[1]}): width and height must be positive, got {fields[2]}x{fields[3]}"
            )
        elif fields[0] in ids:
            problems.append(f"images[{n}]: id {fields[0]} appears twice")
        else:
            ids.add(fields[0])
            file = root / fields[1]
            if not file.is_file():
                absent.append(fields[1])
            out.append(CocoImage(fields[0], file, fields[2], fields[3]))
    if problems:
        raise DataError(
            _listing(path, problems, "invalid image entries", "each needs id, file_name, width, height")
        )
    if absent:
        raise DataError(
            _listing(
                path,
                absent,
                f"of {len(raw)} images missing under {root}",
                "images=FOLDER says where they are",
            )
        )
    if not out:
        raise DataError(f"{path}: no images")
    return out


def _annotation(
    raw: Any, n: int, images: dict[int, CocoImage], categories: set[int], seen: set[int]
) -> tuple[dict | None, str]:
    """(the annotation with iscrowd filled in, '') or (None, what is wrong with it)."""
    if not isinstance(raw, dict):
        return None, f"annotations[{n}]: not an object"
    name = f"annotation {raw['id']}" if _is_int(raw.get("id")) else f"annotations[{n}]"
    if not _is_int(raw.get("id")):
        return None, f"{name}: needs an integer id"
    if raw["id"] in seen:
        return None, f"{name}: id appears twice"
    seen.add(raw["id"])
    img = images.get(raw.get("image_id"))  # type: ignore[arg-type]
    if img is None:
        return None, f"{name}: image_id {raw.get('image_id')!r} is not in the file's images"
    where = f"{name} (image {img.id}, {img.path.name}, {img.width}x{img.height})"
    if raw.get("category_id") not in categories:
        return (
            None,
            f"{where}: category id {raw.get('category_id')!r} is not in the file's categories {sorted(categories)}",
        )
    box = raw.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        return None, f"{where}: bbox must be [x, y, width, height] in pixels, got {box!r}"
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return None, f"{where}: box {box} has zero area (width and height must be positive)"
    t = EDGE_TOLERANCE
    inside = min(x + w, img.width) - max(x, 0) > 0 and min(y + h, img.height) - max(y, 0) > 0
    if not inside or x < -t or y < -t or x + w > img.width + t or y + h > img.height + t:
        return None, f"{where}: box {box} (x, y, width, height) reaches outside the image"
    why = _segmentation_problem(raw.get("segmentation"), img)
    if why:
        return None, f"{where}: {why}"
    crowd = raw.get("iscrowd", 0)
    if crowd not in (0, 1):
        return None, f"{where}: iscrowd must be 0 or 1, got {crowd!r}"
    return {**raw, "iscrowd": int(crowd)}, ""


def _segmentation_problem(seg: Any, img: CocoImage) -> str:
    if seg is None or seg == []:
        return ""
    if isinstance(seg, dict):  # run-length encoding
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            return f"a run-length mask needs size [height, width], got {size!r}"
        if size != [img.height, img.width]:
            return (
                f"mask of size {size[0]}x{size[1]} (height x width) on an image of {img.height}x{img.width}: "
                "masks must have their image's size"
            )
        if not isinstance(counts, str | list):
            return f"a run-length mask needs counts (a string or a list), got {type(counts).__name__}"
        return ""
    if not isinstance(seg, list) or not all(isinstance(p, list) for p in seg):
        return "segmentation must be a list of polygons or a run-length mask {size, counts}"
    t = EDGE_TOLERANCE
    for poly in seg:
        if len(poly) < 6 or len(poly) % 2 or not all(_is_number(v) for v in poly):
            return f"a polygon must be [x1, y1, x2, y2, x3, y3, ...] (3 points or more), got {poly[:8]!r}"
        xs, ys = poly[0::2], poly[1::2]
        if min(xs) < -t or min(ys) < -t or max(xs) > img.width + t or max(ys) > img.height + t:
            return "a polygon reaches outside the image"
    return ""


def _rle(seg: Any, height: int, width: int) -> Any:
    """One run-length encoding of a segmentation (polygons merged, uncompressed counts compressed)."""
    masks = mask_utils()
    if isinstance(seg, list):
        return masks.merge(masks.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return masks.frPyObjects(seg, height, width)
    return seg


def _fill_areas(annotations: dict[int, list[dict]], images: dict[int, CocoImage]) -> None:
    """COCO's AP sorts objects by ``area`` (small, medium, large): the mask's where a file left it out, else
    the box's."""
    for image_id, anns in annotations.items():
        img = images[image_id]
        for ann in anns:
            if _is_number(ann.get("area")):
                continue
            if ann.get("segmentation"):
                ann["area"] = float(mask_utils().area(_rle(ann["segmentation"], img.height, img.width)))
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])


def decode_masks(anns: list[dict], height: int, width: int) -> np.ndarray:
    """(N, height, width) uint8 instance masks of annotations with segmentations."""
    if not anns:
        return np.zeros((0, height, width), dtype=np.uint8)
    with warnings.catch_warnings():  # pycocotools' decoder predates NumPy 2's __array__(copy=...): harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = [mask_utils().decode(_rle(a["segmentation"], height, width)) for a in anns]
    return np.stack(decoded).astype(np.uint8)


class CocoDetection(Dataset):
    """``(image uint8 (3, H, W), target)`` per image, target as torchvision's detectors take it: ``boxes``
    (N, 4) float x1 y1 x2 y2 in pixels, ``labels`` (N,) int64 in 1..K, ``masks`` (N, H, W) uint8 with
    ``masks=True``, ``image_id``. Crowd regions are left out (they only mark areas the AP ignores).

    An unreadable image file yields a :class:`~openseer.data.folders.Skipped`; an image whose size differs from
    the file's width and height is a DataError, since its annotations would not fit it.
    """

    def __init__(self, coco: CocoSet, masks: bool) -> None:
        self.coco, self.masks, self.labels = coco, masks, coco.labels

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]] | Skipped:
        img = self.coco.images[index]
        try:
            pil = load_rgb(img.path)
        except BadImageError as err:
            return Skipped(err.path, err.reason, index)
        if pil.size != (img.width, img.height):
            raise DataError(
                f"{img.path} is {pil.size[0]}x{pil.size[1]} pixels but {self.coco.source} says {img.width}x"
                f"{img.height} (width x height; EXIF orientation is applied when decoding)"
            )
        image = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        anns = [a for a in self.coco.annotations[img.id] if not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img.width)  # within EDGE_TOLERANCE of the edge: onto it
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img.height)
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.tensor([self.labels[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": img.id,
        }
        if self.masks:
            target["masks"] = torch.from_numpy(decode_masks(anns, img.height, img.width))
        return image, target
