"""What every scoring command reads first: the weights, and the labelled data split into train and test."""

from __future__ import annotations

from dataclasses import dataclass

from openseer.data.labelled import EvalData, train_test_data
from openseer.train.config import PretrainConfig


@dataclass
class SplitConfig:
    checkpoint: str = ""
    """Weights: a run folder, a ckpt-*.pt, a file written by import-weights or export, or a SEER/VISSL or timm
    checkpoint (converted on the fly)."""
    train: str = "builtin"
    """Labelled training set: builtin, an ImageFolder tree or a CSV of path,label."""
    test: str | None = None
    """Labelled test set; null: builtin's test split, or `holdout` of each class of `train`."""
    holdout: float | None = None
    """Held-out fraction per class when `test` is not given; null: the weights' data.holdout (else 0.1)."""
    split_seed: int | None = None
    """Seed of that split; null: the weights' run.seed, so a split of the pretraining folder is the one
    pretraining held out."""


def split_settings(cfg: PretrainConfig, holdout: float | None, seed: int | None) -> tuple[float, int]:
    """(holdout, seed) of the train/test split: by default those pretraining held out with (data.holdout,
    run.seed), so that a test set carved from the pretraining folder was never trained on."""
    if holdout is None:
        holdout = cfg.data.holdout if cfg.data.holdout > 0 else 0.1
    return holdout, cfg.run.seed if seed is None else seed


def split_data(cfg: SplitConfig, pretrain_cfg: PretrainConfig) -> tuple[EvalData, EvalData]:
    """The labelled (train, test) sets of ``cfg``, split as :func:`split_settings` says."""
    return train_test_data(cfg.train, cfg.test, *split_settings(pretrain_cfg, cfg.holdout, cfg.split_seed))
