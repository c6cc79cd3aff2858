"""The typed configuration of ``openseer pretrain``.

Defaults follow the SwAV paper's ImageNet recipe (Caron et al. 2020, main_swav.py); the shipped presets
(``openseer/presets/*.yaml``) override what differs: ``cpu`` for this kind of machine, ``swav-rn50`` and the
``seer-*`` sizes (RG-32GF to 10B) for the published settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from openseer.config import Auto, ConfigError, resolved, to_dict
from openseer.data.images import DEFAULT_MAX_PIXELS
from openseer.data.multicrop import AugmentSpec, CropSpec
from openseer.data.preprocess import Preprocess, Resize
from openseer.models.config import ModelConfig


@dataclass
class PretrainModelConfig(ModelConfig):
    """The network of a pretraining run (:class:`~openseer.models.config.ModelConfig`, what the weights store) plus
    what the run starts from, which is the run's and not the network's: ``init`` is kept in the run's config and
    checkpoints, never in the description stored with the weights."""

    arch: str = "resnet50"
    """A RegNetY size (regnety_200mf ... regnety_256gf, regnety_10b), resnet50 or resnet18; see
    `openseer.models`. 'auto' (with model.init): the architecture and stem of that file."""
    init: str | None = None
    """Start from these weights instead of a random initialisation (continued pretraining): any file
    openseer.weights.load_weights reads (SEER/VISSL or timm checkpoint, safetensors of import-weights or export,
    a run folder or checkpoint, a sharded FSDP run). The trunk is loaded, and the SwAV head when its shapes match
    model.*; otherwise a new head is drawn (its prototypes frozen for swav.freeze_prototypes_iters steps). The
    optimiser and schedule start afresh; --resume with a checkpoint in run.out_dir goes on from that instead.
    null: random initialisation."""

    def network(self) -> ModelConfig:
        """The network alone, as the weights describe it (``model.init`` left out)."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)})

    def validate(self) -> None:
        if self.init is not None and not self.init.strip():
            raise ConfigError("config key 'model.init': empty; give a weights file or null")
        if self.arch != "auto":
            super().validate()
        elif self.init is None:
            raise ConfigError(
                "config key 'model.arch': 'auto' takes the architecture of model.init's file, but model.init is "
                "not set"
            )
        # with 'auto', the rest is checked once the file's architecture is known (openseer.train.initial)


@dataclass
class DataConfig:
    source: str = "builtin"
    """'builtin' (Fashion-MNIST), a folder tree of images, or a .txt/.csv list of paths."""
    labels: Literal["auto", "folder", "none"] = "auto"
    """'folder': one sub-folder per class (ImageFolder); 'auto': folder when every image sits in a class folder."""
    holdout: float = 0.1
    """Fraction of each class set aside (never trained on) to score the features; labelled sources only."""
    cache_size: int | None = None
    """Decode every image once to a uint8 cache of this side and augment whole batches on tensors (fast for
    small images). null: decode and augment per image in loader workers (any image size)."""
    workers: int = 2
    """Decoding workers: DataLoader processes of the per-image path (data.cache_size null) and of shards, the
    threads that decode the images into the cache (data.cache_size set; at least one), and the loader processes
    of the end-of-run evaluation. 0: the per-image path and the evaluation decode in the training process."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are skipped as decompression bombs."""

    def validate(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"config key 'data.holdout': got {self.holdout}, expected a fraction in [0, 1)")
        if self.cache_size is not None and self.cache_size < 8:
            raise ConfigError(f"config key 'data.cache_size': got {self.cache_size}, expected >= 8 or null")
        if self.workers < 0:
            raise ConfigError(f"config key 'data.workers': got {self.workers}, expected >= 0")


