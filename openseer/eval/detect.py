"""Object detection and instance segmentation with a pretrained trunk: ``openseer detect``.

SEER (Goyal et al. 2021) reports its trunks as the backbone of a Mask R-CNN (He et al. 2017) fine-tuned on COCO.
Here the trunk (any weights file :func:`openseer.weights.load_weights` reads) becomes the backbone of torchvision's
Mask R-CNN, or Faster R-CNN (Ren et al. 2015) when the data have boxes only, with a feature pyramid
(:mod:`openseer.models.dense`); it is fine-tuned on a COCO-format set and scored by COCO AP (pycocotools,
:mod:`openseer.eval.coco_ap`). The detector, its heads and its losses are torchvision's; this module builds them,
runs the loop and checkpoints it.

The recipe is torchvision's detection reference (references/detection: SGD with momentum 0.9, weight decay
1e-4, learning rate 0.02 for 16 images, a linear warm-up from 0.001 of it, x0.1 after 16 and 22 of 26 epochs,
horizontal flips), with the budget in steps: the milestones and the warm-up are fractions of the run, so a short
run keeps its shape, and the learning rate follows the batch linearly. Like torchvision's pretrained detection
backbones, a pretrained trunk trains its last three stages with frozen BatchNorm statistics, and a trunk at random
initialisation (``init: random``, the baseline) trains every stage and its BatchNorm.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.transforms.v2 import functional as TF

from openseer.config import ConfigError, to_dict
from openseer.data.coco import CocoDetection, CocoSet, Invalid, read_coco
from openseer.data.folders import DataError, Skipped
from openseer.data.images import SkipLog
from openseer.distributed import resolve_device
from openseer.eval import cost
from openseer.eval.coco_ap import coco_ap, detections_to_coco
from openseer.eval.linear import write_result
from openseer.eval.recipe import step_lr
from openseer.fileio.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from openseer.models.dense import FPN_LEVELS, TRAINABLE_STAGES, backbone_with_fpn, dense_layout
from openseer.train.pretrain import TrainingDiverged
from openseer.weights import Weights, load_weights

log = logging.getLogger(__name__)

KIND = "detector"
"""``kind`` of a detection checkpoint."""


@dataclass
class DetectModelConfig:
    masks: bool | None = None
    """Mask R-CNN (true) or Faster R-CNN (false); null: Mask R-CNN when every training instance has a
    segmentation, Faster R-CNN when none has."""
    fpn_channels: int = 256
    """Channels of the feature pyramid (torchvision's 256)."""
    trainable_stages: int | None = None
    """Trunk stages fine-tuned, counted from the last (0-5, the stem being the fifth); null: 3 for a pretrained
    trunk, 5 at random initialisation (torchvision's trainable_backbone_layers)."""
    frozen_batchnorm: bool | None = None
    """Keep the trunk's BatchNorm statistics and scales fixed; null: fixed for a pretrained trunk, trained at
    random initialisation (torchvision's detection backbones do the same)."""
    min_size: int = 800
    """Images are resized so their shorter side is min_size (torchvision's 800), unless the longer would
    exceed max_size."""
    max_size: int = 1333
    """Longest side after resizing (torchvision's 1333)."""
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    """Anchor side in pixels on each pyramid level (strides 4, 8, 16, 32 and the pooled 64), aspect ratios 0.5,
    1, 2: torchvision's."""
    box_head_size: int = 1024
    """Width of the two fully connected layers of the box head (torchvision's 1024)."""
    mask_head_channels: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    """Channels of the mask head's 3x3 convolutions, one entry per layer (torchvision's four of 256)."""
    box_batch_size_per_image: int = 512
    """Region proposals sampled per image to train the box head (torchvision's 512, a quarter positive)."""
    score_threshold: float = 0.05
    """Detections scoring below this are dropped at test time (torchvision's 0.05)."""
    detections_per_image: int = 100
    """Most detections kept per test image (COCO's AP counts up to 100)."""

    def validate(self) -> None:
        levels = len(FPN_LEVELS) + 1
        if len(self.anchor_sizes) != levels or any(s < 1 for s in self.anchor_sizes):
            raise ConfigError(
                f"config key 'model.anchor_sizes': got {self.anchor_sizes}, expected {levels} positive sizes "
                "(one per pyramid level: strides 4, 8, 16, 32, 64)"
            )
        if self.trainable_stages is not None and not 0 <= self.trainable_stages <= TRAINABLE_STAGES:
            raise ConfigError(
                f"config key 'model.trainable_stages': got {self.trainable_stages}, expected 0 to "
                f"{TRAINABLE_STAGES} (or null)"
            )
        if self.min_size < 16 or self.max_size < self.min_size:
            raise ConfigError(
                f"config keys 'model.min_size' and 'model.max_size': got {self.min_size} and {self.max_size}, "
                "expected 16 <= min_size <= max_size"
            )
        if self.fpn_channels < 1 or self.box_head_size < 1 or not self.mask_head_channels:
            raise ConfigError(
                "config keys 'model.fpn_channels', 'model.box_head_size' and "
                "'model.mask_head_channels' must be positive (and the last not empty)"
            )


@dataclass
class DetectRecipe:
    steps: int = 1000
    """Optimisation steps, whatever the size of the training set."""
    batch_size: int = 4
    """Images per step (capped at the size of the training set)."""
    lr: float = 0.02
    """Learning rate for a batch of 16 images (torchvision's reference), scaled linearly with the batch used."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 1e-4
    """L2 weight decay."""
    warmup_fraction: float = 0.05
    """Share of the steps over which the learning rate rises linearly from warmup_factor of it (torchvision's
    reference: the first 1000 steps of a COCO run)."""
    warmup_factor: float = 0.001
    """Learning rate at the first step, as a fraction of the full rate."""
    milestones: list[float] = field(default_factory=lambda: [16 / 26, 22 / 26])
    """Where the learning rate is multiplied by gamma, as fractions of the steps (torchvision: epochs 16 and 22
    of 26)."""
    gamma: float = 0.1
    """Factor applied to the learning rate at each milestone."""
    flip_p: float = 0.5
    """Probability of a horizontal flip of a training image (with its boxes and masks)."""
    log_points: int = 50
    """Evenly spaced steps at which the mean losses since the last point are logged."""

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.log_points < 1:
            raise ConfigError(
                "config keys 'recipe.steps', 'recipe.batch_size' and 'recipe.log_points' must be >= 1"
            )
        if self.lr <= 0:
            raise ConfigError(f"config key 'recipe.lr': got {self.lr}, expected > 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 < self.warmup_factor <= 1:
            raise ConfigError(
                "config keys 'recipe.warmup_fraction' in [0, 1) and 'recipe.warmup_factor' in (0, 1]"
            )
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(
                f"config key 'recipe.milestones': got {self.milestones}, expected fractions in (0, 1)"
            )


@dataclass
class DetectConfig:
    checkpoint: str = ""
    """Weights of the trunk: a run folder, a ckpt-*.pt, a file written by import-weights or export, or a
    SEER/VISSL or timm checkpoint."""
    train: str = ""
    """COCO instances JSON of the training set, or a folder holding instances.json."""
    train_images: str | None = None
    """Folder the training file_names are relative to; null: the JSON's folder."""
    test: str | None = None
    """COCO instances JSON (or folder) of the test set, with the training set's categories; null: test_fraction
    of the training images are held out."""
    test_images: str | None = None
    """Folder the test file_names are relative to; null: the JSON's folder."""
    test_fraction: float = 0.2
    """Share of the training images held out for testing when no test set is given."""
    split_seed: int = 0
    """Seed of that split."""
    invalid_annotations: Invalid = "error"
    """An annotation that does not fit its image or categories stops the command ('error', listing them all) or
    is dropped ('skip', logged and listed in the result)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """'random': the same detector with its trunk at random initialisation (the baseline)."""
    seed: int = 0
    """Seed of the new layers, of the random initialisation (init 'random'), of the data order and of the
    flips."""
    model: DetectModelConfig = field(default_factory=DetectModelConfig)
    """The detector built on the trunk: torchvision's Mask or Faster R-CNN with a feature pyramid."""
    recipe: DetectRecipe = field(default_factory=DetectRecipe)
    """How it is fine-tuned: torchvision's detection reference, with the budget in steps."""
    out_dir: str | None = None
    """Checkpoints of the detector (default RUN/detect, or RUN/detect-scratch)."""
    results: str | None = None
    """Folder of the result JSON (default RUN/eval): detect.json or detect-scratch.json."""
    checkpoint_every: int | None = None
    """Steps between checkpoints; null: about 20 per run."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept."""
    eval_batch_size: int = 4
    """Test images per forward pass."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1', ..."""
    workers: int = 2
    """Data-loading processes (0: load in the main process)."""
    progress: bool = True
    """Show a progress bar."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before training when the estimate (a few steps timed, times recipe.steps) is over this many minutes;
    0 or null: no limit."""

    def validate(self) -> None:
        cost.check_max_minutes(self.max_minutes)
        if not self.checkpoint or not self.train:
            raise ConfigError(
                "detect needs weights and a training set (checkpoint=WEIGHTS train=INSTANCES_JSON)"
            )
        if not 0 < self.test_fraction < 1:
            raise ConfigError(
                f"config key 'test_fraction': got {self.test_fraction}, expected a fraction in (0, 1)"
            )
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"config key 'checkpoint_every': got {self.checkpoint_every}, expected >= 1")
        if self.eval_batch_size < 1 or self.workers < 0 or self.keep_checkpoints < 1:
            raise ConfigError(
                "config keys 'eval_batch_size' and 'keep_checkpoints' must be >= 1, 'workers' >= 0"
            )


