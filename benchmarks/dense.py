"""Detection and instance segmentation with a pretrained trunk against the same detector from a random trunk.

For each data set, ``openseer detect`` fine-tunes torchvision's Mask R-CNN with the trunk of ``--weights`` (and a
feature pyramid) for ``--steps`` steps, then trains the same detector from a random trunk (``init=random``, every
stage and BatchNorm trained, as torchvision does without pretrained weights) for the same steps; both are scored
by COCO box and mask AP (pycocotools) on the same test images. The training and inference images per second of
each run are printed beside the figures.

    python benchmarks/dense.py --weights runs/cpu \\
        --pennfudan /work/data/PennFudan/data/PennFudanPed --coco128 /work/data/coco128_yolo
    python benchmarks/dense.py --weights runs/cpu --pennfudan ... --coco128 ... --smoke   # end to end in minutes
    python benchmarks/dense.py --weights runs/photos --pennfudan ... --steps 400 \\
        --min-size 320 --max-size 533 --fpn-channels 128 --rois 128 --mask-head 128,128   # a 2-core CPU's hour

The data (not shipped; see docs/dense.md for their terms):

* Penn-Fudan pedestrians: 170 photos, 423 people with boxes and instance masks
  (https://www.cis.upenn.edu/~jshi/ped_html/, mirrored at https://github.com/gmguarino/PennFudan). Its
  ``PedMasks/*_mask.png`` (pixel value k > 0: pedestrian k) are converted to COCO run-length masks here; 50 of the
  170 images, drawn with seed 0, are the test set (as in torchvision's detection tutorial).
* COCO128 (https://github.com/lightly-ai/coco128_yolo): the first 100 labelled images of COCO train2017 and
  val2017 with YOLO-seg polygons of the 80 thing classes (``instance_segmentation/``), converted by
  :func:`openseer.data.yolo.yolo_to_coco`; train2017 trains, val2017 tests.

What a GPU changes: on a CPU the defaults here are scaled down (512-px images, batch 4, 1000 steps) to fit a
CPU's hours, and ``--fpn-channels``, ``--rois`` and ``--mask-head`` narrow the detector's pyramid and heads
(torchvision's 256 channels, 512 sampled proposals and four 256-channel mask layers by default), which on a
2-core CPU take most of a step's time and the trunk's share little; on a GPU (``--device cuda``) the
reference settings (``--min-size 800 --max-size 1333``, batch 16, the default widths, more steps) become
affordable, and the images/s printed are the device's own, not comparable with a CPU's. The comparison itself
(pretrained trunk against random at equal steps) is the same.

``--smoke``: 8 training and 4 test images per set, 2 steps, 128-px images: checks the pipeline end to end, the
figures mean nothing. Last line: ``cpu="<model>" <set>_<init>_box_ap=... <set>_<init>_mask_ap=...
<set>_<init>_train_img_s=... <set>_<init>_test_img_s=...`` for set in pennfudan, coco128 and init in pretrained,
random.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from _common import machine  # the sibling module (its folder is on sys.path when run)
from PIL import Image

from openseer.config import from_dict
from openseer.data.coco import mask_utils
from openseer.data.yolo import read_names, yolo_to_coco
from openseer.distributed import resolve_device
from openseer.eval.detect import DetectConfig, run_detect
from openseer.fileio.atomic import atomic_write_text

PENNFUDAN_TEST = 50


def pennfudan_to_coco(root: Path, out: Path) -> Path:
    """``out`` (COCO instances JSON) for Penn-Fudan: one 'person' per instance id of each ``PedMasks`` PNG, its
    mask run-length encoded, its box the mask's extent."""
    images = sorted((root / "PNGImages").glob("*.png"))
    if not images:
        raise SystemExit(
            f"no Penn-Fudan images under {root / 'PNGImages'} (get the data: see this file's docstring)"
        )
    coco: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    for image_id, path in enumerate(images, start=1):
        ids = np.asarray(Image.open(root / "PedMasks" / f"{path.stem}_mask.png"))
        height, width = ids.shape
        coco["images"].append(
            {"id": image_id, "file_name": os.path.relpath(path, out.parent), "width": width, "height": height}
        )
        for k in np.unique(ids[ids > 0]):
            mask = np.asfortranarray((ids == k).astype(np.uint8))
            rle = mask_utils().encode(mask)
            x, y, w, h = (float(v) for v in mask_utils().toBbox(rle))
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                }
            )
    atomic_write_text(out, json.dumps(coco))
    return out


def first_images(src: Path, dst: Path, n: int) -> Path:
    """A copy of a COCO file with its first ``n`` images and their annotations (file_names kept valid)."""
    coco = json.loads(src.read_text())
    keep = coco["images"][:n]
    ids = {img["id"] for img in keep}
    for img in keep:
        img["file_name"] = os.path.relpath(src.parent / img["file_name"], dst.parent)
    coco["images"], coco["annotations"] = keep, [a for a in coco["annotations"] if a["image_id"] in ids]
    atomic_write_text(dst, json.dumps(coco))
    return dst