@dataclass
class SwAVConfig:
    temperature: float = 0.1
    """Softmax temperature of the swapped prediction (SwAV: 0.1); its value at the end of the run when
    swav.temperature_start is set."""
    temperature_start: float | None = None
    """Temperature at the start of the run, following a cosine to swav.temperature at its end (over the steps,
    or over the time budget); null: constant."""
    epsilon: float = 0.05
    """Entropic regularisation of Sinkhorn-Knopp: larger gives flatter (softer) codes."""
    sinkhorn_iters: int = 3
    """Sinkhorn-Knopp iterations per batch (SwAV: 3; SEER: 10)."""
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    """Indices of the crops whose codes are computed (counted over all crops, in the order of `crops`); every
    crop predicts the codes of each of them but its own."""
    queue_length: int | Auto = 3840
    """Embeddings kept per assignment crop across the global batch (0: no queue); split across processes.
    'auto': a queue only where the global batch is too few rows for the prototypes: the fewest whole global
    batches that give as many rows per prototype as swav's small-batch recipe (256 + 3,840 rows for 3,000
    prototypes; SwAV Sec. 4.3), never more rows than images (openseer.train.sizing)."""
    queue_start_epoch: float | Auto = 15.0
    """Epoch from which the batches' embeddings enter the queue; once it is full, the scores of its embeddings
    join each code computation. Ignored without a queue (swav.queue_length 0). 'auto': at the share of the
    planned run where swav's small-batch recipe starts it (epoch 15 of 200)."""
    freeze_prototypes_iters: int = 313
    """Steps at the start of the run during which the prototypes get no gradient (SwAV: 313)."""

    def local_queue_length(self, batch_size: int, world_size: int) -> int:
        """Queue rows per process, as swav main_swav.py sizes them: ``queue_length`` is first rounded down to
        a multiple of the global batch (``batch_size * world_size``), then split over the processes, so each
        process holds a whole number of its own batches (0 when the queue is shorter than one global batch).
        """
        if batch_size < 1 or world_size < 1:
            raise ValueError("batch_size and world_size must be >= 1")
        length = int(resolved(self.queue_length, "swav.queue_length"))
        global_batch = batch_size * world_size
        return (length - length % global_batch) // world_size

    def validate(self) -> None:
        if self.temperature <= 0 or self.epsilon <= 0:
            raise ConfigError("config keys 'swav.temperature' and 'swav.epsilon' must be > 0")
        if self.temperature_start is not None and self.temperature_start <= 0:
            raise ConfigError(
                f"config key 'swav.temperature_start': got {self.temperature_start}, expected > 0"
            )
        if self.sinkhorn_iters < 1:
            raise ConfigError(f"config key 'swav.sinkhorn_iters': got {self.sinkhorn_iters}, expected >= 1")
        if not self.crops_for_assign:
            raise ConfigError("config key 'swav.crops_for_assign' must name at least one crop")
        if self.queue_length != "auto" and self.queue_length < 0:
            raise ConfigError(
                f"config key 'swav.queue_length': got {self.queue_length}, expected >= 0 or auto"
            )
        if self.queue_start_epoch != "auto" and self.queue_start_epoch < 0:
            raise ConfigError(
                f"config key 'swav.queue_start_epoch': got {self.queue_start_epoch}, expected >= 0 or auto"
            )