# ============ the detector ============


def dense_trunk(
    weights: Weights, init: Literal["pretrained", "random"] = "pretrained", seed: int = 0
) -> nn.Module:
    """The trunk of ``weights`` in the standard stride-4..32 layout (:func:`openseer.models.dense.dense_layout`),
    with those weights or, with ``init='random'``, at random initialisation drawn with ``seed``; eval mode, CPU."""
    dense = replace(weights, model=dense_layout(weights.model))
    return dense.random_backbone(seed) if init == "random" else dense.build_backbone()


def build_detector(
    trunk: nn.Module,
    num_classes: int,
    masks: bool,
    cfg: DetectModelConfig,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    pretrained: bool,
) -> nn.Module:
    """torchvision's Mask R-CNN (``masks``) or Faster R-CNN on ``trunk`` with a feature pyramid, for
    ``num_classes`` categories plus the background; images are normalised with the trunk's ``mean`` and ``std``.

    The new layers are drawn from torch's global RNG (seed it first). ``trunk`` becomes part of the detector.
    """
    trainable = (
        cfg.trainable_stages if cfg.trainable_stages is not None else (3 if pretrained else TRAINABLE_STAGES)
    )
    frozen = cfg.frozen_batchnorm if cfg.frozen_batchnorm is not None else pretrained
    backbone = backbone_with_fpn(trunk, cfg.fpn_channels, trainable, frozen)
    anchors = AnchorGenerator(
        tuple((size,) for size in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes)
    )
    common: dict[str, Any] = dict(
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.box_head_size),  # 7x7: the RoIAlign output
        box_predictor=FastRCNNPredictor(cfg.box_head_size, num_classes + 1),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_score_thresh=cfg.score_threshold,
        box_detections_per_img=cfg.detections_per_image,
    )
    if not masks:
        return FasterRCNN(backbone, **common)
    mask_head = MaskRCNNHeads(cfg.fpn_channels, cfg.mask_head_channels, dilation=1)
    mask_predictor = MaskRCNNPredictor(
        cfg.mask_head_channels[-1], cfg.mask_head_channels[-1], num_classes + 1
    )
    return MaskRCNN(backbone, mask_head=mask_head, mask_predictor=mask_predictor, **common)


