"""kNN top-1/top-5 of the backbone on the held-out labelled images of a run: scored at random initialisation
and at the end of pretraining, the same way both times (BatchNorm statistics re-estimated on un-augmented
training images, then weighted cosine kNN with the labelled training part as the bank)."""

from __future__ import annotations

import copy

import torch
from torch.utils.data import DataLoader

from openseer.data.folders import UnlabelledImages
from openseer.eval.features import (
    collate_skipping,
    eval_transform,
    extract_features,
    normalize_uint8,
    recalibrate_batchnorm,
)
from openseer.eval.knn import knn_classifier
from openseer.train.config import PretrainConfig
from openseer.train.data import LabelledSet, PretrainData


def _calibration_batches(split: LabelledSet, cfg: PretrainConfig, device: torch.device, n: int = 4096):
    """Un-augmented images for BatchNorm re-estimation: a seeded random sample (the sets are sorted by class)."""
    size, mean, std = cfg.crops[0].size, cfg.augment.mean, cfg.augment.std
    pick = torch.randperm(len(split.targets), generator=torch.Generator().manual_seed(0))[:n]
    if split.images is not None:
        for start in range(0, len(pick), 256):
            yield normalize_uint8(
                split.images[pick[start : start + 256]].to(device), size, mean, std, cfg.model.channels_last
            )
        return
    paths = list(split.paths or [])
    dataset = UnlabelledImages([paths[i] for i in pick.tolist()], transform=eval_transform(size, mean, std))
    for x, _ in DataLoader(
        dataset, batch_size=256, num_workers=cfg.data.workers, collate_fn=collate_skipping
    ):
        if x is not None:
            yield x.to(device)


def knn_eval(backbone: torch.nn.Module, data: PretrainData, cfg: PretrainConfig, device: torch.device):
    """(top1, top5) of weighted kNN: bank = labelled training images, queries = held-out images."""
    size = cfg.crops[0].size
    if cfg.run.knn_bn_recalibrate:
        backbone = copy.deepcopy(backbone)  # the run's own statistics stay as trained
        recalibrate_batchnorm(backbone, _calibration_batches(data.bank, cfg, device))

    def feats(split: LabelledSet) -> tuple[torch.Tensor, torch.Tensor]:
        f, idx = extract_features(
            backbone,
            size,
            cfg.augment.mean,
            cfg.augment.std,
            images=split.images,
            paths=split.paths,
            device=device,
            workers=cfg.data.workers,
            channels_last=cfg.model.channels_last,
        )
        return f, split.targets[idx]

    bank_f, bank_y = feats(data.bank)
    test_f, test_y = feats(data.test)
    return knn_classifier(
        bank_f,
        bank_y,
        test_f,
        test_y,
        k=cfg.run.knn_k,
        temperature=cfg.run.knn_temperature,
        num_classes=len(data.bank.classes),
    )
