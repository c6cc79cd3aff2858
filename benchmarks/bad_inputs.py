"""Every kind of troublesome image file through the loader, the decoded-image cache and a short pretraining.

Writes the corpus of ``support.bad_corpus (tests/support/bad_corpus.py)`` (good JPEGs and PNGs, then a truncated JPEG, an empty file, a web
page named .jpg, a PNG header followed by junk, a 30000x30000 decompression bomb, a 1x1 image, CMYK, 16-bit,
palette + transparency, grey + alpha, EXIF-rotated, animated GIF and WebP, a symlink loop and a chmod-000 file)
into a temporary folder, then:

* lists the folder (the loop must not be followed) and decodes each file with ``load_rgb``;
* decodes the folder into uint8 tensors, as ``data.cache_size`` does;
* pretrains a tiny model for one epoch of the per-image loader (every file drawn once), as ``data.cache_size=null``
  does, and reads the run's ``skipped_images.json``.

Prints ``kind | file | outcome | reason`` for each entry (outcome as observed; a difference from the expected one
is flagged), then what each stage did. Last line, over the troublesome entries (the plain good images left out):
``bad_inputs_tried=<n> skipped=<n> converted=<n> used=<n> crashes=<n>``; a crash is an exception other than
a skipped file escaping a stage. Run as root, the chmod-000 file is readable and counts as used.

    python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (the sibling module: puts tests/support on sys.path)
from PIL import Image
from support.bad_corpus import LOOP_REASON, CorpusEntry, write_bad_corpus

from openseer.data.cache import decode_to_uint8
from openseer.data.folders import list_images
from openseer.data.images import BadImageError, load_rgb

GOOD_KINDS = ("good RGB JPEG", "good RGB PNG")


def _needs_conversion(path: Path) -> bool:
    """Whether the stored image is anything but one plain 8-bit RGB frame, upright and opaque."""
    with Image.open(path) as img:
        rotated = img.getexif().get(0x0112, 1) != 1
        return img.mode != "RGB" or getattr(img, "n_frames", 1) > 1 or rotated or "transparency" in img.info


def observe(entry: CorpusEntry, listed: set[Path]) -> tuple[str, str]:
    """(outcome, reason) the loader actually gives ``entry``."""
    if not entry.is_image_file:
        followed = any(entry.path in p.parents for p in listed)
        return ("used", "followed") if followed else ("skipped", LOOP_REASON)
    try:
        load_rgb(entry.path)
    except BadImageError as err:
        return "skipped", err.reason
    if _needs_conversion(entry.path):
        return "converted", entry.reason
    return "used", entry.reason


def _pretrain_one_epoch(folder: Path, out: Path, n_files: int) -> dict:
    from support import tiny_overrides

    from openseer.config import load_config
    from openseer.train.config import PretrainConfig
    from openseer.train.pretrain import pretrain

    overrides = tiny_overrides(
        folder,
        out,
        data__cache_size=None,
        data__holdout=0.1,
        optim__batch_size=4 if n_files % 4 == 0 else 5,
        run__threads=1,
    )
    cfg = load_config(PretrainConfig, [], overrides)
    result = pretrain(cfg)
    listed = json.loads((out / "skipped_images.json").read_text())
    return {
        "steps": result.steps,
        "images": result.images_seen,
        "skipped": {r["path"]: r["reason"] for r in listed},
    }


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # the skipped files are the subject of the table, not of the log
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPENSEER_CACHE"] = str(Path(tmp) / "cache")
        folder = Path(tmp) / "corpus"
        entries = write_bad_corpus(folder)
        crashes, stages = 0, []
        try:
            listed = set(list_images(folder))
        except Exception as err:  # noqa: BLE001 - counted, not raised
            crashes, listed = crashes + 1, set()
            stages.append(f"listing: crashed ({type(err).__name__}: {err})")

        rows, observed = [], {}
        for entry in entries:
            try:
                outcome, reason = observe(entry, listed)
            except Exception as err:  # noqa: BLE001
                crashes += 1
                outcome, reason = "crash", f"{type(err).__name__}: {err}"
            observed[entry.path] = (outcome, reason)
            flag = "" if outcome == entry.outcome else f" (expected {entry.outcome})"
            rows.append((entry.kind, entry.path.name, outcome + flag, reason))
        width = [max(len(r[i]) for r in [("kind", "file", "outcome", ""), *rows]) for i in range(3)]
        print(f"{'kind':<{width[0]}} | {'file':<{width[1]}} | {'outcome':<{width[2]}} | reason")
        for kind, name, outcome, reason in rows:
            print(f"{kind:<{width[0]}} | {name:<{width[1]}} | {outcome:<{width[2]}} | {reason}")

        loader_skips = {str(p): r for p, (o, r) in observed.items() if o == "skipped" and p in listed}
        files = sorted(listed)
        try:
            images, _, skipped = decode_to_uint8(files, size=16, num_threads=2)
            same = dict(skipped.entries) == loader_skips
            stages.append(
                f"decoded-image cache: {len(images)} images, {len(skipped)} skipped"
                + (" (the loader's files and reasons)" if same else " (NOT the loader's files and reasons)")
            )
        except Exception as err:  # noqa: BLE001
            crashes += 1
            stages.append(f"decoded-image cache: crashed ({type(err).__name__}: {err})")
        try:
            run = _pretrain_one_epoch(folder, Path(tmp) / "run", len(files))
            same = run["skipped"] == loader_skips
            stages.append(
                f"pretraining, per-image loader, 1 epoch: {run['steps']} steps, {run['images']} images, "
                f"{len(run['skipped'])} in skipped_images.json"
                + (" (the loader's files and reasons)" if same else " (NOT the loader's files and reasons)")
            )
        except Exception as err:  # noqa: BLE001
            crashes += 1
            stages.append(f"pretraining: crashed ({type(err).__name__}: {err})")

    print()
    for line in stages:
        print(line)
    troublesome = [observed[e.path][0] for e in entries if e.kind not in GOOD_KINDS]
    counts = {k: troublesome.count(k) for k in ("skipped", "converted", "used")}
    mismatches = sum(observed[e.path][0] != e.outcome for e in entries)
    if mismatches:
        print(f"{mismatches} outcome(s) differ from the expected ones")
    print(
        f"bad_inputs_tried={len(troublesome)} skipped={counts['skipped']} converted={counts['converted']} "
        f"used={counts['used']} crashes={crashes}"
    )
    return 1 if crashes or mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
