"""What every scoring command reads first: the labelled data split into train and test, by default the split the
weights' pretraining recorded (``RUN/holdout.json``), so that the test images are ones it never trained on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from openseer.data.folders import DataError
from openseer.data.labelled import HOLDOUT_FILE, EvalData, Holdout, load_data, train_test_data
from openseer.weights import Weights

log = logging.getLogger(__name__)


@dataclass
class SplitConfig:
    checkpoint: str = ""
    """Weights: a run folder, a ckpt-*.pt, a file written by import-weights or export, or a SEER/VISSL or timm
    checkpoint (converted on the fly)."""
    train: str | None = None
    """Labelled training set: builtin, an ImageFolder tree or a CSV of path,label; null: the data the weights
    were pretrained on (their run's holdout.json), else builtin."""
    test: str | None = None
    """Labelled test set; null: what pretraining held out of `train` (the run's holdout.json), builtin's test
    split, or `holdout` of each class of `train`."""
    holdout: float | None = None
    """Held-out fraction per class when `test` is not given and no pretraining split applies (null: 0.1); given,
    it draws a new split even of the pretraining data."""
    split_seed: int | None = None
    """Seed of that split (null: 0); given, it draws a new split even of the pretraining data."""


def pretraining_split(weights: Weights) -> Holdout | None:
    """The held-out split the weights' pretraining run recorded, None when there is none (imported weights, a
    run on tar shards)."""
    path = weights.run_dir / HOLDOUT_FILE
    return Holdout.read(path) if path.is_file() else None


def split_data(cfg: SplitConfig, weights: Weights) -> tuple[EvalData, EvalData]:
    """The labelled (train, test) sets of ``cfg``: pretraining's recorded split when ``train`` is the data the
    weights were pretrained on (and no other split is asked for), else :func:`train_test_data`'s."""
    record = pretraining_split(weights)
    train = cfg.train if cfg.train is not None else record.source if record is not None else "builtin"
    own = cfg.test is None and cfg.holdout is None and cfg.split_seed is None
    if own and record is not None and record.same_source(train):
        split = record.split()
        if split.test is not None:
            return split.train, split.test
        log.warning("pretraining held nothing out of %s: scoring on a new split of images it trained on", train)
    holdout = 0.1 if cfg.holdout is None else cfg.holdout
    return train_test_data(train, cfg.test, holdout, 0 if cfg.split_seed is None else cfg.split_seed)


def resolve_data(spec: str | None, weights: Weights, part: Literal["train", "test"] = "train") -> EvalData:
    """The images ``spec`` names (``part`` picks builtin's split), or with None the ``part`` of the data the
    weights were pretrained on: what pretraining trained on, or what it held out (else builtin's ``part``)."""
    record = pretraining_split(weights) if spec is None else None
    if record is None:
        return load_data(spec or "builtin", part)
    split = record.split()
    if part == "train":
        return split.train
    if split.test is None:
        raise DataError(f"pretraining held nothing out of {record.source}: take its training part, or name data")
    return split.test
