"""The quick evaluation at the end of pretraining: kNN and a linear probe on the held-out split, then the report.

Kept to well under a minute on a 2-core CPU for 60k small images: the kNN bank and the probe's training set
are a class-balanced sample of the training part (``max_train``), the held-out part is sampled too
(``max_test``), BatchNorm statistics are re-estimated on ``calibration`` images, and the probe runs few epochs
on cached features. ``openseer knn`` / ``openseer linear`` give the full-size figures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from openseer.data.folders import subset_per_class
from openseer.eval.data import EvalData
from openseer.eval.embed import Embedder, FeatureConfig
from openseer.eval.knn import knn_classifier
from openseer.eval.linear import ProbeConfig, fit_linear_probe, score_head, write_result
from openseer.eval.report import build_report
from openseer.train.config import PretrainConfig
from openseer.train.data import LabelledSet, PretrainData

log = logging.getLogger(__name__)


def as_eval_data(split: LabelledSet, name: str) -> EvalData:
    """Pretraining's labelled split (uint8 images in memory or paths) as an EvalData."""
    return EvalData(name, split.targets, list(split.classes), images=split.images, paths=split.paths)


def sample_balanced(data: EvalData, limit: int, seed: int = 0) -> EvalData:
    """At most about ``limit`` rows, the same share of each class (the whole set when it is smaller)."""
    if len(data) <= limit:
        return data
    idx = subset_per_class(data.targets, fraction=limit / len(data), seed=seed)
    return data.subset(idx, f"{data.name} ({len(idx)} sampled)")


def quick_evaluation(
    run_dir: Path,
    data: PretrainData,
    cfg: PretrainConfig,
    backbone: nn.Module,
    device: torch.device | str,
    max_train: int = 10_000,
    max_test: int = 5_000,
    calibration: int = 1024,
    probe_epochs: int = 20,
) -> dict:
    """kNN (cfg.run.knn_k, knn_temperature) and a linear probe on the held-out split, written to
    RUN/eval/quick-knn.json and quick-linear.json, then RUN/report.html.

    The backbone is left untouched (BatchNorm is re-estimated on a copy when cfg.run.knn_bn_recalibrate).
    Returns {'knn_top1', 'knn_top5', 'linear_top1', 'linear_top5', 'linear_lr', 'seconds', 'report'}; only
    'report' when the data has no labels.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    out: dict = {}
    if data.bank is not None and data.test is not None and len(data.test.targets):
        bank = sample_balanced(as_eval_data(data.bank, "training part"), max_train)
        test = sample_balanced(as_eval_data(data.test, "held-out part"), max_test)
        fcfg = FeatureConfig(
            batch_size=256,
            workers=cfg.data.workers,
            device=str(device),
            calibration_images=calibration,
            progress=False,
        )
        embedder = Embedder(
            backbone, cfg.crops[0].size, cfg.augment.mean, cfg.augment.std, fcfg, cfg.model.channels_last
        )
        if cfg.run.knn_bn_recalibrate:
            embedder.calibrate(bank)
        bank_f, test_f = embedder(bank), embedder(test)
        c = len(bank.classes)
        knn1, knn5 = knn_classifier(
            bank_f.features, bank_f.labels, test_f.features, test_f.labels,
            k=cfg.run.knn_k, temperature=cfg.run.knn_temperature, num_classes=c,
        )  # fmt: skip
        probe = fit_linear_probe(bank_f.features, bank_f.labels, c, ProbeConfig(epochs=probe_epochs))
        lin1, lin5, confusion = score_head(probe.head, test_f.features, test_f.labels, c)
        common = {
            "model": "pretrained",
            "protocol": "quick",
            "train": bank.name,
            "test": test.name,
            "n_train": len(bank_f.index),
            "n_test": len(test_f.index),
        }
        write_result(
            run_dir / "eval",
            "quick-knn",
            {
                "kind": "knn",
                **common,
                "top1": knn1,
                "top5": knn5,
                "k": cfg.run.knn_k,
                "temperature": cfg.run.knn_temperature,
            },
        )
        write_result(
            run_dir / "eval",
            "quick-linear",
            {
                "kind": "linear",
                **common,
                "top1": lin1,
                "top5": lin5,
                "lr": probe.lr,
                "classes": bank.classes,
                "confusion": confusion.tolist(),
            },
        )
        out = {
            "knn_top1": knn1,
            "knn_top5": knn5,
            "linear_top1": lin1,
            "linear_top5": lin5,
            "linear_lr": probe.lr,
        }
        log.info(
            "quick evaluation: kNN top-1 %.4f, linear probe top-1 %.4f (lr %g) on %d held-out images",
            knn1, lin1, probe.lr, len(test_f.index),
        )  # fmt: skip
    out["report"] = str(build_report(run_dir))
    out["seconds"] = time.perf_counter() - started
    return out


def evaluate_run(run_dir: str | Path, device: str = "auto", **kwargs: int) -> dict:
    """:func:`quick_evaluation` of a finished run folder: its newest checkpoint and its own data split."""
    from openseer.eval.embed import load_model, resolve_device
    from openseer.train.data import prepare_data

    run_dir = Path(run_dir)
    model, cfg = load_model(run_dir)
    data = prepare_data(cfg.data, seed=cfg.run.seed)
    return quick_evaluation(run_dir, data, cfg, model.backbone, resolve_device(device), **kwargs)
