"""Fine-tuning: the pretrained backbone plus a new linear head, trained end to end with augmentation.

SEER's ImageNet recipe (Goyal et al. 2021, Sec. 4.1): SGD with momentum 0.9, weight decay 1e-4, learning rate
0.0125 for a batch of 256 multiplied by 0.1 after 30 of 35 epochs, RandomResizedCrop + horizontal flip. It is
scaled to the data: the batch is capped at the training-set size and the learning rate follows the batch
linearly, and the milestones are fractions of the run, so a shorter or longer run keeps the same shape.
The same loop, from a random initialisation, is the supervised-from-scratch baseline.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
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
from openseer.data.folders import DataError, LabelledImages
from openseer.data.labelled import EvalData
from openseer.data.multicrop import AugmentSpec, CropSpec
from openseer.distributed import resolve_device
from openseer.eval.features import collate_skipping
from openseer.eval.linear import write_result
from openseer.eval.predict import (
    Classifier,
    build_head,
    evaluate_classifier,
    save_classifier,
)
from openseer.eval.split import SplitConfig, split_data
from openseer.fileio.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from openseer.models import load_state_checked
from openseer.models.backbone import feature_dim
from openseer.train.config import PretrainConfig
from openseer.weights import is_classifier_state, load_weights

log = logging.getLogger(__name__)


@dataclass
class RecipeConfig:
    epochs: float = 35.0
    """Epochs over the training images; the milestones scale with them."""
    batch_size: int = 256
    """Images per step (capped at the training-set size)."""
    lr: float = 0.0125
    """For a batch of 256; scaled linearly with the batch actually used."""
    milestones: list[float] = field(default_factory=lambda: [30 / 35])
    """Where the learning rate is multiplied by `gamma`, as fractions of all steps (SEER: after epoch 30 of 35)."""
    gamma: float = 0.1
    """Factor applied to the learning rate at each milestone."""
    weight_decay: float = 1e-4
    """L2 weight decay."""
    momentum: float = 0.9
    """SGD momentum."""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    """[min, max] area of the random resized crop, as a fraction of the image."""
    flip_p: float = 0.5
    """Probability of a horizontal flip."""

    def validate(self) -> None:
        if self.epochs <= 0 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("recipe: epochs and lr must be > 0 and batch_size >= 2")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"recipe.milestones: got {self.milestones}, expected fractions in (0, 1)")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"recipe.crop_scale: got {self.crop_scale}, expected 0 < min <= max <= 1")


def step_lr(base: float, step: int, milestones: list[int], gamma: float) -> float:
    """Step decay: ``base * gamma ** (number of milestones already reached)``."""
    return base * gamma ** sum(step >= m for m in milestones)


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
            flip_p=recipe.flip_p, color_p=0.0, grayscale_p=0.0, blur_p=0.0, mean=clf.preprocess.mean, std=clf.preprocess.std
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
    for x, y in loader:
        if x is not None and len(x) > 1:
            yield x, y


def plan(n: int, recipe: RecipeConfig) -> tuple[int, int, int]:
    """(batch size, steps per epoch, total steps) for n training images.

    A last batch of one image is dropped: BatchNorm cannot train on it.
    """
    if n < 2:
        raise DataError(f"fine-tuning needs at least 2 labelled images, got {n}")
    bs = min(recipe.batch_size, n)
    steps_per_epoch = n // bs + (1 if n % bs > 1 else 0)
    return bs, steps_per_epoch, max(1, round(recipe.epochs * steps_per_epoch))


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
) -> dict:
    """Train backbone and head end to end on a labelled set; checkpoints (and resume) at epoch ends when
    ``ckpt_dir`` is given (the newest ``keep`` kept). Returns {'steps', 'seconds', 'history': [{'epoch', 'step', 'loss', 'lr'}]}."""
    device = torch.device(device)
    clf.to(device)
    bs, steps_per_epoch, total = plan(len(train), recipe)
    base_lr = recipe.lr * bs / 256
    milestones = [round(m * total) for m in recipe.milestones]
    opt = torch.optim.SGD(
        clf.parameters(), lr=base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    step, history, seconds, lr = 0, [], 0.0, base_lr
    if resume and ckpt_dir is not None:
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            log.warning("--resume: no usable checkpoint in %s, starting from the beginning", ckpt_dir)
        else:
            state = load_checkpoint(path, map_location=device)
            if not is_classifier_state(state) or "optimizer" not in state:
                raise CheckpointError(f"{path} is not a fine-tuning checkpoint; use another out_dir")
            if list(state.get("classes", [])) != list(train.classes):
                raise DataError(
                    f"the classes of {train.name} ({', '.join(train.classes[:10])}) differ from those of the "
                    f"checkpoint {path} ({', '.join(list(state.get('classes', []))[:10])}); resume with the "
                    "same labelled data"
                )
            load_state_checked(clf, state["model"], source=str(path))
            opt.load_state_dict(state["optimizer"])
            if state["total_steps"] != total:
                log.warning(
                    "--resume keeps the interrupted run's schedule (%d steps, not %d): the recipe it started with",
                    state["total_steps"],
                    total,
                )
            step, total = state["step"], state["total_steps"]
            history, seconds = state.get("history", []), state.get("seconds", 0.0)
            milestones = [round(m * total) for m in recipe.milestones]
            log.info("resumed fine-tuning from %s at step %d of %d", path, step, total)

    def save(at: int) -> None:
        if ckpt_dir is None:
            return
        extra = {
            "optimizer": opt.state_dict(),
            "step": at,
            "total_steps": total,
            "history": history,
            "seconds": seconds,
            "recipe": to_dict(recipe),
        }
        save_classifier(clf, ckpt_dir, protocol, source, step=at, extra=extra, keep=keep)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc=protocol, unit="step", dynamic_ncols=True, leave=False)
    while step < total:
        epoch = step // steps_per_epoch
        started, losses = time.perf_counter(), []
        clf.train()
        batches = _train_batches(clf, train, recipe, bs, steps_per_epoch, epoch, workers, seed)
        for x, y in batches:
            if step >= total:
                break
            lr = step_lr(base_lr, step, milestones, recipe.gamma)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(clf(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.3g}")
        step = max(step, min(total, (epoch + 1) * steps_per_epoch))  # unreadable files shorten an epoch
        seconds += time.perf_counter() - started
        mean_loss = sum(losses) / max(1, len(losses))
        history.append({"epoch": epoch + 1, "step": step, "loss": mean_loss, "lr": lr})
        if not math.isfinite(mean_loss):
            log.warning("epoch %d: non-finite loss; consider a lower recipe.lr", epoch + 1)
        save(step)
    if bar is not None:
        bar.close()
    clf.eval()
    return {"steps": step, "seconds": seconds, "history": history, "batch_size": bs, "base_lr": base_lr}


def new_classifier(backbone: nn.Module, pcfg: PretrainConfig, train: EvalData, seed: int = 0) -> Classifier:
    """``backbone`` (trained, or at random initialisation) with a new linear head for train's classes.

    The backbone is used as it is (not copied): pass a copy to keep the original.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_head(feature_dim(backbone), len(train.classes), bn=False)
        torch.nn.init.normal_(head[1].weight, std=0.01)
        torch.nn.init.zeros_(head[1].bias)
    resize = "whole" if train.images is not None else "center_crop"
    return Classifier(backbone, head, train.classes, pcfg, resize)


