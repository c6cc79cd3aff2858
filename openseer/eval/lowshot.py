"""Low-shot evaluation: few labels per class, several seeds, mean ± std, against two baselines.

For each label budget (a fraction of each class, e.g. 1% and 10%, or N images per class) and each seed, one
class-balanced subset of the training labels is drawn with :func:`subset_per_class`; every method is trained on
that same subset and scored on the full test set:

* ``ssl``: the pretrained network, by linear probe on frozen features or by fine-tuning (``protocol``);
* ``random``: a linear probe on the same network at random initialisation (BatchNorm re-estimated);
* ``supervised``: the same network trained from scratch on the subset (``scratch`` recipe).

Every method chooses its learning rate on a validation split carved from the labelled subset only (the test
set scores the chosen model once): the probes keep the best head of their grid, the networks trained end to
end (fine-tuning, from scratch) are trained again at the chosen rate on the whole subset. Networks trained
end to end get a budget of optimisation steps, the same whatever the size of the subset, so that the
from-scratch baseline can converge on the labels it has however few; each run's training curve (loss,
validation top-1 per logged step) is kept in the result, and the report shows whether it did.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from openseer.config import ConfigError, to_dict
from openseer.data.folders import subset_per_class
from openseer.data.labelled import EvalData
from openseer.distributed import resolve_device
from openseer.eval import cost
from openseer.eval.classifier import Classifier, evaluate_classifier
from openseer.eval.embed import Embedder, FeatureConfig, Features
from openseer.eval.finetune import fit_classifier, new_classifier, planned_runs, training_part
from openseer.eval.linear import ProbeConfig, ProbeResult, fit_linear_probe, score_head
from openseer.eval.metrics import write_result
from openseer.eval.recipe import RecipeConfig, plan
from openseer.eval.split import SplitConfig, split_data
from openseer.weights import Weights, load_weights

log = logging.getLogger(__name__)

METHOD_NAMES = {
    "ssl-linear": "self-supervised, linear probe",
    "ssl-finetune": "self-supervised, fine-tuned",
    "random": "random init, linear probe",
    "supervised": "supervised from scratch",
}


def budget_label(fraction: float | None = None, per_class: int | None = None) -> str:
    return f"{fraction * 100:g}%" if fraction is not None else f"{per_class}/class"


def label_subsets(
    targets: torch.Tensor,
    fractions: Sequence[float] = (),
    per_class: Sequence[int] = (),
    seeds: Sequence[int] = (0,),
) -> dict[str, dict[int, torch.Tensor]]:
    """{budget label: {seed: sorted indices into targets (N,)}}, balanced per class, deterministic per seed."""
    out: dict[str, dict[int, torch.Tensor]] = {}
    for f in fractions:
        out[budget_label(fraction=f)] = {s: subset_per_class(targets, fraction=f, seed=s) for s in seeds}
    for n in per_class:
        out[budget_label(per_class=n)] = {s: subset_per_class(targets, per_class=n, seed=s) for s in seeds}
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def probe_subset(
    feats: Features, rows: torch.Tensor, test: Features, num_classes: int, probe: ProbeConfig
) -> tuple[float, float, ProbeResult]:
    """Linear probe trained on the features of data rows ``rows`` (unreadable rows dropped), scored on test:
    (top-1, top-5, the fitted probe with its learning rate and curve)."""
    where = torch.full((int(feats.index.max()) + 1 if len(feats.index) else 0,), -1, dtype=torch.long)
    where[feats.index] = torch.arange(len(feats.index))
    pos = where[rows[rows < len(where)]]
    pos = pos[pos >= 0]
    result = fit_linear_probe(feats.features[pos], feats.labels[pos], num_classes, probe)
    top1, top5, _ = score_head(result.head, test.features, test.labels, num_classes)
    return top1, top5, result


@dataclass
class LowShotConfig(SplitConfig):
    seed: int = 0
    """Seed of the random initialisation whose features the 'random' baseline probes."""
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])
    """Label budgets as fractions of each class of the training set, in (0, 1]."""
    per_class: list[int] = field(default_factory=list)
    """Label budgets as images per class, in addition to (or instead of) `fractions`."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One run per seed and budget: the seed draws the labelled subset and seeds its training; results are
    reported as mean ± std over the seeds."""
    protocol: Literal["linear", "finetune"] = "linear"
    """How the pretrained network is evaluated: linear probe on frozen features, or fine-tuning."""
    baselines: list[Literal["random", "supervised"]] = field(default_factory=lambda: ["random", "supervised"])
    """Compared on the same subsets: 'random', a linear probe on the features of the same network at random
    initialisation; 'supervised', that network trained from scratch with the `scratch` recipe."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """The linear probe (protocol 'linear' and the 'random' baseline); its seed is each run's seed."""
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    """Fine-tuning the pretrained network (protocol 'finetune')."""
    scratch: RecipeConfig = field(
        default_factory=lambda: RecipeConfig(batch_size=32, lr=0.4, crop_scale=(0.25, 1.0))
    )
    """Supervised training from scratch: the fine-tuning recipe (steps, augmentation, learning rate chosen on
    validation), batch 32, rates around 0.4 per 256 and crops of at least a quarter of the image: small images
    lose their object in an 8% crop (docs/benchmarks.md#the-supervised-baselines-recipe)."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """How features are computed; its workers and progress also serve the trained runs (protocol 'finetune',
    the 'supervised' baseline), and its batch size their scoring."""
    results: str | None = None
    """Folder of the JSON result; null: RUN/eval."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Bound on the estimate (one batch and a few steps timed, times what is planned). Over it, the supervised
    baseline's `scratch.steps` and `scratch.lr_factors`, where left at their defaults, are scaled down to fit
    (fewer steps, down to 300 a run, then one learning rate), as the log says; what still does not fit
    stops the command before the long work. 0 or null: no limit."""

    def validate(self) -> None:
        cost.check_max_minutes(self.max_minutes)
        if not self.checkpoint:
            raise ConfigError("lowshot needs a pretraining checkpoint (a ckpt-*.pt file or a run folder)")
        if not self.fractions and not self.per_class:
            raise ConfigError("lowshot needs at least one label budget (fractions or per_class)")
        if any(not 0 < f <= 1 for f in self.fractions) or any(n < 1 for n in self.per_class):
            raise ConfigError("lowshot: fractions must be in (0, 1] and per_class >= 1")
        if not self.seeds:
            raise ConfigError("lowshot needs at least one seed")


def lowshot(weights: Weights, train: EvalData, test: EvalData, cfg: LowShotConfig) -> dict:
    """Every method of ``cfg`` on every (budget, seed) of the labelled ``train`` set, scored on ``test``:
    {'kind', 'protocol', 'checkpoint', 'train', 'test', 'budgets', 'seeds', 'rows': [{'method', 'name', 'cells':
    {budget: {'top1_mean', 'top1_std', 'top5_mean', 'top5_std', 'runs'}}}], 'config', 'seconds'}."""
    started = time.perf_counter()
    pretrained = weights.build_backbone()  # built once; every method starts from a copy or at random init
    c = len(train.classes)
    subsets = label_subsets(train.targets, cfg.fractions, cfg.per_class, cfg.seeds)
    device = resolve_device(cfg.features.device)
    methods = ["ssl-linear" if cfg.protocol == "linear" else "ssl-finetune", *cfg.baselines]
    embedders = {
        method: lowshot_embedder(weights, pretrained, cfg, random_init=method == "random")
        for method in methods
        if method in ("ssl-linear", "random")
    }
    cfg, scaled = plan_lowshot(weights, pretrained, train, test, subsets, embedders, cfg, device)
    runs: dict[str, dict[str, list[dict]]] = {m: {b: [] for b in subsets} for m in methods}

    def record(method: str, budget: str, seed: int, n: int, top1: float, top5: float, **fit: object) -> None:
        """``fit``: how the model was trained: 'lr', 'val_top1' per rate, 'curve' of the kept run..."""
        runs[method][budget].append({"seed": seed, "n_labels": n, "top1": top1, "top5": top5, **fit})
        log.info("low-shot %s %s seed %d: top-1 %.4f top-5 %.4f", method, budget, seed, top1, top5)

    def linear_method(method: str, random_init: bool) -> None:
        # features of the full training set once (unlabelled images are not scarce), then a probe per subset
        embedder = embedders[method]
        embedder.prepare(train)  # BatchNorm re-estimated on a copy: `pretrained` stays as loaded
        train_f, test_f = embedder(train), embedder(test)
        for budget, by_seed in subsets.items():
            for seed, rows in by_seed.items():
                probe = ProbeConfig(**{**to_dict(cfg.probe), "seed": seed})
                top1, top5, fit = probe_subset(train_f, rows, test_f, c, probe)
                record(
                    method,
                    budget,
                    seed,
                    len(rows),
                    top1,
                    top5,
                    lr=fit.lr,
                    val_top1={str(k): v for k, v in fit.val_top1.items()},
                    curve=fit.curve,
                )

    def trained_method(method: str, init: Literal["pretrained", "random"], recipe: RecipeConfig) -> None:
        for budget, by_seed in subsets.items():
            for seed, rows in by_seed.items():
                subset = train.subset(rows, f"{train.name} ({budget}, seed {seed})")

                def make(subset: EvalData = subset, seed: int = seed) -> Classifier:
                    # every run of the learning-rate grid starts from the same network and head
                    start = (
                        copy.deepcopy(pretrained) if init == "pretrained" else weights.random_backbone(seed)
                    )
                    return new_classifier(start, weights, subset, seed)

                clf, stats = fit_classifier(
                    make, subset, recipe, device, cfg.features.workers, cfg.features.progress, seed=seed
                )
                top1, top5, _ = evaluate_classifier(clf, test, cfg.features.batch_size, cfg.features.workers)
                selection = stats["selection"]
                record(
                    method,
                    budget,
                    seed,
                    len(rows),
                    top1,
                    top5,
                    lr=stats["lr"],
                    steps=stats["steps"],
                    batch_size=stats["batch_size"],
                    val_top1=selection["val_top1"] if selection else {},
                    curve=stats["history"],
                    val_curves=selection["curves"] if selection else {},
                    refit=bool(selection and selection["refit"]),
                )

    for method in methods:
        if method == "ssl-linear":
            linear_method(method, random_init=False)
        elif method == "random":
            linear_method(method, random_init=True)
        elif method == "ssl-finetune":
            trained_method(method, "pretrained", cfg.recipe)
        else:
            trained_method(method, "random", cfg.scratch)

    rows = []
    for method in methods:
        cells = {}
        for budget, results in runs[method].items():
            m1, s1 = mean_std([r["top1"] for r in results])
            m5, s5 = mean_std([r["top5"] for r in results])
            cells[budget] = {
                "top1_mean": m1,
                "top1_std": s1,
                "top5_mean": m5,
                "top5_std": s5,
                "runs": results,
            }
        rows.append({"method": method, "name": METHOD_NAMES[method], "cells": cells})
    return {
        "kind": "lowshot",
        "protocol": cfg.protocol,
        "checkpoint": weights.source,
        "train": train.name,
        "test": test.name,
        "budgets": list(subsets),
        "seeds": list(cfg.seeds),
        "rows": rows,
        "config": to_dict(cfg),
        "scaled": scaled,
        "seconds": time.perf_counter() - started,
    }


SCRATCH_MIN_STEPS = 300
"""Fewest steps per run the supervised baseline is scaled down to, to fit max_minutes."""


def lowshot_embedder(
    weights: Weights, pretrained: torch.nn.Module, cfg: LowShotConfig, random_init: bool
) -> Embedder:
    """The embedder of a probed method: ``pretrained``, or the same network at random initialisation."""
    backbone = weights.random_backbone(cfg.seed) if random_init else pretrained
    embedder = Embedder(backbone, weights.preprocess, cfg.features, weights.model.channels_last)
    embedder.random_init = random_init
    return embedder


def plan_lowshot(
    weights: Weights,
    pretrained: torch.nn.Module,
    train: EvalData,
    test: EvalData,
    subsets: dict[str, dict[int, torch.Tensor]],
    embedders: dict[str, Embedder],
    cfg: LowShotConfig,
    device: torch.device,
) -> tuple[LowShotConfig, list[str]]:
    """Time and log what every method will cost; when it is over ``cfg.max_minutes``, the config with the
    supervised baseline's default steps and grid scaled down to fit (and what was scaled, as sentences), or a
    :class:`~openseer.eval.cost.CostError` when that is not enough or not allowed."""
    parts: list[cost.Part] = []
    for method, embedder in embedders.items():
        part = embedder.estimate(train, [train, test], f"embedding ({METHOD_NAMES[method]})")
        if part is not None:
            parts.append(part)
    cells = [
        train.subset(rows, f"{train.name} ({budget}, seed {seed})")
        for budget, by_seed in subsets.items()
        for seed, rows in by_seed.items()
    ]
    scratch = None
    workers, seed = cfg.features.workers, cfg.seeds[0]
    if cfg.protocol == "finetune":
        make = lambda: new_classifier(copy.deepcopy(pretrained), weights, cells[0], seed)  # noqa: E731
        parts.append(training_part("fine-tuning", make, cells, cfg.recipe, device, workers, seed))
    if "supervised" in cfg.baselines:
        make = lambda: new_classifier(weights.random_backbone(seed), weights, cells[0], seed)  # noqa: E731
        scratch = training_part("training from scratch", make, cells, cfg.scratch, device, workers, seed)
        parts.append(scratch)
    advice = ", name fewer budgets or seeds, drop a baseline (baselines=[random]), or compute on a GPU (features.device)"
    decision = cost.decide("lowshot", parts, cfg.max_minutes, advice)
    default = LowShotConfig().scratch
    scalable = (
        cfg.scratch.steps == default.steps
        and cfg.scratch.lr_factors == default.lr_factors
        and cfg.scratch.epochs is None
    )
    if decision.fits or scratch is None or not scalable:
        cost.check("lowshot", parts, cfg.max_minutes, advice)
        return cfg, []
    for line in decision.lines:
        log.info("%s", line)
    limit = cost.limit_seconds(cfg.max_minutes)
    room = limit - (decision.total - scratch.total)
    runs = sum(planned_runs(c, cfg.scratch, seed) for c in cells)
    fit = cost.scale_runs(room, scratch.seconds, cfg.scratch.steps, runs, len(cells), SCRATCH_MIN_STEPS)
    if fit is None:
        cost.check("lowshot", parts, cfg.max_minutes, advice)  # raises: even the smallest baseline is over
        return cfg, []
    changes: dict[str, object] = {"steps": fit.steps}
    said = [f"scratch.steps {cfg.scratch.steps} -> {fit.steps}"]
    if fit.single:
        changes["lr_factors"] = [1.0]
        said.append(
            f"scratch.lr_factors {cfg.scratch.lr_factors} -> [1.0] (trained at scratch.lr, no selection)"
        )
    recipe = dataclasses.replace(cfg.scratch, **changes)
    steps = sum(planned_runs(c, recipe, seed) * plan(len(c), recipe)[2] for c in cells)
    parts[parts.index(scratch)] = dataclasses.replace(scratch, units=steps)
    scaled = [
        f"the supervised baseline was scaled to fit max_minutes={cfg.max_minutes:g} (about "
        f"{cost.duration(decision.total)} as planned): {'; '.join(said)}; set max_minutes=0 (or higher) to "
        "train it as configured"
    ]
    log.warning("%s", scaled[0])
    for line in cost.decide("lowshot", parts, cfg.max_minutes).lines:
        log.info("%s", line)
    return dataclasses.replace(cfg, scratch=recipe), scaled


def run_lowshot(cfg: LowShotConfig) -> dict:
    """:func:`lowshot` on the labelled split of ``cfg``; returns and writes RUN/eval/lowshot.json."""
    weights = load_weights(cfg.checkpoint)
    train, test = split_data(cfg, weights)
    result = lowshot(weights, train, test, cfg)
    folder = Path(cfg.results) if cfg.results else weights.run_dir / "eval"
    result["result_file"] = str(write_result(folder, "lowshot", result))
    return result


def format_lowshot(result: dict) -> str:
    """Top-1 (%) as mean ± std per method and budget."""
    budgets = result["budgets"]
    width = max(len(r["name"]) for r in result["rows"]) + 2
    lines = [f"{'top-1 (%), mean ± std over seeds ' + str(result['seeds']):<{width}}"]
    lines.append(f"{'method':<{width}}" + "".join(f"{b:>16}" for b in budgets))
    for row in result["rows"]:
        cells = "".join(
            f"{100 * row['cells'][b]['top1_mean']:>9.2f} ± {100 * row['cells'][b]['top1_std']:>5.2f}"
            for b in budgets
        )
        lines.append(f"{row['name']:<{width}}" + cells)
    return "\n".join(lines)
