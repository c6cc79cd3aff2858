"""Process-group helpers that fall back to a single process.

Every sum over the global batch in openseer goes through these functions, so the same code runs on one CPU
process and under ``torchrun`` on many GPUs. With no process group initialised they are no-ops (world size 1).
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched_with_torchrun() -> bool:
    """torchrun (and SLURM wrappers that mimic it) export these variables; we never configure them by hand."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device, timeout_s: float = 600.0) -> bool:
    """Join the process group described by torchrun's environment; returns whether one was joined.

    ``timeout_s`` bounds every collective, so a dead rank ends the job with an error instead of a hang.
    """
    if is_enabled() or not launched_with_torchrun():
        return is_enabled()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("joined process group: rank %d of %d (%s)", rank(), world_size(), backend)
    return True


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over all processes; returns the tensor for chaining."""
    if is_enabled():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if is_enabled():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def destroy() -> None:
    if is_enabled():
        dist.destroy_process_group()
