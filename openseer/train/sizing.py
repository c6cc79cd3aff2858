"""The settings a preset leaves to the data: its ``auto`` values, sized once when pretraining starts.

A preset for photos cannot know the folder it will be given: 245 pictures from a phone or 100,000 from a camera
roll. What depends on that is ``auto`` in the preset (``optim.batch_size``, ``optim.epochs``,
``model.prototypes``, ``swav.queue_length``, ``swav.queue_start_epoch``), and :func:`size_run` turns each into
a number in :func:`openseer.train.pretrain.setup`, once the training images are counted and before the model
and the loss are built. The resolved config is the one the run saves (``RUN/config.yaml``, every checkpoint),
so a resume and every evaluation read numbers. The function is pure: the number of training images, the number
of processes and the config in; the config with numbers and one line per sized value saying why, out.

The rules, each using the ones before it:

1. ``optim.batch_size``: at most ``optim.max_batch_size`` per process, and small enough for
   :data:`MIN_STEPS_PER_EPOCH` full global batches an epoch, so that a small folder is sized rather than
   refused; at least 2 (BatchNorm, and a swapped prediction between two images' codes).
2. ``optim.epochs``: the passes over the images that make :data:`AUTO_STEPS` steps, at least one. With
   ``run.budget_minutes`` the run lasts the budget instead (the schedule follows the minutes spent), and the
   epochs only place what is given in epochs.
3. ``model.prototypes``: one per :data:`IMAGES_PER_PROTOTYPE` training images, within
   [:data:`MIN_PROTOTYPES`, :data:`MAX_PROTOTYPES`] and at most a quarter of the images.
4. ``swav.queue_length``: the equipartition of the codes spreads the rows of one code computation evenly over
   the prototypes, and needs more rows than prototypes to do it; swav's small-batch recipe (SwAV paper
   Sec. 4.3; ``scripts/swav_200ep_bs256_pretrain.sh``: ``main_swav.py --queue_length 3840`` for a global batch
   of 256 and 3,000 prototypes) codes :data:`ROWS_PER_PROTOTYPE` rows per prototype. Where the global batch
   has fewer, the queue adds the fewest whole global batches that reach that share (``main_swav.py`` rounds
   the queue down to whole global batches), but never rows beyond the number of images; where even then the
   rows fall short, an ``auto`` count of prototypes comes down to what they can carry.
5. ``swav.queue_start_epoch``: at :data:`QUEUE_START_SHARE` of the planned epochs, where swav's small-batch
   recipe starts its queue (``--epoch_queue_starts 15`` of 200 epochs): a queue of embeddings from a network
   that still changes fast disturbs training (swav's README, "Training gets unstable when using the queue").

An ``auto`` value of a resumed run takes the number the run resolved when it started (``previous``), so that a
folder that gained photos, or another number of processes, does not change the run halfway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from openseer.data.folders import DataError
from openseer.train.config import PretrainConfig

AUTO_KEYS = (
    "optim.batch_size",
    "optim.epochs",
    "model.prototypes",
    "swav.queue_length",
    "swav.queue_start_epoch",
)
"""Every key that may be 'auto', in the order :func:`size_run` sizes them."""

MIN_IMAGES_PER_PROCESS = 2
"""Fewer training images than this per process cannot make a batch: pretraining refuses the data."""
MIN_STEPS_PER_EPOCH = 8
"""Full global batches an epoch holds at least when the batch is sized: the last partial batch, dropped every
epoch, is then at most a ninth of the images."""
AUTO_STEPS = 2000
"""Steps of a run with ``optim.epochs: auto`` and no budget: about the cpu preset's default run (10 epochs of
CIFAR-10's 45,000 training images in batches of 256, 1,750 steps)."""
IMAGES_PER_PROTOTYPE = 400
"""Training images per prototype: about what swav gives ImageNet (3,000 for 1.28M images) and the cpu preset
CIFAR-10 (100 for 45,000)."""
MIN_PROTOTYPES = 30
"""Prototypes of a small folder: more groups than the kinds of picture a personal folder holds."""
MAX_PROTOTYPES = 3000
"""swav's ImageNet count; beyond it the data would have to be larger than ImageNet."""
ROWS_PER_PROTOTYPE = (256 + 3840) / 3000
"""Rows of one code computation per prototype in swav's small-batch recipe: a global batch of 256 and a queue
of 3,840 for 3,000 prototypes."""
QUEUE_START_SHARE = 15 / 200
"""Share of the planned epochs after which the queue starts: swav's small-batch recipe, epoch 15 of 200."""