# ============ the finetune command ============


@dataclass
class FinetuneConfig(SplitConfig):
    seed: int = 0
    """Seed of the new head, of the random initialisation (init 'random') and of the data order."""
    init: Literal["pretrained", "random"] = "pretrained"
    """'random': the same network from scratch (the supervised baseline)."""
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    """The training recipe (SEER's fine-tuning, scaled to the data)."""
    out_dir: str | None = None
    """Checkpoints of the classifier (default RUN/finetune, or RUN/finetune-scratch)."""
    results: str | None = None
    """Folder of the JSON result; null: RUN/eval."""
    device: str = "auto"
    """'auto' (this process's GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:1' ..."""
    workers: int = 2
    """DataLoader worker processes that decode and augment image files (0: in this process)."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("finetune needs weights (checkpoint=RUN_FOLDER_OR_FILE)")


def run_finetune(cfg: FinetuneConfig, resume: bool = False) -> dict:
    """Fine-tune (or train from scratch), score on the test set, write RUN/eval/finetune[-scratch].json."""
    weights = load_weights(cfg.checkpoint)
    pcfg = weights.config
    backbone = weights.random_backbone(cfg.seed) if cfg.init == "random" else weights.build_backbone()
    train, test = split_data(cfg, pcfg)
    clf = new_classifier(backbone, pcfg, train, cfg.seed)
    run_dir = weights.run_dir
    suffix = "-scratch" if cfg.init == "random" else ""
    out = Path(cfg.out_dir) if cfg.out_dir else run_dir / f"finetune{suffix}"
    device = resolve_device(cfg.device)
    stats = train_classifier(
        clf,
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