def prepare(args: argparse.Namespace, folder: Path) -> dict[str, tuple[Path, Path | None]]:
    """{set: (training JSON, test JSON or None for a held-out share)} of the sets given."""
    sets: dict[str, tuple[Path, Path | None]] = {}
    if args.pennfudan:
        sets["pennfudan"] = (pennfudan_to_coco(args.pennfudan, folder / "pennfudan" / "instances.json"), None)
    if args.coco128:
        seg = args.coco128 / "instance_segmentation"
        names = read_names(seg / "config.yaml")
        pair = []
        for split in ("train2017", "val2017"):
            out = folder / "coco128" / f"{split}.json"
            yolo_to_coco(args.coco128 / "images" / split, seg / "labels" / split, out, names, missing="skip")
            pair.append(out)
        sets["coco128"] = (pair[0], pair[1])
    if args.smoke:
        sets = {
            name: (
                first_images(train, train.with_name(f"smoke-{train.name}"), 12 if test is None else 8),
                None if test is None else first_images(test, test.with_name(f"smoke-{test.name}"), 4),
            )
            for name, (train, test) in sets.items()
        }
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", required=True, help="the pretrained trunk: any weights openseer.load reads"
    )
    parser.add_argument("--pennfudan", type=Path, help="the PennFudanPed folder (PNGImages, PedMasks)")
    parser.add_argument(
        "--coco128", type=Path, help="the coco128_yolo folder (images, instance_segmentation)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench-dense"), help="converted data, runs, results"
    )
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps of every run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--min-size", type=int, default=512, help="shorter image side (torchvision: 800)")
    parser.add_argument("--max-size", type=int, default=853, help="longer image side (torchvision: 1333)")
    parser.add_argument(
        "--fpn-channels", type=int, default=256, help="feature pyramid width (torchvision: 256)"
    )
    parser.add_argument(
        "--rois", type=int, default=512, help="proposals sampled per image for the heads (torchvision: 512)"
    )
    parser.add_argument(
        "--mask-head", default="256,256,256,256", help="mask head's channels per layer (torchvision: 4 x 256)"
    )
    parser.add_argument("--inits", default="pretrained,random", help="which trunks, in order")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--smoke", action="store_true", help="a few images and steps: the pipeline end to end"
    )
    args = parser.parse_args()
    if not (args.pennfudan or args.coco128):
        parser.error("give --pennfudan and/or --coco128 (where to get them: see the docstring of this file)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        args.steps, args.min_size, args.max_size = 2, 128, 128
    device = resolve_device(args.device)
    cpu, cores = machine(torch.device("cpu"))
    print(f"cpu={cpu} cores={cores} threads={torch.get_num_threads()} device={device}", flush=True)
    figures: dict[str, float | None] = {}
    for name, (train, test) in prepare(args, args.out / "data").items():
        for init in args.inits.split(","):
            values = {
                "checkpoint": args.weights,
                "train": str(train),
                "test": str(test) if test is not None else None,
                "test_fraction": PENNFUDAN_TEST / 170 if test is None else 0.2,
                "init": init,
                "model": {
                    "min_size": args.min_size,
                    "max_size": args.max_size,
                    "fpn_channels": args.fpn_channels,
                    "box_batch_size_per_image": args.rois,
                    "mask_head_channels": [int(c) for c in args.mask_head.split(",")],
                },
                "recipe": {"steps": args.steps, "batch_size": args.batch_size},
                "out_dir": str(args.out / name / init),
                "results": str(args.out / name / "eval"),
                "device": args.device,
                "workers": args.workers,
                "progress": not args.smoke,
            }
            result = run_detect(from_dict(DetectConfig, values))
            key = f"{name}_{init}"
            figures[f"{key}_box_ap"] = result["bbox_ap"]
            figures[f"{key}_mask_ap"] = result.get("segm_ap")
            figures[f"{key}_train_img_s"] = result["train_images_per_second"]
            figures[f"{key}_test_img_s"] = result["test_images_per_second"]
            print(
                f"{name:10s} {init:10s} {result['n_train']} train / {result['n_test']} test images, "
                f"{result['steps']} steps: box AP {result['bbox_ap']:.4f}  mask AP {result.get('segm_ap') or 0:.4f}  "
                f"train {result['train_images_per_second']:.2f} img/s  test {result['test_images_per_second']:.2f} img/s",
                flush=True,
            )

    def fmt(v: float | None) -> str:
        return "nan" if v is None else f"{v:.4f}"

    print(f'cpu="{cpu}" ' + " ".join(f"{k}={fmt(v)}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