@dataclass(frozen=True)
class Sizing:
    """A config with every ``auto`` value sized, and one line per sized value: ``key=value: why``."""

    cfg: PretrainConfig
    reasons: list[str]


def auto_keys(cfg: PretrainConfig) -> list[str]:
    """The keys of ``cfg`` that are 'auto'."""
    return [key for key in AUTO_KEYS if _get(cfg, key) == "auto"]


def size_run(
    cfg: PretrainConfig, n_images: int, world_size: int = 1, previous: PretrainConfig | None = None
) -> Sizing:
    """``cfg`` with each ``auto`` value sized for ``n_images`` training images over ``world_size`` processes
    (the rules are in the module docstring), and why; ``previous``: the config the run resolved when it started
    (a resume), whose numbers its ``auto`` values take. A config without ``auto`` comes back unchanged.

    Raises DataError when there are fewer than two images per process: no batch can be made.
    """
    todo = auto_keys(cfg)
    if not todo:
        return Sizing(cfg, [])
    if n_images < MIN_IMAGES_PER_PROCESS * world_size:
        raise DataError(
            f"{n_images} training image{'s' if n_images != 1 else ''}: pretraining needs at least "
            f"{MIN_IMAGES_PER_PROCESS} per process ({world_size} process{'es' if world_size > 1 else ''}) to "
            "make a batch; add images"
        )
    reasons: dict[str, str] = {}
    if previous is not None:
        for key in list(todo):
            value = _get(previous, key)
            if value != "auto":
                cfg = _set(cfg, key, value)
                reasons[key] = f"{key}={value:g}: as this run sized it when it started (RUN/config.yaml)"
                todo.remove(key)

    # 1. the batch: at most the device's, and enough batches an epoch
    o = cfg.optim
    if "optim.batch_size" in todo:
        fit = n_images // (world_size * MIN_STEPS_PER_EPOCH)
        batch = max(MIN_IMAGES_PER_PROCESS, min(o.max_batch_size, fit))
        why = (
            f"optim.max_batch_size={o.max_batch_size}"
            if batch == o.max_batch_size
            else f"the most that leaves {MIN_STEPS_PER_EPOCH} full batches an epoch"
            if batch == fit
            else f"the least a batch can be ({MIN_IMAGES_PER_PROCESS})"
        )
        cfg = _set(cfg, "optim.batch_size", batch)
        reasons["optim.batch_size"] = (
            f"optim.batch_size={batch}: {why}; {n_images} images make "
            f"{_count(n_images // (batch * world_size), 'full global batch', 'es')} of {batch * world_size} an epoch"
        )
    batch = int(cfg.optim.batch_size)
    global_batch = batch * world_size
    steps_per_epoch = max(1, n_images // global_batch)

    # 2. the length of the run
    if "optim.epochs" in todo:
        epochs = max(1.0, round(AUTO_STEPS / steps_per_epoch, 2))
        steps = round(epochs * steps_per_epoch)
        planned = f"{steps} steps, {epochs:g} passes of {_count(steps_per_epoch, 'batch', 'es')}"
        budget = cfg.run.budget_minutes
        if budget is None:
            why = f"{planned} (about {AUTO_STEPS} steps, at least one pass; run.budget_minutes sets minutes instead)"
        else:
            why = (
                f"run.budget_minutes={budget:g} bounds the run (the schedule follows the minutes spent); the "
                f"epochs place only what is given in epochs, as in a run of {planned}"
            )
        cfg = _set(cfg, "optim.epochs", epochs)
        reasons["optim.epochs"] = f"optim.epochs={epochs:g}: {why}"

    # 3. the prototypes, for the data
    if "model.prototypes" in todo:
        quarter = max(2, n_images // 4)
        per_images = round(n_images / IMAGES_PER_PROTOTYPE)
        prototypes = min(max(MIN_PROTOTYPES, per_images), MAX_PROTOTYPES, quarter)
        cfg = _set(cfg, "model.prototypes", prototypes)
        reasons["model.prototypes"] = (
            f"model.prototypes={prototypes}: one per {IMAGES_PER_PROTOTYPE} of the {n_images} images is "
            f"{per_images}, kept within {MIN_PROTOTYPES}..{MAX_PROTOTYPES} and at most a quarter of the images"
        )
    prototypes = int(cfg.model.prototypes)

    # 4. the queue, where the batch is too few rows for the prototypes
    wanted = math.ceil(ROWS_PER_PROTOTYPE * prototypes)
    if "swav.queue_length" in todo:
        batches = max(0, math.ceil((wanted - global_batch) / global_batch))
        batches = min(
            batches, max(0, (n_images - global_batch) // global_batch)
        )  # never more rows than images
        queue = batches * global_batch
        cfg = _set(cfg, "swav.queue_length", queue)
        if queue == 0 and global_batch >= wanted:
            why = f"the global batch of {global_batch} alone gives {prototypes} prototypes enough rows"
        elif queue == 0:
            why = f"{n_images} images leave no room for a queue beside the global batch of {global_batch}"
        else:
            short = "" if global_batch + queue >= wanted else f", as many as {n_images} images allow"
            why = (
                f"{_count(batches, 'global batch', 'es')} of {global_batch} kept, so that a code computation "
                f"has {global_batch + queue} rows for {prototypes} prototypes{short}"
            )
        reasons["swav.queue_length"] = (
            f"swav.queue_length={queue}: {why} (swav's small-batch recipe codes 256 + 3840 rows for 3000 "
            "prototypes, SwAV Sec. 4.3)"
        )
    rows = global_batch + cfg.swav.local_queue_length(batch, world_size) * world_size
    fewer = max(2, min(prototypes, math.floor(rows / ROWS_PER_PROTOTYPE)))
    if "model.prototypes" in todo and fewer < prototypes:
        cfg = _set(cfg, "model.prototypes", fewer)
        reasons["model.prototypes"] = (
            f"model.prototypes={fewer}: what the {rows} rows of a code computation (batch and queue) carry at "
            f"{ROWS_PER_PROTOTYPE:.2f} rows a prototype, fewer than the {prototypes} the images would have"
        )

    # 5. when the queue starts
    if "swav.queue_start_epoch" in todo:
        epochs = float(cfg.optim.epochs)
        start = round(QUEUE_START_SHARE * epochs, 2)
        cfg = _set(cfg, "swav.queue_start_epoch", start)
        step = math.ceil(start * steps_per_epoch)
        unused = "; unused: no queue" if cfg.swav.queue_length == 0 else ""
        reasons["swav.queue_start_epoch"] = (
            f"swav.queue_start_epoch={start:g}: step {step}, {100 * QUEUE_START_SHARE:.1f}% of the "
            f"{epochs:g} planned epochs, where swav's small-batch recipe starts its queue (epoch 15 of "
            f"200){unused}"
        )
    return Sizing(cfg, [reasons[key] for key in AUTO_KEYS if key in reasons])


def _count(n: int, noun: str, plural: str = "s") -> str:
    return f"{n} {noun}{'' if n == 1 else plural}"


def _get(cfg: PretrainConfig, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _set(cfg: PretrainConfig, key: str, value: object) -> PretrainConfig:
    section, name = key.split(".")
    return replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