# ============ training ============


def _step_seed(seed: int, step: int) -> int:
    """Seed of torch's RNG at a step: its flips and torchvision's sampling of anchors and proposals."""
    return seed * 1_000_003 + step


def _order_seed(seed: int, epoch: int) -> int:
    """Seed of an epoch's order of the images: from another range than the steps' seeds."""
    return 2**40 + seed * 1_000_003 + epoch


class _StepBatches(Sampler[list[int]]):
    """The image indices of steps ``start``..``total - 1``: epoch e is a permutation seeded by (seed, e) cut into
    batches, so the batch of a step depends on (seed, step) only and a resumed run draws what it would have."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int) -> None:
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.per_epoch = math.ceil(n / batch_size)

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        perm, epoch = None, -1
        for step in range(self.start, self.total):
            if step // self.per_epoch != epoch:
                epoch = step // self.per_epoch
                perm = torch.randperm(
                    self.n, generator=torch.Generator().manual_seed(_order_seed(self.seed, epoch))
                )
            i = step % self.per_epoch
            yield perm[i * self.bs : (i + 1) * self.bs].tolist()


def _flipped(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """A horizontal flip of an image with its boxes and masks (torchvision's v2 functional transforms)."""
    from torchvision import tv_tensors

    h, w = image.shape[-2:]
    out = dict(target)
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    out["boxes"] = TF.horizontal_flip(boxes).as_subclass(torch.Tensor)
    if "masks" in target:
        out["masks"] = TF.horizontal_flip(tv_tensors.Mask(target["masks"])).as_subclass(torch.Tensor)
    return TF.horizontal_flip(image), out


def learning_rate(base: float, step: int, total: int, recipe: DetectRecipe) -> float:
    """Linear warm-up from ``warmup_factor * base`` over ``warmup_fraction`` of the steps, then step decay at
    the milestones."""
    warmup = round(recipe.warmup_fraction * total)
    factor = 1.0
    if step < warmup:
        alpha = step / warmup
        factor = recipe.warmup_factor * (1 - alpha) + alpha
    return step_lr(base * factor, step, [round(m * total) for m in recipe.milestones], recipe.gamma)


class _Losses:
    """Mean of each loss since the last logged point."""

    def __init__(self, pending: dict[str, float] | None = None, count: int = 0) -> None:
        self.sums, self.count = dict(pending or {}), count

    def add(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def point(self, step: int, lr: float) -> dict[str, float]:
        means = {name: value / max(1, self.count) for name, value in self.sums.items()}
        self.sums, self.count = {}, 0
        return {"step": step, "lr": lr, "loss": sum(means.values()), **means}


def _resume_state(ckpt_dir: Path, categories: list[dict], device: torch.device) -> dict | None:
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        log.warning("--resume: no usable checkpoint in %s, starting from the beginning", ckpt_dir)
        return None
    state = load_checkpoint(path, map_location=device)
    if state.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a detection checkpoint; use another out_dir")
    if state.get("categories") != categories:
        raise DataError(
            f"the categories of the training set differ from those of the checkpoint {path}; resume with the "
            "same data (or use another out_dir)"
        )
    state["path"] = path
    return state


def _detect_step(
    model: nn.Module, opt: torch.optim.Optimizer, items: list, device: torch.device, step: int
) -> dict[str, torch.Tensor]:
    """One optimisation step on ``items`` ((image uint8 (3, H, W), target) pairs); the detector's losses."""
    inputs = [image.to(device).float().div_(255) for image, _ in items]
    targets = [{k: v.to(device) for k, v in t.items() if k != "image_id"} for _, t in items]
    parts = model(inputs, targets)
    loss = sum(parts.values())
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"detection training diverged at step {step} (loss {float(loss)}): lower recipe.lr and "
            "rerun (--resume continues from the last checkpoint)"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return parts


def detect_step_seconds(
    model: nn.Module, data: CocoDetection, recipe: DetectRecipe, device: torch.device, seed: int = 0
) -> float:
    """Seconds of one training step of :func:`train_detector` (a batch of the recipe's size, its images read),
    the mean of two steps after a warm-up step, on a copy of ``model``; the random streams are left as they
    were."""
    bs = min(recipe.batch_size, len(data))
    order = iter(_StepBatches(len(data), bs, seed, 0, 3))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        copy = deepcopy(model).to(device).train()
        params = [p for p in copy.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.0, momentum=recipe.momentum)

        def step() -> None:
            items = [item for item in (data[i] for i in next(order)) if not isinstance(item, Skipped)]
            if items:
                _detect_step(copy, opt, items, device, 0)

        return cost.time_step(step)


def train_detector(
    model: nn.Module,
    data: CocoDetection,
    recipe: DetectRecipe,
    *,
    device: torch.device,
    seed: int = 0,
    workers: int = 2,
    ckpt_dir: Path | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    keep: int = 2,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (a torchvision detector) on ``data`` for ``recipe.steps`` steps; checkpoints (model,
    optimiser, step, curve) every ``checkpoint_every`` steps and at the end in ``ckpt_dir``, resumed from there
    with ``resume``. Every random draw of a step (flips, torchvision's sampling of anchors and proposals) comes
    from torch's RNG seeded with (seed, step), so a resumed run repeats the steps it would have made.

    Returns {'steps', 'seconds' (training, data loading included), 'images' (trained on), 'batch_size', 'lr'
    (applied, for the batch), 'history': [{'step', 'lr', 'loss', 'loss_classifier', ...}], 'skipped' (unreadable
    images, with the reason)}.
    """
    model.to(device)
    n = len(data)
    bs = min(recipe.batch_size, n)
    total = recipe.steps
    base_lr = recipe.lr * bs / 16
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    step, seconds, images, history, losses, skipped = 0, 0.0, 0, [], _Losses(), SkipLog()
    state = _resume_state(ckpt_dir, data.coco.categories, device) if resume and ckpt_dir is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, seconds, images, history = state["step"], state["seconds"], state["images"], state["history"]
        losses = _Losses(state["pending"], state["pending_count"])
        skipped.extend(tuple(e) for e in state["skipped"])
        if state["total_steps"] != total:
            log.warning("--resume keeps the interrupted run's %d steps, not %d", state["total_steps"], total)
            total = state["total_steps"]
        log.info("resumed detection training from %s at step %d of %d", state["path"], step, total)
    every = checkpoint_every or max(1, total // 20)
    log_every = max(1, math.ceil(total / recipe.log_points))

    def save(at: int) -> None:
        if ckpt_dir is None:
            return
        state = {
            "kind": KIND,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": at,
            "total_steps": total,
            "seconds": seconds,
            "images": images,
            "history": history,
            "pending": losses.sums,
            "pending_count": losses.count,
            "skipped": skipped.entries,
            "categories": data.coco.categories,
            **(extra or {}),
        }
        save_checkpoint(state, ckpt_dir, at, keep=keep)

    loader = DataLoader(
        data, batch_sampler=_StepBatches(n, bs, seed, step, total), num_workers=workers, collate_fn=list
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc="detect", unit="step", dynamic_ncols=True, leave=False)
    model.train()
    started = time.perf_counter()
    for batch in loader:
        lr = learning_rate(base_lr, step, total, recipe)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(_step_seed(seed, step))
        items = []
        for item in batch:
            if isinstance(item, Skipped):
                skipped.add(item.path, item.reason)
            elif float(torch.rand(())) < recipe.flip_p:
                items.append(_flipped(*item))
            else:
                items.append(item)
        if items:
            parts = _detect_step(model, opt, items, device, step)
            losses.add({k: float(v.detach()) for k, v in parts.items()})
            images += len(items)
        step += 1
        if step % log_every == 0 or step == total:
            history.append(losses.point(step, lr))
            log.debug("step %d: %s", step, history[-1])
        if bar is not None:
            bar.update(1)
            if history:
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", lr=f"{lr:.3g}")
        if step % every == 0 or step == total:
            seconds += time.perf_counter() - started
            save(step)
            started = time.perf_counter()
    if bar is not None:
        bar.close()
    model.eval()
    if len(skipped):
        log.warning("training %s", skipped.distinct().summary())
    return {
        "steps": step,
        "seconds": seconds,
        "images": images,
        "batch_size": bs,
        "lr": base_lr,
        "history": history,
        "skipped": skipped.distinct().entries,
    }


# ============ testing ============


@torch.no_grad()
def predict_coco(
    model: nn.Module,
    data: CocoDetection,
    device: torch.device,
    batch_size: int = 4,
    workers: int = 2,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[int], SkipLog, float]:
    """(COCO results of every readable image, the ids of those images, the unreadable ones, seconds)."""
    model.to(device).eval()
    categories = [c["id"] for c in data.coco.categories]
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=list)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="test", unit="batch", dynamic_ncols=True, leave=False)
    results: list[dict[str, Any]] = []
    done: list[int] = []
    skipped = SkipLog()
    started = time.perf_counter()
    for batch in loader:
        items = []
        for item in batch:
            if isinstance(item, Skipped):
                skipped.add(item.path, item.reason)
            else:
                items.append(item)
        if not items:
            continue
        outputs = model([image.to(device).float().div_(255) for image, _ in items])
        for output, (_, target) in zip(outputs, items, strict=True):
            results += detections_to_coco(output, target["image_id"], categories)
            done.append(target["image_id"])
    return results, done, skipped, time.perf_counter() - started


# ============ the detect command ============


def _data(cfg: DetectConfig) -> tuple[CocoSet, CocoSet]:
    train = read_coco(cfg.train, cfg.train_images, cfg.invalid_annotations)
    if cfg.test is None:
        return train.split(cfg.test_fraction, cfg.split_seed)
    test = read_coco(cfg.test, cfg.test_images, cfg.invalid_annotations)
    if [c["id"] for c in test.categories] != [c["id"] for c in train.categories]:
        raise DataError(
            f"the test set's categories {[c['id'] for c in test.categories]} are not the training set's "
            f"{[c['id'] for c in train.categories]} (category ids of {cfg.test} and {cfg.train})"
        )
    return train, test


def run_detect(cfg: DetectConfig, resume: bool = False) -> dict[str, Any]:
    """Fine-tune a detector on ``cfg.train``, score it on the test set, write RESULTS/detect[-scratch].json."""
    weights = load_weights(cfg.checkpoint)
    train, test = _data(cfg)
    masks = train.with_masks() if cfg.model.masks is None else cfg.model.masks
    if masks and not train.with_masks():
        raise DataError(f"model.masks=true, but the instances of {train.source} have no segmentation")
    pretrained = cfg.init == "pretrained"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_detector(
            dense_trunk(weights, cfg.init, cfg.seed),
            len(train.categories),
            masks,
            cfg.model,
            weights.preprocess.mean,
            weights.preprocess.std,
            pretrained,
        )
    suffix = "" if pretrained else "-scratch"
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir else weights.run_dir / f"detect{suffix}"
    device = resolve_device(cfg.device)
    training = CocoDetection(train, masks)
    seconds = detect_step_seconds(model, training, cfg.recipe, device, cfg.seed)
    bs = min(cfg.recipe.batch_size, len(training))
    part = cost.Part("detection training", cfg.recipe.steps, "step", seconds, f"of {bs} images")
    advice = ", lower recipe.steps or model.min_size/max_size, or train on a GPU (device)"
    cost.check("detect", [part], cfg.max_minutes, advice)
    stats = train_detector(
        model,
        training,
        cfg.recipe,
        device=device,
        seed=cfg.seed,
        workers=cfg.workers,
        ckpt_dir=out / "checkpoints",
        resume=resume,
        checkpoint_every=cfg.checkpoint_every,
        keep=cfg.keep_checkpoints,
        progress=cfg.progress,
        extra={"config": to_dict(cfg), "source": weights.source, "masks": masks},
    )
    detections, done, unreadable, test_seconds = predict_coco(
        model, CocoDetection(test, masks=False), device, cfg.eval_batch_size, cfg.workers, cfg.progress
    )
    read = set(done)
    scored = test.subset([i for i, img in enumerate(test.images) if img.id in read])
    result: dict[str, Any] = {
        "kind": "detect",
        "detector": "Mask R-CNN" if masks else "Faster R-CNN",
        "model": "pretrained" if pretrained else "random",
        "checkpoint": weights.source,
        "arch": weights.model.arch,
        "train": train.source,
        "test": test.source,
        "n_train": len(train),
        "n_test": len(scored),
        "categories": [c["name"] for c in train.categories],
        "masks": masks,
    }
    for iou_type in ("bbox", "segm") if masks else ("bbox",):
        figures = coco_ap(scored.coco_dict(), detections, iou_type)
        result[f"{iou_type}_ap"] = figures["AP"]
        result[iou_type] = figures
    result.update(
        steps=stats["steps"],
        batch_size=stats["batch_size"],
        lr=stats["lr"],
        train_seconds=stats["seconds"],
        train_images_per_second=stats["images"] / stats["seconds"] if stats["seconds"] else None,
        test_seconds=test_seconds,
        test_images_per_second=len(done) / test_seconds if test_seconds else None,
        device=str(device),
        skipped_annotations=train.skipped + test.skipped,
        skipped_images=stats["skipped"] + unreadable.entries,
        history=stats["history"],
        detector_checkpoint=str(latest_checkpoint(out / "checkpoints")),
        config=to_dict(cfg),
    )
    folder = Path(cfg.results).expanduser() if cfg.results else weights.run_dir / "eval"
    result["result_file"] = str(write_result(folder, f"detect{suffix}", result))
    return result