@dataclass
class OptimConfig:
    name: Literal["lars", "sgd"] = "lars"
    """'lars' (SwAV, SEER: SGD with momentum whose step is scaled per tensor by optim.trust_coefficient) or plain
    'sgd' with momentum."""
    batch_size: int | Auto = 64
    """Images per process; the global batch is batch_size x world size. 'auto': sized from the number of
    training images, at most optim.max_batch_size, small enough for 8 full global batches an epoch and at least
    2 (openseer.train.sizing)."""
    max_batch_size: int = 256
    """The largest batch per process that optim.batch_size 'auto' picks (what the device's memory and speed
    suit); unused when optim.batch_size is a number."""
    epochs: float | Auto = 400.0
    """Length of the run in passes over the training images, which the cosine schedule spans. With
    run.budget_minutes the run lasts the budget instead; the epochs then only set the share of the warm-up given
    by optim.warmup_epochs or optim.warmup_steps. 'auto': the passes that make 2,000 steps, at least one
    (openseer.train.sizing)."""
    base_lr: float = 0.3
    """Peak learning rate for a global batch of 256; scaled linearly with the global batch."""
    final_lr: float = 0.0003
    """End of the cosine, for a global batch of 256 (scaled like base_lr)."""
    start_lr: float = 0.0
    """Learning rate at the start of the warm-up, for a global batch of 256 (scaled like base_lr)."""
    warmup_epochs: float = 10.0
    """Linear warm-up from start_lr to base_lr, in epochs (unless optim.warmup_steps or
    optim.warmup_fraction is set)."""
    warmup_steps: int | None = None
    """Overrides warmup_epochs when set (SEER: 8,000 steps)."""
    warmup_fraction: float | None = None
    """Overrides both when set: warm-up as a fraction of all steps (suits run.budget_minutes)."""
    schedule_shape: Literal["swav", "vissl"] = "swav"
    """How warm-up and cosine join. 'swav' (swav main_swav.py): the cosine is rescaled to the steps after the
    warm-up, so it starts exactly at the peak. 'vissl' (VISSL's SEER configs, fvcore's composite scheduler with
    interval_scaling [rescaled, fixed]): the cosine is evaluated at the run's global position and the warm-up only
    replaces its start, so every step after the warm-up is a little lower than swav's. The swav-rn50 preset uses
    swav's shape and the seer-* presets VISSL's, each as its reference ran."""
    weight_decay: float = 1e-6
    """L2 weight decay, folded into the LARS step (of every tensor unless optim.exclude_bias_and_norm)."""
    momentum: float = 0.9
    """Momentum of SGD, and of the SGD step inside LARS."""
    trust_coefficient: float = 0.001
    """LARS trust coefficient η: each tensor's update (gradient plus weight decay) is scaled by
    η ||w|| / (||g|| + weight_decay ||w||). Unused by 'sgd'."""
    exclude_bias_and_norm: bool = False
    """Leave biases and normalisation weights (all 1-D tensors) out of LARS adaptation and weight decay. The
    references adapt and decay every tensor (swav: LARC over SGD on all parameters; VISSL: regularize_bn and
    regularize_bias true), so false is the faithful setting."""

    def lr_scale(self, world_size: int) -> float:
        """What the learning rates (given for a global batch of 256) are multiplied by: the global batch over 256
        (swav's linear scaling)."""
        return int(resolved(self.batch_size, "optim.batch_size")) * world_size / 256

    def planned_steps(self, steps_per_epoch: int) -> int:
        """The optimiser steps of the run these settings describe: ``epochs`` of ``steps_per_epoch``, at least
        one (what the schedule, its warm-up and the reference tables count in)."""
        return max(1, round(float(resolved(self.epochs, "optim.epochs")) * steps_per_epoch))

    def validate(self) -> None:
        if self.batch_size != "auto" and self.batch_size < 2:
            raise ConfigError(f"config key 'optim.batch_size': got {self.batch_size}, expected >= 2 or auto")
        if self.max_batch_size < 2:
            raise ConfigError(f"config key 'optim.max_batch_size': got {self.max_batch_size}, expected >= 2")
        if self.epochs != "auto" and self.epochs <= 0:
            raise ConfigError(f"config key 'optim.epochs': got {self.epochs}, expected > 0 or auto")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(
                f"config key 'optim.warmup_fraction': got {self.warmup_fraction}, expected a fraction in [0, 1)"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"config key 'optim.warmup_steps': got {self.warmup_steps}, expected >= 0")
        if self.warmup_epochs < 0:
            raise ConfigError(f"config key 'optim.warmup_epochs': got {self.warmup_epochs}, expected >= 0")


