"""Spreading a SwAV model over processes: DDP or FSDP2, SyncBatchNorm, activation checkpointing, mixed precision.

:func:`parallelize` is the one call the training loop makes. It returns the module to run the forward pass
through; the model passed in stays the handle for everything else (optimiser, prototypes, checkpoints):

* ``ddp``: a ``DistributedDataParallel`` wrapper around the model (the model itself when alone), whose
  gradients reach DDP's buckets in the parameters' own strides (:func:`grads_in_parameter_strides`).
* ``fsdp``: the model itself, sharded in place with ``fully_shard``: one unit per RegNet block (the unit of
  all-gather and of freeing memory), one for the projection MLP, one for the prototypes (so that scoring the
  queue with ``model.head.prototypes(z)`` all-gathers them; gathered in float32 whatever the precision, as
  VISSL keeps them), and the root for the stem. Its parameters are then ``DTensor`` shards. With one process
  there is nothing to shard and the model is returned unchanged; its checkpoints are still written with
  ``torch.distributed.checkpoint``.

:func:`build_for_strategy` builds the run's model for that call: whole on the device, or, under FSDP, on the
meta device, sharded there, and then materialised shard by shard, so that no process ever holds the whole model
(the 10B trunk alone is 37 GB in float32).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from openseer import distributed
from openseer.config import ConfigError
from openseer.models import SwAVModel
from openseer.models.build import build_model, init_model_, random_model
from openseer.train.config import ParallelConfig, PretrainConfig

log = logging.getLogger(__name__)

_STAGE_NAMES = (("s1", "s2", "s3", "s4"), ("layer1", "layer2", "layer3", "layer4"))  # timm RegNet, ResNet


def backbone_stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, stage) of the four stages of a timm RegNet or ResNet trunk, in forward order."""
    for names in _STAGE_NAMES:
        if all(hasattr(backbone, n) for n in names):
            return [(n, getattr(backbone, n)) for n in names]
    raise ValueError(
        f"no stages found in {type(backbone).__name__} (expected attributes s1..s4 or layer1..4)"
    )


def _inner(module: nn.Module) -> nn.Module:
    """The stage behind an activation-checkpointing wrapper."""
    return getattr(module, "_checkpoint_wrapped_module", module)


