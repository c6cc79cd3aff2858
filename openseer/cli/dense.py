"""The dense-task commands: detect (fine-tune a detector on a COCO-format set, report its AP) and yolo-to-coco
(YOLO labels to the COCO file detect reads)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from openseer.cli.command import JSON, Command, Positional, Switch, print_json
from openseer.config import ConfigError


@dataclass
class YoloToCocoConfig:
    images: str = ""
    """Folder of the images (searched recursively)."""
    labels: str = ""
    """Folder of the YOLO label files: the labels of IMAGES/a/b.jpg are in LABELS/a/b.txt."""
    out: str = ""
    """COCO instances JSON to write; its file_names are relative to its folder."""
    classes: str | None = None
    """Class names: the data set's YOLO YAML (its names:) or a text file with one name a line; null: the class
    ids found, named by their number."""
    missing_labels: Literal["background", "skip"] = "background"
    """An image without a label file holds no object ('background', YOLO's convention) or is left out
    ('skip', for sets that label only some of their images)."""

    def validate(self) -> None:
        if not self.images or not self.labels or not self.out:
            raise ConfigError("yolo-to-coco needs images=FOLDER labels=FOLDER out=FILE.json")


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _detect(cfg, args: argparse.Namespace) -> int:  # noqa: ANN001 - a DetectConfig
    from tqdm.contrib.logging import logging_redirect_tqdm

    from openseer.eval.detect import run_detect

    with logging_redirect_tqdm():
        result = run_detect(cfg, resume=args.resume)
    if args.json:
        print_json(result)
        return 0
    print(
        f"{result['detector']} on {result['arch']} ({result['model']} trunk): {result['steps']} steps "
        f"(batch {result['batch_size']}, lr {result['lr']:.4g}) on {result['n_train']} images in "
        f"{result['train_seconds'] / 60:.1f} min"
    )
    for kind, name in (("bbox", "box"), ("segm", "mask")):
        if kind in result:
            f = result[kind]
            print(
                f"{result['n_test']} test images, {name} AP {_figure(f['AP'])}  AP50 {_figure(f['AP50'])}  "
                f"AP75 {_figure(f['AP75'])}  (small {_figure(f['APs'])}, medium {_figure(f['APm'])}, "
                f"large {_figure(f['APl'])})"
            )
    if result["skipped_images"] or result["skipped_annotations"]:
        print(
            f"skipped {len(result['skipped_images'])} unreadable images and "
            f"{len(result['skipped_annotations'])} invalid annotations (listed in the result file)"
        )
    print(f"detector: {result['detector_checkpoint']}\nresult: {result['result_file']}")
    return 0


def _yolo_to_coco(cfg: YoloToCocoConfig, args: argparse.Namespace) -> int:
    from openseer.data.yolo import read_names, yolo_to_coco

    names = read_names(cfg.classes) if cfg.classes else None
    done = yolo_to_coco(cfg.images, cfg.labels, cfg.out, names, cfg.missing_labels)
    print(
        f"{done.images} images, {done.annotations} objects ({done.polygons} with polygons) -> {done.out}"
        + (f"; left out {len(done.skipped)} images" if done.skipped else "")
    )
    for path, reason in done.skipped[:3]:
        print(f"  {path}: {reason}")
    if len(done.skipped) > 3:
        print(f"  ... and {len(done.skipped) - 3} more")
    return 0


COMMANDS = [
    Command(
        name="detect",
        help="fine-tune a Mask/Faster R-CNN on the trunk over a COCO-format set, report box and mask AP",
        description="Fine-tune torchvision's Mask R-CNN (Faster R-CNN when the data have boxes only) with the "
        "trunk of WEIGHTS and a feature pyramid as its backbone on a COCO-format set (instances.json and its "
        "images), then report COCO box and mask AP (pycocotools) on the test set. init=random trains the same "
        "detector from a random trunk, the baseline. Example: openseer detect runs/cpu train=data/instances.json "
        "test=data/val.json recipe.steps=2000",
        config="openseer.eval.detect:DetectConfig",
        run=_detect,
        positionals=(Positional("WEIGHTS", "checkpoint"),),
        switches=(JSON, Switch("--resume", "continue from the newest valid checkpoint in out_dir")),
    ),
    Command(
        name="yolo-to-coco",
        help="convert YOLO labels (boxes or YOLO-seg polygons) into a COCO instances file for detect",
        description="Write a COCO instances JSON for the images under IMAGES and their YOLO label files under "
        "LABELS (class cx cy w h boxes, or YOLO-seg polygons, normalised to 0..1). Example: openseer "
        "yolo-to-coco coco128/images/train2017 coco128/labels/train2017 train.json classes=coco128/data.yaml",
        config="openseer.cli.dense:YoloToCocoConfig",
        run=_yolo_to_coco,
        positionals=(
            Positional("IMAGES", "images"),
            Positional("LABELS", "labels"),
            Positional("OUT", "out"),
        ),
    ),
]