@dataclass
class RunConfig:
    out_dir: str = "runs/pretrain"
    """Run folder: config.yaml, metrics.jsonl, checkpoints/, tensorboard/, summary.json, autotune.json,
    skipped_images.json, and the evaluation's eval/ and report.html; written by the first process only (every
    process writes its shards of an FSDP checkpoint)."""
    seed: int = 0
    """Seed of the initialisation, of the data order and augmentation, and of the held-out split."""
    device: str = "auto"
    """'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1'..."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """'fp32', or autocast to 'bf16' or 'fp16' (fp16 with loss scaling); 'auto': bf16 only where the hardware
    computes it natively (avx512_bf16/AMX, Arm bf16, CUDA compute capability 8+), and only when it measures at
    least run.bf16_min_speedup times faster than fp32 with a loss that follows fp32's: timed trial steps when
    the run is long enough to afford them, else a short probe (openseer.train.autotune). A resumed run keeps
    the precision its start chose (RUN/autotune.json). The Sinkhorn codes, the prototypes and the loss are fp32
    in every case."""
    fp32_modules: list[Literal["batchnorm", "head", "small_maps"]] = field(default_factory=list)
    """Modules that compute in fp32 under bf16 or fp16 autocast (their input cast up, autocast off inside):
    'batchnorm' every BatchNorm, statistics and normalisation (a residual block's sum after its last BatchNorm
    then stays fp32 up to the next convolution); 'head' the projection MLP; 'small_maps' every convolution over
    a map of at most 8x8 pixels (the last stages on small crops, where openseer.models.small_maps runs). Where
    FSDP's mixed precision gives a module low-precision parameters, that module stays as it is. Compare with
    benchmarks/bf16_quality.py (docs/benchmarks.md)."""
    bf16_min_speedup: float = 1.05
    """With run.precision=auto: bf16 is chosen only when its step is at least this many times faster than
    fp32's. Above the timing noise, it is the price of bf16's steps in quality: how many bf16 steps are worth
    one fp32 step (benchmarks/bf16_quality.py measures both at equal steps)."""
    threads: int | None = None
    """Intra-op CPU threads (null: the number of cores)."""
    compile: bool | Literal["auto"] = False
    """Wrap the model in torch.compile; 'auto': only when it measures faster than eager in the precision that
    won, compiled while choosing within 3% of a run of 10 minutes or more (its expected cost, the last one
    measured for this machine and config with inductor's caches in the same state, else 120 s, must fit in
    what is left of the 3%), or from an earlier run's measurements when the compile at the first step is at
    most 10% of the run and pays back within it. Inductor's caches persist under the openseer cache."""
    autotune_cache: bool = True
    """With 'auto' precision or compile: reuse what an earlier run measured for this hardware model, torch
    version and step (<openseer cache>/autotune.json) instead of measuring again; false: measure again and
    overwrite."""
    budget_minutes: float | None = None
    """Train for this many minutes; the lr schedule then follows the fraction of the budget spent (warm-up:
    optim.warmup_fraction) instead of optim.epochs. The seconds spent choosing an 'auto' run.precision or
    run.compile at start-up come out of it (at most 3% of a budget of 10 minutes or more, a short probe below
    that); data preparation and the final evaluation do not."""
    max_steps: int | None = None
    """Stop after this many steps (smoke tests); the schedule keeps the length the run would have had. null: no
    limit."""
    log_every: int = 10
    """Write a line of metrics.jsonl (and check for collapse) every this many steps."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps, and always at the end of the run (--resume continues from the
    newest one)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints are kept; older ones are deleted. 0: keep every one."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Mirror the metrics to TensorBoard event files in run.out_dir/tensorboard."""
    evaluate: bool = True
    """After training, score the features once on the held-out labelled split (kNN at random initialisation
    and after pretraining, a linear probe), group the images trained on by the prototypes as openseer clusters
    does (labelled or not), and write RUN/report.html with both (openseer.eval.pretraining)."""
    knn_bn_recalibrate: bool = True
    """Re-estimate BatchNorm statistics on un-augmented training images before kNN (both at random init and
    after pretraining), so that neither is scored with statistics of another input distribution."""
    knn_k: int = 200
    """Neighbours of the end-of-run kNN evaluation."""
    knn_temperature: float = 0.1
    """Temperature of the kNN's similarity weighting, exp(cosine / T)."""
    max_nonfinite_steps: int = 20
    """Stop with advice after this many non-finite steps in a row (each one is skipped)."""
    dist_timeout_s: float = 600.0
    """Seconds a collective across processes may wait: a process that died or stopped answering then ends the
    job with an explanation instead of a hang. Unused by a single process."""

    def validate(self) -> None:
        if self.bf16_min_speedup <= 0:
            raise ConfigError(f"config key 'run.bf16_min_speedup': got {self.bf16_min_speedup}, expected > 0")


@dataclass
class ParallelConfig:
    """How the model is spread over processes (``torchrun``/SLURM); ignored by a single process.

    'ddp': every process holds the whole model and gradients are all-reduced. 'fsdp': parameters, gradients and
    optimiser state are sharded (FSDP2 ``fully_shard`` per RegNet block), checkpoints are sharded too
    (``torch.distributed.checkpoint``) and resumable with another number of processes.
    """

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """'ddp': every process holds the whole model; 'fsdp': parameters, gradients, optimiser state and checkpoints
    are sharded over the processes (see docs/scaling.md)."""
    sync_bn: bool = False
    """BatchNorm statistics over the batch of a group of processes (SEER: groups of 64 GPUs). Several processes:
    CUDA only; a single process keeps plain BatchNorm (there is nothing to synchronise)."""
    sync_bn_group: int | None = None
    """Processes per SyncBatchNorm group (consecutive ranks; must divide the world size, and is capped at it);
    null: all. swav and VISSL's SwAV: 8 (one node), SEER RG-256GF: 64, SEER 10B: 8."""
    activation_checkpointing: bool = False
    """Recompute backbone blocks in the backward pass instead of storing their activations (each stage whole,
    unless parallel.stage_checkpoints says otherwise)."""
    stage_checkpoints: list[list[int]] | None = None
    """With activation_checkpointing, which block ranges are recomputed as one unit, in VISSL's form
    (TRUNK.REGNET.stage_checkpoints): per stage, the block indices at which a group ends, the last group running
    to the stage's end; [] leaves a stage, and every stage past the list, not checkpointed. null: each stage
    whole. SEER 10B: [[2], [7], [9, 17], []], stage 3 in two groups and stage 4 not recomputed (one
    1.84B-parameter block on the smallest maps: the most recomputation for the least memory)."""

    def validate(self) -> None:
        if self.sync_bn_group is not None and self.sync_bn_group < 1:
            raise ConfigError(f"config key 'parallel.sync_bn_group': got {self.sync_bn_group}, expected >= 1")
        for i, ends in enumerate(self.stage_checkpoints or []):
            if any(e < 1 for e in ends) or any(b <= a for a, b in zip(ends, ends[1:], strict=False)):
                raise ConfigError(
                    f"config key 'parallel.stage_checkpoints': stage {i + 1} has {ends}, expected block indices "
                    "that increase from 1"
                )


