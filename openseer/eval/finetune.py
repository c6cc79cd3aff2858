"""Fine-tuning: the pretrained backbone plus a new linear head, trained end to end with augmentation.

SEER's ImageNet recipe (Goyal et al. 2021, Sec. 4.1): SGD with momentum 0.9, weight decay 1e-4, learning rate
0.0125 for a batch of 256 multiplied by 0.1 after 30 of 35 epochs, RandomResizedCrop + horizontal flip. It is
scaled to the data: the batch is capped at the training-set size and the learning rate follows the batch
linearly, and the milestones are fractions of the run, so a shorter or longer run keeps the same shape.

The budget is a number of optimisation steps, not of epochs: 35 epochs of a 1% subset are a few dozen steps,
which leaves a network trained from scratch near chance and makes any comparison with it meaningless. The
learning rate is chosen from a small grid on a validation split carved from the labelled set, then the
network is trained again at that rate on the whole set (:func:`fit_classifier`); every run logs its training
curve so that convergence can be checked. The same loop, from a random initialisation, is the
supervised-from-scratch baseline.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import v2

from openseer.config import ConfigError, to_dict
from openseer.data.batched_crops import batched_multicrop
from openseer.data.folders import DataError, LabelledImages, collate_skipping, split_per_class
from openseer.data.labelled import EvalData
from openseer.data.multicrop import AugmentSpec, CropSpec
from openseer.distributed import resolve_device
from openseer.eval import cost
from openseer.eval.classifier import (
    Classifier,
    build_head,
    classifier_logits,
    evaluate_classifier,
    save_classifier,
)
from openseer.eval.metrics import accuracy, write_result
from openseer.eval.recipe import RecipeConfig, plan, step_lr
from openseer.eval.split import SplitConfig, split_data
from openseer.fileio.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from openseer.models import load_state_checked
from openseer.models.backbone import feature_dim
from openseer.weights import Weights, is_classifier_state, load_weights

log = logging.getLogger(__name__)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class _Batches(Sampler[list[int]]):
    """The batches of one epoch: a permutation seeded by (seed, epoch) cut into ``steps`` batches.

    Checkpoints are written at epoch ends, so a resumed run always starts an epoch from its first batch.
    """

    def __init__(self, n: int, bs: int, steps: int, seed: int, epoch: int) -> None:
        self.n, self.bs, self.steps, self.seed, self.epoch = n, bs, steps, seed, epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(
            self.n, generator=torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        )
        for i in range(self.steps):
            yield perm[i * self.bs : (i + 1) * self.bs].tolist()


def _train_batches(
    clf: Classifier,
    data: EvalData,
    recipe: RecipeConfig,
    bs: int,
    steps: int,
    epoch: int,
    workers: int,
    seed: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented (images (B,3,S,S), targets (B,)) of one epoch; randomness depends only on (seed, epoch, step)."""
    sampler = _Batches(len(data), bs, steps, seed, epoch)
    if data.images is not None:
        # RandomResizedCrop + flip per sample, batched on uint8 tensors (no colour, grayscale or blur)
        aug = AugmentSpec(
            flip_p=recipe.flip_p,
            color_p=0.0,
            grayscale_p=0.0,
            blur_p=0.0,
            mean=clf.preprocess.mean,
            std=clf.preprocess.std,
        )
        crop = [CropSpec(clf.preprocess.size, 1, tuple(recipe.crop_scale))]
        for step, idx in enumerate(sampler):
            gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch) * 1_009 + step)
            (x,) = batched_multicrop(data.images[idx], crop, aug, generator=gen, channels_last=False)
            yield x, data.targets[idx]
        return
    transform = v2.Compose(
        [
            v2.RandomResizedCrop(clf.preprocess.size, scale=tuple(recipe.crop_scale), antialias=True),
            v2.RandomHorizontalFlip(recipe.flip_p),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(clf.preprocess.mean, clf.preprocess.std),
        ]
    )
    dataset = LabelledImages(data.paths, data.targets, data.classes, transform=transform)
    # augmentation runs on the global RNG in the main process (workers=0), on per-worker seeds otherwise
    torch.manual_seed(_epoch_seed(seed, epoch))
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping,
        generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch)),  # worker seeds
    )
    for x, y, _ in loader:  # unreadable files leave the batch
        if x is not None and len(x) > 1:
            yield x, y


