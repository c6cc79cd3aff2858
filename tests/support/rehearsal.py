"""A large-scale preset scaled down to a CPU rehearsal: only sizes change, every ratio of the recipe stays.

A rehearsal runs the very recipe a GPU cluster would (crop layout and scales, temperature, epsilon, Sinkhorn
iterations, LARS and what it adapts, peak, start and final lr, weight decay, head depth, strategy, activation
checkpointing) on a small RegNetY at a low resolution, for a few hundred steps.
What changes, and why each change keeps the recipe's shape:

* the trunk: RegNetY-200MF with the small stem (a 32-px crop is too small for a stride-4 stem);
* resolution: every crop side times ``resolution / first crop side``; the blur's sigma (in pixels) likewise;
* initialisation: each residual block's last BatchNorm scale starts at 0 (timm's default; the presets keep
  VISSL's 1): from VISSL's initialisation the small trunk on 32-px crops collapses within 20 steps (embeddings of
  a batch at mean cosine 0.96, loss pinned at ln K, measured on Fashion-MNIST), from timm's it learns; a small
  network on tiny images starts with nearly identical features, the real ones on 224-px crops do not;
* BatchNorm in the head: on (SEER's head has none): without it the small network's embeddings collapse onto
  one point (seer-rg256gf on Fashion-MNIST, one process of 128 images: mean cosine in a batch 0.83 at the start,
  0.99 by step 10 and 1.00 by step 20, loss pinned at ln K; the same by step 20 from VISSL's initialisation, with
  hidden layers 4x wider, and with biases and norms left out of LARS; with the lr rescaled linearly to the batch,
  more slowly: 0.97 by step 40), while with it the rehearsal learns;
* head widths: each hidden layer ``hidden`` wide (the depth is kept), the output dimension is kept;
* prototypes and queue: scaled with the global batch, so that prototypes per image of the global batch, and the
  queue's length in global batches, are the reference run's;
* schedule: warm-up, prototype freezing and the queue's start keep their share of the run (the references give
  them in steps or epochs of a run of ~125,000 steps);
* learning rate: the reference run's own (its per-256 rate times *its* global batch), not rescaled to the
  rehearsal's smaller batch: LARS moves each tensor by lr x trust x |w| per step, whatever the batch, so this
  keeps each step as large as one of the real run's (rescaled linearly, a 128-image rehearsal of a 4,096-image
  recipe would step 32x less: for swav-rn50, loss 4.684 after 30 steps against 4.475 at the reference's rate);
* decoded images cached at the first crop's side and augmented in batches (``data.cache_size``), the data path
  that keeps 2 CPU cores busy with the network rather than with PIL;
* SyncBatchNorm: off (torch has no CPU kernels for it; with 2 processes each normalises its own batch);
* activation checkpointing by block ranges (``parallel.stage_checkpoints``): each range's end moved to the same
  place in the small trunk's shorter stage (SEER 10B's [[2], [7], [9, 17], []] on stages of 2, 7, 17 and 1
  blocks becomes [[1], [1], [2, 4], []] on RegNetY-200MF's 1, 1, 4 and 7), so every stage is split into as many
  ranges as its blocks allow and the stages left whole or unchecked stay so.

``benchmarks/rehearsal.py`` runs it on 2 gloo processes, kills and resumes it, and scores it.
"""

from __future__ import annotations

from typing import Any

from openseer.config import load_config
from openseer.train.config import PretrainConfig
from support.reference import planned_steps, reference, stage_depths_of, warmup_steps_of

ARCH = "regnety_200mf"


def scaled_stage_checkpoints(
    ranges: list[list[int]], depths: tuple[int, ...], small_depths: tuple[int, ...]
) -> list[list[int]]:
    """Block ranges of a trunk with stages of ``depths`` blocks moved to one of ``small_depths``: each end at the
    same share of its stage, at least one block, ends that fall together merged."""
    return [
        sorted({min(small, max(1, round(end * small / depth))) for end in ends})
        for ends, depth, small in zip(ranges, depths, small_depths, strict=False)
    ]


def rehearsal_overrides(
    preset: str,
    steps: int,
    world: int,
    n_train: int,
    batch_size: int = 64,
    resolution: int = 32,
    hidden: int = 512,
    bf16: bool = False,
) -> dict[str, Any]:
    """Config keys (``key: value``) that turn ``preset`` into a rehearsal of ``steps`` optimiser steps on
    ``world`` processes of ``batch_size`` images over ``n_train`` training images.

    ``bf16``: keep the preset's bf16 (where the CPU computes it natively), else fp32.
    """
    if steps < 1 or world < 1 or n_train < 1 or batch_size < 1:
        raise ValueError("steps, world, n_train and batch_size must be >= 1")
    cfg = load_config(PretrainConfig, [preset], [])
    ref = reference(preset)
    planned = planned_steps(cfg, ref)
    batch_ratio = batch_size * world / (cfg.optim.batch_size * ref.world_size)
    scale = resolution / cfg.crops[0].size
    crops = [
        {"size": max(8, round(c.size * scale)), "count": c.count, "scale": list(c.scale)} for c in cfg.crops
    ]
    epochs = steps * batch_size * world / n_train
    lr_factor = 1 / batch_ratio  # the reference's absolute lr at the rehearsal's global batch (see above)
    # the queue's start, given in epochs of the reference run, as the same share of the rehearsal's epochs
    queue_start = cfg.swav.queue_start_epoch / cfg.optim.epochs * epochs
    ranges = cfg.parallel.stage_checkpoints
    if ranges is not None:  # block ranges of the preset's trunk: moved to the small one's stages
        ranges = scaled_stage_checkpoints(ranges, stage_depths_of(cfg.model.arch), stage_depths_of(ARCH))
    return {
        "model.arch": ARCH,
        "model.stem": "small",
        "model.zero_init_last_bn": True,
        "model.head_hidden": [hidden] * len(cfg.model.head_hidden),
        "model.head_bn": True,
        "model.prototypes": max(10, round(cfg.model.prototypes * batch_ratio)),
        "crops": crops,
        "augment.blur_sigma": [s * scale for s in cfg.augment.blur_sigma],
        "optim.batch_size": batch_size,
        "optim.epochs": epochs,
        "optim.base_lr": cfg.optim.base_lr * lr_factor,
        "optim.start_lr": cfg.optim.start_lr * lr_factor,
        "optim.final_lr": cfg.optim.final_lr * lr_factor,
        "optim.warmup_fraction": warmup_steps_of(cfg, ref) / planned,
        "swav.freeze_prototypes_iters": round(cfg.swav.freeze_prototypes_iters / planned * steps),
        "swav.queue_length": round(cfg.swav.queue_length * batch_ratio),
        "swav.queue_start_epoch": queue_start,
        "parallel.sync_bn": False,
        **({} if ranges is None else {"parallel.stage_checkpoints": ranges}),
        "run.precision": cfg.run.precision if bf16 else "fp32",
        "run.compile": False,
        "data.workers": 0,
        "data.cache_size": max(8, round(cfg.crops[0].size * scale)),
        "run.checkpoint_every": max(1, steps // 4),
        "run.evaluate": False,
        "run.log_every": max(1, min(10, steps // 30)),
    }