@dataclass
class ProgressiveConfig:
    """Progressive resolution (openseer.data.progressive): every crop's side grows linearly from
    ``start_scale`` of its configured size to all of it over the first ``until`` share of the run (steps, or the
    time budget), in multiples of ``multiple`` pixels. Off (1.0) in every preset: swav and SEER train at one
    resolution, and a pair of equal-time runs of the cpu preset did not support it (docs/time_to_accuracy.md)."""

    start_scale: float = 1.0
    """Side of every crop at the start of the run, as a fraction of its configured size; 1.0: off."""
    until: float = 0.5
    """Share of the run after which crops are at their full size."""
    multiple: int = 8
    """Sides are rounded to a multiple of this many pixels (few distinct shapes: fewer recompiles)."""

    def validate(self) -> None:
        if not 0 < self.start_scale <= 1:
            raise ConfigError(
                f"config key 'progressive.start_scale': got {self.start_scale}, expected (0, 1]"
            )
        if not 0 < self.until <= 1:
            raise ConfigError(f"config key 'progressive.until': got {self.until}, expected a share in (0, 1]")
        if self.multiple < 1:
            raise ConfigError(f"config key 'progressive.multiple': got {self.multiple}, expected >= 1")


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """The training images: where they are, how they are labelled and held out, how they are decoded."""
    crops: list[CropSpec] = field(
        default_factory=lambda: [CropSpec(224, 2, (0.14, 1.0)), CropSpec(96, 6, (0.05, 0.14))]
    )
    """The multi-crop: groups of same-size crops drawn from each image, set as a whole list (by default SwAV's
    2x224 + 6x96). The crops are numbered in this order (every crop of the first group, then of the next), as
    swav.crops_for_assign counts them."""
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    """Augmentation of every crop, and the normalisation of the network's input."""
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    """The network: backbone, projection head and prototypes; and the weights the run starts from."""
    swav: SwAVConfig = field(default_factory=SwAVConfig)
    """The SwAV objective: codes by Sinkhorn-Knopp, swapped prediction, the embedding queue."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser, batch and learning-rate schedule (linear warm-up, then cosine)."""
    run: RunConfig = field(default_factory=RunConfig)
    """Where the run writes, on what device and in what precision, how long it lasts, what it logs and keeps,
    and the evaluation at its end."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """How several processes share the training."""
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    """Smaller crops early in the run (off by default)."""

    def preprocess(self, resize: Resize = "center_crop") -> Preprocess:
        """The evaluation input of networks trained with this config, as the weights they leave describe it
        (:func:`openseer.weights.description.describe_recipe`)."""
        from openseer.weights.description import describe_recipe  # the weights package imports torch

        return describe_recipe(to_dict(self), resize)[1]

    def validate(self) -> None:
        n_crops = sum(c.count for c in self.crops)
        if n_crops < 2:
            raise ConfigError(f"config key 'crops': {n_crops} crop(s) defined, SwAV needs at least 2")
        for i in self.swav.crops_for_assign:
            if not 0 <= i < n_crops:
                raise ConfigError(
                    f"config key 'swav.crops_for_assign': crop {i} asked for, but 'crops' defines {n_crops} "
                    f"(indices 0..{n_crops - 1})"
                )
        for i, c in enumerate(self.crops):
            lo, hi = c.scale
            if c.size < 1 or c.count < 1 or not 0 < lo <= hi <= 1:
                raise ConfigError(
                    f"config key 'crops[{i}]': size and count must be >= 1 and 0 < scale[0] <= scale[1] <= 1"
                )