@torch.no_grad()
def validation_scores(
    clf: Classifier, val: EvalData, batch_size: int = 256, workers: int = 0
) -> tuple[float, float]:
    """(top-1, mean cross-entropy) of the classifier on a labelled set, scored in eval mode.

    Runs under a forked RNG so that scoring in the middle of training does not shift its random stream.
    """
    with torch.random.fork_rng(devices=[]):
        logits, targets, _ = classifier_logits(clf, val, batch_size, workers)
    top1 = accuracy(logits, targets, topk=(1,))[0]
    return top1, float(F.cross_entropy(logits, targets))


class _Curve:
    """Accumulates per-step loss and batch accuracy into the logged points of a training curve."""

    def __init__(self, pending: list[float] | None = None) -> None:
        # loss sum, batches, correct predictions, images since the last logged point
        self.loss, self.batches, self.correct, self.seen = pending or [0.0, 0, 0, 0]

    def add(self, loss: float, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss += loss
        self.batches += 1
        self.correct += int((logits.argmax(dim=1) == targets).sum())
        self.seen += len(targets)

    def point(self, step: int, epoch: float, lr: float) -> dict:
        """The logged point at ``step`` (means since the previous point), and a reset."""
        out = {
            "step": step,
            "epoch": epoch,
            "loss": self.loss / max(1, self.batches),
            "train_top1": self.correct / max(1, self.seen),
            "lr": lr,
        }
        self.loss, self.batches, self.correct, self.seen = 0.0, 0, 0, 0
        return out

    def pending(self) -> list[float]:
        return [self.loss, self.batches, self.correct, self.seen]


def _train_step(
    clf: Classifier, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on images (B,3,S,S) and targets (B,): (loss, logits (B, C), targets on device)."""
    y = y.to(device)
    logits = clf(x.to(device))
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logits, y


def step_seconds(
    clf: Classifier,
    train: EvalData,
    recipe: RecipeConfig,
    device: torch.device | str = "cpu",
    workers: int = 2,
    seed: int = 0,
) -> float:
    """Seconds of one training step of :func:`train_classifier` on ``train`` (an augmented batch of the recipe's
    size, its loading included), the mean of two steps after a warm-up step. ``clf`` is trained by them: pass
    a copy to throw away. The random streams are left as they were."""
    device = torch.device(device)
    bs, steps_per_epoch, _ = plan(len(train), recipe)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        clf.to(device).train()
        opt = torch.optim.SGD(clf.parameters(), lr=0.0, momentum=recipe.momentum)

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for epoch in range(3):  # three steps, however few batches an epoch holds
                yield from _train_batches(clf, train, recipe, bs, steps_per_epoch, epoch, workers, seed)

        it = batches()
        return cost.time_step(lambda: _train_step(clf, opt, *next(it), device))


def planned_runs(train: EvalData, recipe: RecipeConfig, seed: int = 0) -> int:
    """Training runs :func:`fit_classifier` makes on ``train`` (without resuming): one per learning rate of the
    grid plus the refit, or one when there is no choice to make."""
    lrs, fit_idx, val_idx = _selection(train, recipe, seed)
    if len(lrs) == 1 or len(val_idx) == 0 or len(fit_idx) < 2:
        return 1
    return len(lrs) + (1 if recipe.refit else 0)


def _selection(
    train: EvalData, recipe: RecipeConfig, seed: int
) -> tuple[list[float], torch.Tensor, torch.Tensor]:
    """(learning rates of the grid, rows trained on, rows of the validation split) of :func:`fit_classifier`."""
    fit_idx, val_idx = split_per_class(train.targets, recipe.val_fraction, seed=seed)
    return recipe.lrs(), fit_idx, val_idx


def training_part(
    what: str,
    make: Callable[[], Classifier],
    cells: Sequence[EvalData],
    recipe: RecipeConfig,
    device: torch.device | str = "cpu",
    workers: int = 2,
    seed: int = 0,
    resuming: bool = False,
) -> cost.Part:
    """What :func:`fit_classifier` on each set of ``cells`` will cost (``resuming``: one run each, at most the
    whole budget), one step timed (:func:`step_seconds`) on the largest set with a classifier of ``make()``."""
    runs = [1 if resuming else planned_runs(c, recipe, seed) for c in cells]
    steps = sum(r * plan(len(c), recipe)[2] for r, c in zip(runs, cells, strict=True))
    largest = max(cells, key=len)
    clf = make()
    seconds = step_seconds(clf, largest, recipe, device, workers, seed)
    detail = f"of {plan(len(largest), recipe)[0]} images at {clf.preprocess.size} px"
    return cost.Part(what, steps, "step", seconds, detail)


def train_classifier(
    clf: Classifier,
    train: EvalData,
    recipe: RecipeConfig,
    device: torch.device | str = "cpu",
    workers: int = 2,
    progress: bool = False,
    ckpt_dir: Path | None = None,
    resume: bool = False,
    source: str | None = None,
    protocol: str = "finetune",
    seed: int = 0,
    keep: int = 2,
    lr: float | None = None,
    val: EvalData | None = None,
    notes: dict | None = None,
) -> dict:
    """Train backbone and head end to end on a labelled set for the recipe's budget of steps.

    ``lr``: learning rate per 256 images (default ``recipe.lr``; a resumed run keeps its own). ``val``: a
    labelled set scored at every logged point of the curve. Checkpoints (and resume) at epoch ends when
    ``ckpt_dir`` is given, about 20 per run at most (the newest ``keep`` kept); ``notes`` travel with them.

    Returns {'steps', 'seconds', 'batch_size', 'lr' (per 256), 'base_lr' (applied), 'notes', 'history': [{'step',
    'epoch', 'loss', 'train_top1', 'lr'[, 'val_top1', 'val_loss']}]}; the curve is logged at ``recipe.log_points``
    evenly spaced steps (loss and accuracy are means over the augmented batches since the previous point).
    """
    device = torch.device(device)
    clf.to(device)
    bs, steps_per_epoch, total = plan(len(train), recipe)
    lr_256 = recipe.lr if lr is None else lr
    step, history, seconds, curve, notes = 0, [], 0.0, _Curve(), dict(notes or {})
    state = None
    if resume and ckpt_dir is not None:
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            log.warning("--resume: no usable checkpoint in %s, starting from the beginning", ckpt_dir)
        else:
            state = load_checkpoint(path, map_location=device)
            # a kept validation run (recipe.refit false) is saved finished, without optimiser state
            finished = state.get("step", 0) >= state.get("total_steps", 1)
            if not is_classifier_state(state) or ("optimizer" not in state and not finished):
                raise CheckpointError(f"{path} is not a fine-tuning checkpoint; use another out_dir")
            if list(state.get("classes", [])) != list(train.classes):
                raise DataError(
                    f"the classes of {train.name} ({', '.join(train.classes[:10])}) differ from those of the "
                    f"checkpoint {path} ({', '.join(list(state.get('classes', []))[:10])}); resume with the "
                    "same labelled data"
                )
            load_state_checked(clf, state["model"], source=str(path))
            if state["total_steps"] != total:
                log.warning(
                    "--resume keeps the interrupted run's schedule (%d steps, not %d): the recipe it started with",
                    state["total_steps"],
                    total,
                )
            step, total = state["step"], state["total_steps"]
            lr_256 = state.get("lr", lr_256)
            history, seconds = state.get("history", []), state.get("seconds", 0.0)
            curve, notes = _Curve(state.get("pending")), state.get("notes", notes)
            log.info("resumed fine-tuning from %s at step %d of %d", path, step, total)
    base_lr = lr_256 * bs / 256
    milestones = [round(m * total) for m in recipe.milestones]
    opt = torch.optim.SGD(
        clf.parameters(), lr=base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    if state is not None and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    log_every = max(1, math.ceil(total / recipe.log_points))
    save_every = max(1, total // 20)
    last_saved = step

    def save(at: int) -> None:
        if ckpt_dir is None:
            return
        extra = {
            "optimizer": opt.state_dict(),
            "step": at,
            "total_steps": total,
            "lr": lr_256,
            "history": history,
            "pending": curve.pending(),
            "seconds": seconds,
            "recipe": to_dict(recipe),
            "notes": notes,
        }
        save_classifier(clf, ckpt_dir, protocol, source, step=at, extra=extra, keep=keep)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc=protocol, unit="step", dynamic_ncols=True, leave=False)
    current = step_lr(base_lr, step, milestones, recipe.gamma)
    while step < total:
        epoch = step // steps_per_epoch
        started = time.perf_counter()
        clf.train()
        batches = _train_batches(clf, train, recipe, bs, steps_per_epoch, epoch, workers, seed)
        for x, y in batches:
            if step >= total:
                break
            current = step_lr(base_lr, step, milestones, recipe.gamma)
            for group in opt.param_groups:
                group["lr"] = current
            loss, logits, y = _train_step(clf, opt, x, y, device)
            curve.add(float(loss.detach()), logits.detach(), y)
            step += 1
            if step % log_every == 0 or step == total:
                point = curve.point(step, step / steps_per_epoch, current)
                if not math.isfinite(point["loss"]):
                    log.warning("step %d: non-finite loss; consider a lower recipe.lr", step)
                if val is not None:
                    point["val_top1"], point["val_loss"] = validation_scores(clf, val, workers=workers)
                    clf.train()
                history.append(point)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{current:.3g}")
        step = max(step, min(total, (epoch + 1) * steps_per_epoch))  # unreadable files shorten an epoch
        seconds += time.perf_counter() - started
        if step - last_saved >= save_every or step >= total:
            save(step)
            last_saved = step
    if bar is not None:
        bar.close()
    clf.eval()
    return {
        "steps": step,
        "seconds": seconds,
        "history": history,
        "batch_size": bs,
        "lr": lr_256,
        "base_lr": base_lr,
        "notes": notes,
    }


def pick_lr(lrs: Sequence[float], score: Callable[[float], tuple[float, float]]) -> tuple[float, dict]:
    """The learning rate whose ``score(lr)`` = (validation top-1, minus validation loss) is highest, and
    {lr: score} of all; a tie goes to the smaller rate (the safer one on a noisy, small validation split)."""
    scores = {lr: score(lr) for lr in lrs}
    best = max(sorted(lrs), key=lambda lr: scores[lr])  # max keeps the first of equals: the smallest rate
    return best, scores


def fit_classifier(
    make: Callable[[], Classifier],
    train: EvalData,
    recipe: RecipeConfig,
    device: torch.device | str = "cpu",
    workers: int = 2,
    progress: bool = False,
    ckpt_dir: Path | None = None,
    resume: bool = False,
    source: str | None = None,
    protocol: str = "finetune",
    seed: int = 0,
    keep: int = 2,
) -> tuple[Classifier, dict]:
    """The learning rate chosen on a validation split of ``train``, then the classifier that is kept.

    ``make()`` builds a fresh classifier, the same one every call (same backbone weights, head of ``seed``).
    Each rate of ``recipe.lrs()`` trains one from ``train`` minus ``recipe.val_fraction`` of each class for the
    full budget, and is scored on that part at the end (top-1, ties broken by the loss). With ``recipe.refit``
    a last run trains at the chosen rate on all of ``train`` and is kept; without, the best run is kept (and
    saved in ``ckpt_dir`` when given). Only the kept run writes checkpoints: resuming one skips the selection.
    A single rate, or a set too small to hold out an image, trains once at ``recipe.lr`` with no selection.

    Returns (classifier in eval mode, train_classifier's dict of the kept run + 'selection': {'lrs',
    'val_top1', 'val_loss', 'curves' ({lr: history}), 'n_train', 'n_val', 'refit'} or None).
    """
    args = dict(device=device, workers=workers, progress=progress, protocol=protocol, seed=seed)
    if resume and ckpt_dir is not None and latest_checkpoint(ckpt_dir) is not None:
        clf = make()
        stats = train_classifier(
            clf, train, recipe, ckpt_dir=ckpt_dir, resume=True, source=source, keep=keep, **args
        )
        return clf, {**stats, "selection": stats["notes"].get("selection")}
    lrs, fit_idx, val_idx = _selection(train, recipe, seed)
    if len(lrs) > 1 and len(val_idx) == 0:
        log.warning("too few labels to hold out a validation split: training at recipe.lr %g", recipe.lr)
    if len(lrs) == 1 or len(val_idx) == 0 or len(fit_idx) < 2:
        clf, lr = make(), lrs[0] if len(lrs) == 1 else recipe.lr
        stats = train_classifier(
            clf, train, recipe, lr=lr, ckpt_dir=ckpt_dir, source=source, keep=keep, **args
        )
        return clf, {**stats, "selection": None}
    fit, val = train.subset(fit_idx), train.subset(val_idx, f"{train.name} (validation)")
    runs: dict[float, dict] = {}
    kept: list = [None, None]  # [score, classifier] of the best run so far, when that run is the one kept

    def score(lr: float) -> tuple[float, float]:
        clf = make()
        runs[lr] = train_classifier(clf, fit, recipe, lr=lr, val=val, **args)
        last = runs[lr]["history"][-1] if runs[lr]["history"] else {}
        if last.get("step") == runs[lr]["steps"] and "val_top1" in last:  # scored at the last step already
            top1, loss = last["val_top1"], last["val_loss"]
        else:
            top1, loss = validation_scores(clf, val, workers=workers)
        log.info("%s: lr %g -> validation top-1 %.4f, loss %.4f", protocol, lr, top1, loss)
        if not recipe.refit and (kept[0] is None or (top1, -loss) > kept[0]):
            kept[:] = [(top1, -loss), clf]  # only one trained copy held at a time
        return top1, -loss

    best, scores = pick_lr(lrs, score)
    selection = {
        "lrs": lrs,
        "val_top1": {str(lr): s[0] for lr, s in scores.items()},
        "val_loss": {str(lr): -s[1] for lr, s in scores.items()},
        "curves": {str(lr): runs[lr]["history"] for lr in lrs},
        "n_train": len(fit),
        "n_val": len(val),
        "refit": recipe.refit,
    }
    if recipe.refit:
        clf = make()
        notes = {"selection": selection}
        stats = train_classifier(
            clf, train, recipe, lr=best, ckpt_dir=ckpt_dir, source=source, keep=keep, notes=notes, **args
        )
        return clf, {**stats, "selection": selection}
    clf, stats = kept[1], runs[best]
    if ckpt_dir is not None:
        extra = {
            "step": stats["steps"],
            "total_steps": stats["steps"],
            "lr": best,
            "history": stats["history"],
        }
        extra["notes"] = {"selection": selection}
        save_classifier(clf, ckpt_dir, protocol, source, step=stats["steps"], extra=extra, keep=keep)
    return clf, {**stats, "selection": selection}


def new_classifier(backbone: nn.Module, weights: Weights, train: EvalData, seed: int = 0) -> Classifier:
    """``backbone`` (the network of ``weights``, trained or at random initialisation) with a new linear head for
    train's classes, its input train's images as ``weights`` describes them (:meth:`EvalData.fitted`).

    The backbone is used as it is (not copied): pass a copy to keep the original.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_head(feature_dim(backbone), len(train.classes), bn=False)
        torch.nn.init.normal_(head[1].weight, std=0.01)
        torch.nn.init.zeros_(head[1].bias)
    # the resize mode of weights holding a classifier is that of its own training images, not of these
    preprocess = train.fitted(weights.preprocess.with_resize("center_crop"))
    return Classifier(backbone, head, train.classes, weights.model, preprocess, weights.recipe)


# ============ the finetune command ============


@dataclass
class FinetuneConfig(SplitConfig):
    seed: int = 0
    """Seed of the new head, of the random initialisation (init 'random') and of the data order."""
    init: Literal["pretrained", "random"] = "pretrained"
    """'random': the same network from scratch (the supervised baseline)."""
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    """How the classifier is trained: steps, batch, learning-rate grid and schedule, augmentation."""
    out_dir: str | None = None
    """Checkpoints of the classifier (default RUN/finetune, or RUN/finetune-scratch)."""
    results: str | None = None
    """Folder of the JSON result; null: RUN/eval."""
    device: str = "auto"
    """'auto' (this process's GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:1' ..."""
    workers: int = 2
    """DataLoader worker processes that decode and augment image files (0: in this process)."""
    progress: bool = True
    """Show progress bars."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before training when the estimate (a few steps timed, times the steps of every run of the
    learning-rate grid and the refit) is over this many minutes; 0 or null: no limit."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("finetune needs weights (checkpoint=RUN_FOLDER_OR_FILE)")
        cost.check_max_minutes(self.max_minutes)


def run_finetune(cfg: FinetuneConfig, resume: bool = False) -> dict:
    """Fine-tune (or train from scratch), score on the test set, write RUN/eval/finetune[-scratch].json."""
    weights = load_weights(cfg.checkpoint)
    backbone = weights.random_backbone(cfg.seed) if cfg.init == "random" else weights.build_backbone()
    train, test = split_data(cfg, weights)
    run_dir = weights.run_dir
    suffix = "-scratch" if cfg.init == "random" else ""
    out = Path(cfg.out_dir) if cfg.out_dir else run_dir / f"finetune{suffix}"
    device = resolve_device(cfg.device)

    def make() -> Classifier:
        return new_classifier(
            copy.deepcopy(backbone), weights, train, cfg.seed
        )  # each run from the same start

    resuming = resume and latest_checkpoint(out / "checkpoints") is not None
    what = "training from scratch" if cfg.init == "random" else "fine-tuning"
    part = training_part(what, make, [train], cfg.recipe, device, cfg.workers, cfg.seed, resuming)
    advice = (
        ", lower recipe.steps, try one learning rate (recipe.lr_factors=[1.0]), or train on a GPU (device)"
    )
    cost.check("finetune", [part], cfg.max_minutes, advice)
    clf, stats = fit_classifier(
        make,
        train,
        cfg.recipe,
        device,
        cfg.workers,
        cfg.progress,
        out / "checkpoints",
        resume,
        weights.source,
        seed=cfg.seed,
    )
    top1, top5, confusion = evaluate_classifier(clf, test, workers=cfg.workers)
    result = {
        "kind": "finetune",
        "model": "supervised" if cfg.init == "random" else "pretrained",
        "checkpoint": weights.source,
        "classifier": str(latest_checkpoint(out / "checkpoints")),
        "train": train.name,
        "test": test.name,
        "n_train": len(train),
        "n_test": len(test),
        "top1": top1,
        "top5": top5,
        "classes": train.classes,
        "confusion": confusion.tolist(),
        "config": to_dict(cfg),
        **stats,
    }
    result["result_file"] = str(
        write_result(Path(cfg.results) if cfg.results else run_dir / "eval", f"finetune{suffix}", result)
    )
    return result
