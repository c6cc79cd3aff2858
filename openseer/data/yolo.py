"""YOLO labels (one ``.txt`` per image) to a COCO instances file, the input of ``openseer detect``.

A YOLO label line is ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 x3 y3 ...`` (a YOLO-seg polygon), every
coordinate normalised to 0..1 by the image's width and height; the label file of ``images/a/b.jpg`` is
``labels/a/b.txt``. Boxes become COCO boxes; polygons become COCO polygons, their box the polygon's extent.
Class ids are kept as COCO category ids, named from the data set's YAML (``names:``) or a list of names.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from openseer.data.folders import DataError, list_images
from openseer.data.images import BadImageError, load_rgb
from openseer.fileio.atomic import atomic_write_text

log = logging.getLogger(__name__)

MissingLabels = Literal["background", "skip"]
_TOLERANCE = 0.01  # normalised coordinates this far outside 0..1 are clipped onto the edge; further, an error


def read_names(path: str | Path) -> dict[int, str]:
    """Class id -> name from a YOLO data YAML (``names:`` as a mapping or a list) or a text file (one name a
    line, ids from 0)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"class names file not found: {file}")
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            names = (yaml.safe_load(file.read_text()) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as err:
            raise DataError(f"{file}: not a YOLO data YAML with names: ({err})") from err
        if isinstance(names, list):
            names = dict(enumerate(names))
        if not isinstance(names, dict) or not all(isinstance(k, int) for k in names):
            raise DataError(f"{file}: 'names' must map class ids to names (or list them in id order)")
        return {int(k): str(v) for k, v in names.items()}
    return {i: line.strip() for i, line in enumerate(file.read_text().splitlines()) if line.strip()}


@dataclass
class YoloConversion:
    """What :func:`yolo_to_coco` wrote: counts, and the images it left out with the reason."""

    out: Path
    images: int = 0
    annotations: int = 0
    polygons: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _parse_line(line: str, where: str, names: dict[int, str] | None) -> tuple[int, list[float]]:
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        raise DataError(f"{where}: not 'class cx cy w h' or 'class x1 y1 x2 y2 ...': {line!r}") from None
    if len(values) != 4 and (len(values) < 6 or len(values) % 2):
        raise DataError(
            f"{where}: {len(values)} coordinates; a box has 4 (cx cy w h), a polygon 6 or more (x y pairs)"
        )
    if names is not None and cls not in names:
        raise DataError(f"{where}: class {cls} is not among the {len(names)} named classes")
    if any(v < -_TOLERANCE or v > 1 + _TOLERANCE for v in values):
        raise DataError(f"{where}: coordinates must be normalised to 0..1 by the image size: {line!r}")
    return cls, [min(max(v, 0.0), 1.0) for v in values]


def _annotation(cls: int, values: list[float], width: int, height: int, where: str) -> dict:
    if len(values) == 4:
        cx, cy, w, h = values[0] * width, values[1] * height, values[2] * width, values[3] * height
        x, y = max(cx - w / 2, 0.0), max(cy - h / 2, 0.0)
        box = [x, y, min(cx + w / 2, width) - x, min(cy + h / 2, height) - y]
        polygon = None
    else:
        polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
        xs, ys = polygon[0::2], polygon[1::2]
        box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if box[2] <= 0 or box[3] <= 0:
        raise DataError(f"{where}: the object has zero width or height")
    ann = {"category_id": cls, "bbox": [round(v, 2) for v in box], "iscrowd": 0}
    if polygon is not None:
        ann["segmentation"] = [[round(v, 2) for v in polygon]]
    return ann


def yolo_to_coco(
    images: str | Path,
    labels: str | Path,
    out: str | Path,
    names: dict[int, str] | None = None,
    missing: MissingLabels = "background",
) -> YoloConversion:
    """Write ``out`` (COCO instances JSON; ``file_name`` s relative to its folder) for the images under
    ``images`` and their YOLO label files under ``labels``.

    ``names``: class id -> name (:func:`read_names`); a class id outside it is an error; None: categories are the
    ids found, named by their number. ``missing``: an image without a label file is a 'background' image (no
    objects, the YOLO convention) or is left out ('skip', for sets that label only some of their images).
    Unreadable images are left out and listed in ``skipped``; a malformed label line is a DataError naming the
    file and line.
    """
    images, labels, out = Path(images).expanduser(), Path(labels).expanduser(), Path(out).expanduser()
    if not labels.is_dir():
        raise DataError(f"YOLO labels folder not found: {labels}")
    result = YoloConversion(out)
    coco: dict[str, list] = {"images": [], "annotations": [], "categories": []}
    seen: set[int] = set()
    for path in list_images(images):
        label = (labels / path.relative_to(images)).with_suffix(".txt")
        if not label.is_file() and missing == "skip":
            result.skipped.append((str(path), "no label file"))
            continue
        try:
            width, height = load_rgb(path).size  # EXIF orientation applied, as the loaders see the image
        except BadImageError as err:
            result.skipped.append((err.path, err.reason))
            continue
        image_id = len(coco["images"]) + 1
        coco["images"].append(
            {"id": image_id, "file_name": os.path.relpath(path, out.parent), "width": width, "height": height}
        )
        lines = label.read_text().splitlines() if label.is_file() else []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label}:{n}"
            cls, values = _parse_line(line, where, names)
            ann = _annotation(cls, values, width, height, where)
            ann.update(id=len(coco["annotations"]) + 1, image_id=image_id)
            coco["annotations"].append(ann)
            result.polygons += "segmentation" in ann
            seen.add(cls)
    if not coco["images"]:
        raise DataError(f"no usable images under {images} (every one was skipped)")
    named = names if names is not None else {i: str(i) for i in sorted(seen)}
    coco["categories"] = [{"id": i, "name": name} for i, name in sorted(named.items())]
    result.images, result.annotations = len(coco["images"]), len(coco["annotations"])
    if 0 < result.polygons < result.annotations:
        log.warning(
            "%s: %d of %d objects are polygons, the others boxes; detect trains masks only when all have one",
            labels,
            result.polygons,
            result.annotations,
        )
    atomic_write_text(out, json.dumps(coco))
    return result