@contextlib.contextmanager
def _frozen_bn_statistics(modules: Sequence[nn.Module]) -> Iterator[None]:
    """BatchNorm running statistics left alone while checkpointed blocks are recomputed in the backward pass;
    otherwise every step would fold the batch statistics in twice (momentum 0 keeps them as they are, and the
    batch counter is put back)."""
    norms = [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.momentum is not None
    ]
    saved = [
        (m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
        for m in norms
    ]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def checkpoint_segments(
    depths: Sequence[int], stage_checkpoints: Sequence[Sequence[int]] | None = None
) -> list[list[tuple[int, int]]]:
    """Per stage, the block ranges [start, end) that are each recomputed in the backward pass as one unit.

    ``stage_checkpoints`` None: every stage whole. Otherwise VISSL's ``TRUNK.REGNET.stage_checkpoints``, as
    ``create_regnet_feature_blocks`` reads it (vissl/models/trunks/regnet_fsdp.py): for stage i, the block
    indices at which a group ends, the last group running to the end of the stage; an empty list, or a stage the
    list does not reach, is not checkpointed at all. SEER 10B's ``[[2], [7], [9, 17], []]`` over its stages of
    2, 7, 17 and 1 blocks: the first two stages whole, the third in two groups (blocks 0-8 and 9-16), the last
    (one block of 1.84B parameters) not checkpointed.
    """
    if stage_checkpoints is None:
        return [[(0, depth)] if depth else [] for depth in depths]
    key = "config key 'parallel.stage_checkpoints'"
    if len(stage_checkpoints) > len(depths):
        raise ConfigError(f"{key}: {len(stage_checkpoints)} stages given, the trunk has {len(depths)}")
    segments = []
    for i, depth in enumerate(depths):
        ends = list(stage_checkpoints[i]) if i < len(stage_checkpoints) else []
        if not ends:
            segments.append([])
            continue
        if ends[-1] > depth:
            raise ConfigError(
                f"{key}: stage {i + 1} has {depth} blocks, a group cannot end at block {ends[-1]}"
            )
        if ends[-1] != depth:
            ends.append(depth)
        segments.append(list(zip([0, *ends[:-1]], ends, strict=True)))
    return segments


def stage_depths(backbone: nn.Module) -> list[int]:
    """Blocks in each of the trunk's four stages (through an activation-checkpointing wrapper)."""
    return [len(list(_inner(stage).children())) for _, stage in backbone_stages(backbone)]


def checkpoint_stages(backbone: nn.Module, stage_checkpoints: Sequence[Sequence[int]] | None = None) -> None:
    """Wrap each stage so that only the input of each of its checkpointed block ranges
    (:func:`checkpoint_segments`) is kept for the backward pass and the ranges are recomputed; a stage without
    any range is left as it is.

    The wrapper's state-dict hooks drop its name prefix, so checkpoints keep the plain parameter names.
    """
    stages = backbone_stages(backbone)
    for (name, stage), segments in zip(
        stages, checkpoint_segments(stage_depths(backbone), stage_checkpoints), strict=True
    ):
        if segments:
            wrapped = checkpoint_wrapper(stage, checkpoint_fn=_run_segments, segments=tuple(segments))
            setattr(backbone, name, wrapped)


def _run_segments(stage: nn.Module, x: torch.Tensor, segments: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """A stage's forward pass with each block range under ``torch.utils.checkpoint`` (the wrapper's
    ``checkpoint_fn``)."""
    blocks = list(stage.children())
    for start, end in segments:
        group = blocks[start:end]
        contexts = functools.partial(_checkpoint_contexts, group)
        x = checkpoint(_run_blocks, group, x, use_reentrant=False, context_fn=contexts)
    return x


def _run_blocks(blocks: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for block in blocks:
        x = block(x)
    return x


def _checkpoint_contexts(blocks: Sequence[nn.Module]) -> tuple[contextlib.AbstractContextManager, ...]:
    """torch.utils.checkpoint's ``context_fn``: (around the forward pass, around the recomputation)."""
    return contextlib.nullcontext(), _frozen_bn_statistics(blocks)


def sync_bn_groups(world: int, group_size: int | None) -> list[list[int]]:
    """Consecutive ranks in groups of ``group_size`` (SEER: 64), or one group of all when None.

    A group larger than the world is the whole world (as VISSL sizes its groups, ``min(world, GROUP_SIZE)``), so
    a preset's group of 64 also runs on one node of 8.
    """
    size = world if group_size is None else min(world, group_size)
    if size < 1 or world % size:
        raise ConfigError(
            f"config key 'parallel.sync_bn_group': {group_size} does not divide the {world} processes"
        )
    return [list(range(start, start + size)) for start in range(0, world, size)]


def convert_sync_bn(model: nn.Module, group_size: int | None) -> nn.Module:
    """Replace every BatchNorm with a SyncBatchNorm over this process's group (all ranks must call it)."""
    group = None
    if distributed.is_enabled():
        ranks = sync_bn_groups(distributed.world_size(), group_size)
        if len(ranks) > 1:  # new_subgroups creates every group on every rank and returns this rank's
            group, _ = dist.new_subgroups_by_enumeration(ranks)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)


def _unsharded_norm_layers(module: nn.Module) -> list[nn.Module]:
    """BatchNorm layers under ``module`` that no inner unit has sharded yet (their weights are no DTensor)."""
    return [
        m
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.weight is not None and not isinstance(m.weight, DTensor)
    ]


def shard(model: SwAVModel, precision: str = "fp32") -> None:
    """``fully_shard`` the model in place, per RegNet block, with mixed precision for ``bf16``/``fp16``.

    Mixed precision all-gathers parameters in the low precision and reduces gradients in float32 (the sharded
    master weights stay float32). BatchNorm layers keep float32 parameters in a unit of their own per block,
    because batch_norm refuses low-precision weights next to its float32 running statistics. The prototypes
    are a float32 unit too: their scores feed exp(score / epsilon) (see :class:`openseer.models.SwAVHead`).
    """
    # FSDP shards contiguous storage only; channels_last inputs still select the NHWC convolution kernels
    model.to(memory_format=torch.contiguous_format)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None)
    fp32_norms = MixedPrecisionPolicy(cast_forward_inputs=False)

    def unit(module: nn.Module) -> None:
        norms = _unsharded_norm_layers(module)
        if low is not None and norms:
            fully_shard(norms, mp_policy=fp32_norms, reshard_after_forward=False)  # tiny: keep them gathered
        fully_shard(module, mp_policy=policy)

    for _, stage in backbone_stages(model.backbone):
        for block in _inner(stage).children():
            unit(block)
    unit(model.head.projection)
    fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    fully_shard(model.head.prototypes, mp_policy=fp32)
    unit(model)


def parallelize(
    model: SwAVModel, cfg: ParallelConfig, device: torch.device, precision: str = "fp32"
) -> nn.Module:
    """Prepare ``model`` (on ``device``) for data-parallel training; returns the module for the forward pass.

    A model that :func:`build_for_strategy` already sharded is returned as it is.
    """
    if isinstance(model, FSDPModule):
        return model
    if cfg.activation_checkpointing:
        checkpoint_stages(model.backbone, cfg.stage_checkpoints)
    if cfg.sync_bn and distributed.world_size() > 1:
        if device.type != "cuda":
            # torch's SyncBatchNorm only has CUDA kernels ("SyncBatchNorm expected input tensor to be on GPU")
            raise ConfigError(
                "config key 'parallel.sync_bn': SyncBatchNorm needs CUDA devices in torch; set it false"
            )
        convert_sync_bn(model, cfg.sync_bn_group)
    elif cfg.sync_bn:  # one process: there is nothing to synchronise, so the GPU presets also run on a CPU
        log.info("parallel.sync_bn: a single process keeps plain BatchNorm")
    if not distributed.is_enabled():
        return model
    if cfg.strategy == "fsdp":
        shard(model, precision)
        log.info("FSDP: model sharded over %d processes (%s)", distributed.world_size(), precision)
        return model
    grads_in_parameter_strides(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def grads_in_parameter_strides(model: nn.Module) -> int:
    """Hands each gradient on with its parameter's strides where the two differ only in dimensions of size 1,
    so that DDP's bucket views, which take the parameters' strides, match the gradients.

    A 1x1 convolution's weight (O, I, 1, 1) in channels_last has strides (I, 1, I, I); the gradient CPU
    kernels return for it (oneDNN's convolution backward, the matrix product of
    ``openseer.models.small_maps``) has (I, 1, 1, 1): the same memory, but DDP compares strides, warns "grad
    strides do not match bucket view strides" and copies those gradients element by element. The view with the
    parameter's strides costs nothing. Returns how many parameters got the hook (those with a dimension of
    size 1: 1x1 kernels)."""

    def restride(grad: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
        if grad.stride() == strides or any(
            a != b and n != 1 for a, b, n in zip(grad.stride(), strides, grad.shape, strict=True)
        ):
            return grad  # already alike, or laid out otherwise (autograd's own copy then handles it)
        return grad.as_strided(grad.shape, strides, grad.storage_offset())

    hooked = 0
    for param in model.parameters():
        if param.requires_grad and param.dim() > 1 and 1 in param.shape:
            param.register_hook(functools.partial(restride, strides=param.stride()))
            hooked += 1
    return hooked


def build_for_strategy(cfg: PretrainConfig, device: torch.device) -> SwAVModel:
    """The run's model on ``device``, initialised as ``cfg.model`` says (zero_init_last_bn included).

    Under FSDP with several processes: built on the meta device (no memory), prepared by :func:`parallelize`
    there (SyncBatchNorm, activation checkpointing, ``fully_shard``), then given storage for this process's
    shards only (``to_empty``) and initialised in place, shard by shard. Every process must call it, in the
    same order as its other collectives (sharding creates process groups). Otherwise: built whole on
    ``device``, in channels_last when ``cfg.model.channels_last``. Either way, pass the result to
    :func:`parallelize` as before (a sharded model comes back unchanged).

    The sharded initialisation draws from the same distributions as the whole one, not the same numbers (so the
    random-initialisation baseline of an FSDP run is a network drawn alike, not the very one it started from).
    """
    if not (cfg.parallel.strategy == "fsdp" and distributed.is_enabled()):
        # drawn from run.seed alone: openseer.models.random_model(cfg.model, cfg.run.seed) is this very network
        model = random_model(cfg.model, cfg.run.seed).train().to(device)
        return model.to(memory_format=torch.channels_last) if cfg.model.channels_last else model
    with torch.device("meta"):
        model = build_model(cfg.model)
    parallelize(model, cfg.parallel, device, cfg.run.precision)
    model.to_empty(device=device)
    with _distinct_shard_draws(device):
        init_model_(model, cfg.model.zero_init_last_bn)
    return model


@contextlib.contextmanager
def _distinct_shard_draws(device: torch.device) -> Iterator[None]:
    """Random draws that differ between the shards of one tensor.

    On CUDA, DTensor's random operators follow one generator state shared by all ranks, offset per shard, so
    the shards are the pieces of one draw. Elsewhere (CPU) each rank draws its local shard from its own
    generator, and equal seeds would give every rank the same numbers: the tensor would repeat itself once
    per rank. There, each rank draws from a seed of its own, derived from the common generator (which is left
    as it was).
    """
    if device.type == "cuda":
        yield
        return
    with torch.random.fork_rng(devices=[]):  # restores the common generator afterwards
        base = int(torch.randint(0, 2**62, (1,)))  # the same on every rank, given the run's common seed
        torch.manual_seed(base + distributed.rank())
        yield
