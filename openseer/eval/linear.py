"""Linear probe on frozen, cached features (MAE / dinov2 protocol).

BatchNorm1d(affine=False) normalises the features in front of the linear layer (MAE, He et al. 2021, Sec. A.2),
so one grid of learning rates suits any backbone. Every learning rate gets its own linear head and all heads are
trained in ONE pass over the features, on the same batches (dinov2's ``eval_linear`` trick): the grid costs
barely more than one probe. The head kept is the best on a validation split carved from the training set; the
test split is only used to report the chosen head.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from openseer.config import ConfigError, to_dict
from openseer.data.folders import split_per_class
from openseer.eval import cost
from openseer.eval.classifier import Classifier, save_classifier
from openseer.eval.embed import FeatureConfig, check_embedding, embedder_for
from openseer.eval.metrics import accuracy, confusion_matrix, write_result
from openseer.eval.split import SplitConfig, split_data

log = logging.getLogger(__name__)

# Per 256 samples; the BatchNorm in front makes the useful range the same for every backbone.
DEFAULT_LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


@dataclass
class ProbeConfig:
    lrs: list[float] = field(default_factory=lambda: list(DEFAULT_LRS))
    """Learning rates per 256 samples, one head each, all trained at once."""
    epochs: int = 100
    """Epochs over the cached features."""
    batch_size: int = 256
    """Features per step."""
    weight_decay: float = 0.0
    """L2 weight decay of the heads."""
    momentum: float = 0.9
    """SGD momentum."""
    val_fraction: float = 0.1
    """Share of each class carved from the training features to choose the learning rate."""
    seed: int = 0
    """Seed of the heads' initialisation, of the validation split and of the data order."""

    def validate(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError(f"config key 'probe.lrs': got {self.lrs}, expected positive learning rates")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("config keys 'probe.epochs' and 'probe.batch_size' must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"config key 'probe.val_fraction': got {self.val_fraction}, expected (0, 1)")


class MultiHeadProbe(nn.Module):
    """One BatchNorm1d(affine=False) shared by H linear heads: features (N, D) -> logits (H, N, C).

    The normalisation has no parameters, so sharing it leaves the heads independent.
    """

    def __init__(self, dim: int, num_classes: int, heads: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False)
        self.heads = nn.ModuleList(self._head(dim, num_classes) for _ in range(heads))
        self.history: list[dict] = []
        """Training curve: {'step', 'loss': [per head], 'val_top1': [per head] (when scored)} per logged step."""

    @staticmethod
    def _head(dim: int, num_classes: int) -> nn.Linear:
        # small init as in MAE / dinov2 linear evaluation, drawn head by head so that head h starts the same
        # whatever the size of the grid
        head = nn.Linear(dim, num_classes)
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(x)
        return torch.stack([head(z) for head in self.heads])

    def single(self, h: int) -> nn.Sequential:
        """Head ``h`` as a stand-alone (BatchNorm1d, Linear) classifier of features."""
        return nn.Sequential(copy.deepcopy(self.bn), copy.deepcopy(self.heads[h])).eval()


def train_probes(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    log_points: int = 50,
) -> MultiHeadProbe:
    """Train one head per learning rate in cfg.lrs on features (N, D) and labels (N,), cosine-decayed SGD.

    Every step feeds the same batch to all heads; the summed loss gives each head exactly its own gradient.
    The probe's ``history`` logs each head's mean loss at ``log_points`` evenly spaced steps, and its top-1 on
    ``val`` = (features (M, D), labels (M,)) when given.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        probe = MultiHeadProbe(features.shape[1], num_classes, len(cfg.lrs))
    n = len(features)
    bs = min(cfg.batch_size, n)
    base = [lr * bs / 256 for lr in cfg.lrs]
    groups = [{"params": head.parameters(), "lr": lr} for head, lr in zip(probe.heads, base, strict=True)]
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, n // bs)  # full batches only: BatchNorm needs > 1 sample
    total = cfg.epochs * steps_per_epoch
    x, y = features.float(), labels.long()
    log_every = max(1, math.ceil(total / log_points))
    running, count = torch.zeros(len(base)), 0  # per-head loss summed since the last logged point
    probe.train()
    step = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
            scale = 0.5 * (1 + math.cos(math.pi * step / total))
            for group, lr in zip(opt.param_groups, base, strict=True):
                group["lr"] = lr * scale
            logits = probe(x[idx])  # (H, B, C)
            loss = F.cross_entropy(logits.flatten(0, 1), y[idx].repeat(len(base)), reduction="sum") / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            with torch.no_grad():
                running += (
                    F.cross_entropy(logits.detach().flatten(0, 1), y[idx].repeat(len(base)), reduction="none")
                    .view(len(base), -1)
                    .mean(dim=1)
                )
                count += 1
            if step % log_every == 0 or step == total:
                point = {"step": step, "loss": (running / count).tolist()}
                running, count = torch.zeros(len(base)), 0
                if val is not None:
                    with torch.no_grad():
                        probe.eval()
                        point["val_top1"] = [
                            accuracy(lg, val[1], topk=(1,))[0] for lg in probe(val[0].float())
                        ]
                        probe.train()
                probe.history.append(point)
    return probe.eval()


@dataclass
class ProbeResult:
    head: nn.Sequential
    """(BatchNorm1d(affine=False), Linear) of the chosen learning rate, in eval mode."""
    lr: float
    val_top1: dict[float, float]
    """Validation top-1 of every learning rate (training top-1 when the set is too small to carve one)."""
    curve: list[dict] = field(default_factory=list)
    """The chosen head's training curve: {'step', 'loss', 'val_top1'} per logged step."""


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: ProbeConfig | None = None
) -> ProbeResult:
    """Train the learning-rate grid on features (N, D) minus a per-class validation split, keep the best head.

    Classes with a single sample stay entirely in training; when no validation sample is left at all (tiny
    low-shot sets), the learning rate is chosen on the training samples, with a warning.
    """
    cfg = cfg or ProbeConfig()
    train_idx, val_idx = split_per_class(labels, cfg.val_fraction, seed=cfg.seed)
    if len(val_idx) == 0:
        log.warning("too few labels to carve a validation split: learning rate chosen on the training set")
        train_idx = val_idx = torch.arange(len(labels))
    val = (features[val_idx], labels[val_idx])
    probe = train_probes(features[train_idx], labels[train_idx], num_classes, cfg, val=val)
    with torch.no_grad():
        logits = probe(features[val_idx].float())
    scores = [accuracy(lg, labels[val_idx], topk=(1,))[0] for lg in logits]
    best = max(range(len(scores)), key=lambda h: (scores[h], -h))  # ties: the smaller learning rate
    curve = [
        {"step": p["step"], "loss": p["loss"][best], "val_top1": p["val_top1"][best]} for p in probe.history
    ]
    return ProbeResult(probe.single(best), cfg.lrs[best], dict(zip(cfg.lrs, scores, strict=True)), curve)


@torch.no_grad()
def score_head(
    head: nn.Module, features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[float, float, torch.Tensor]:
    """(top-1, top-5, confusion (C, C)) of a feature classifier on features (N, D) and labels (N,)."""
    logits = head.eval()(features.float())
    top1, top5 = accuracy(logits, labels, topk=(1, 5))
    return top1, top5, confusion_matrix(logits, labels, num_classes)


# ============ the linear command ============


@dataclass
class LinearConfig(SplitConfig):
    seed: int = 0
    """Seed of the random initialisation (model 'random')."""
    model: Literal["pretrained", "random"] = "pretrained"
    """'random': probe the same network at random initialisation."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """Training of the linear heads."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """How features are computed."""
    out_dir: str | None = None
    """Where the classifier checkpoint goes (default RUN/linear, or RUN/linear-random)."""
    save: bool = True
    """Write the classifier checkpoint (to out_dir), which openseer predict reads."""
    results: str | None = None
    """Folder of the JSON result (default RUN/eval)."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before embedding when the estimate (one batch timed, times the batches) is over this many minutes;
    0 or null: no limit. The probes train on the cached features and are not counted."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("linear needs weights (checkpoint=RUN_FOLDER_OR_FILE)")
        cost.check_max_minutes(self.max_minutes)


def run_linear(cfg: LinearConfig) -> dict:
    """Embed train and test (cached), fit the probe, score on test, save the classifier and a result JSON."""
    started = time.perf_counter()
    random_init = cfg.model == "random"
    embedder, weights = embedder_for(cfg.checkpoint, cfg.features, random_init, cfg.seed)
    train, test = split_data(cfg, weights)
    check_embedding("linear", embedder, train, [train, test], cfg.max_minutes)
    embedder.prepare(train)
    train_f, test_f = embedder(train), embedder(test)
    c = len(train.classes)
    probe = fit_linear_probe(train_f.features, train_f.labels, c, cfg.probe)
    top1, top5, confusion = score_head(probe.head, test_f.features, test_f.labels, c)
    run_dir = weights.run_dir
    suffix = "-random" if random_init else ""
    result = {
        "kind": "linear",
        "model": cfg.model,
        "checkpoint": weights.source,
        "train": train.name,
        "test": test.name,
        "n_train": len(train_f.index),
        "n_test": len(test_f.index),
        "top1": top1,
        "top5": top5,
        "lr": probe.lr,
        "val_top1": {str(k): v for k, v in probe.val_top1.items()},
        "classes": train.classes,
        "confusion": confusion.tolist(),
        "config": to_dict(cfg),
        "seconds": time.perf_counter() - started,
    }
    if cfg.save:
        preprocess = train.fitted(embedder.preprocess)  # as the features were computed
        classifier = Classifier.from_parts(
            embedder, probe.head, train.classes, weights, head_bn=True, preprocess=preprocess
        )
        out = Path(cfg.out_dir) if cfg.out_dir else run_dir / f"linear{suffix}"
        result["classifier"] = str(
            save_classifier(classifier, out / "checkpoints", protocol="linear", source=weights.source)
        )
    result["result_file"] = str(
        write_result(Path(cfg.results) if cfg.results else run_dir / "eval", f"linear{suffix}", result)
    )
    return result
