"""The embedding queue in checkpoints: every process's queue is saved as its own and given back to it on resume.

SwAV's queue is per process (each holds the last embeddings of its own batches) and Sinkhorn runs over the union
of all processes' queues and batches. Saving one process's queue and restoring it to all of them would put each
of its embeddings once per process into that union, and lose the others', until the queues refill. So a
checkpoint holds the queues of all processes side by side, ``(world, n_assign, length, dim)``, and process r gets
row r back (SwAV's reference code writes one queue file per rank for the same reason).

Resuming with another number of processes, or another ``swav.queue_length``: the filled entries of all saved
queues are pooled (rank 0's first) and dealt out in equal contiguous shares, so every saved embedding is held by
at most one process and none twice; the remainder that does not divide evenly (and whatever no longer fits) is
dropped, and the change is logged. A queue saved as a single process's ``(n_assign, length, dim)`` (older
checkpoints of multi-process runs held rank 0's only) is treated as the queue of a one-process job.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from openseer import distributed
from openseer.swav import EmbeddingQueue

log = logging.getLogger(__name__)


def gather_queues(queue: EmbeddingQueue) -> dict[str, torch.Tensor]:
    """Collective (every process must call it): the queues of all processes, on the CPU.

    Returns ``{"embeddings": (world, n_assign, length, dim), "filled": (world,) int64}``; row r is rank r's
    queue. With no process group, world is 1.
    """
    world, rank = distributed.world_size(), distributed.rank()
    local = queue.embeddings.detach()
    # each process writes its own row of a zero tensor and the sum over processes fills every row (one
    # collective through openseer.distributed, whose failures name the dead peer); x + 0 == x exactly
    rows = torch.zeros((world, *local.shape), dtype=local.dtype, device=local.device)
    rows[rank] = local
    filled = torch.zeros(world, dtype=torch.long, device=local.device)
    filled[rank] = queue.filled
    distributed.all_reduce_sum(rows)
    distributed.all_reduce_sum(filled)
    return {"embeddings": rows.cpu(), "filled": filled.cpu()}


def _as_job_queues(saved: dict[str, Any]) -> tuple[torch.Tensor, list[int]]:
    """(world, n_assign, length, dim) embeddings and the filled count of each saved process."""
    embeddings = saved["embeddings"]
    if embeddings.dim() == 3:  # one process's queue: (n_assign, length, dim)
        return embeddings.unsqueeze(0), [int(saved["filled"])]
    filled = saved["filled"]
    counts = filled.tolist() if isinstance(filled, torch.Tensor) else list(filled)
    if len(counts) != embeddings.shape[0]:
        raise ValueError(f"queue checkpoint: {len(counts)} filled counts for {embeddings.shape[0]} processes")
    return embeddings, [int(c) for c in counts]


def restore_queue(queue: EmbeddingQueue, saved: dict[str, Any]) -> None:
    """Load this process's queue from what :func:`gather_queues` returned when the checkpoint was written.

    Same number of processes and same queue shape: rank r gets exactly the queue rank r saved. Otherwise the
    saved filled entries are shared out as the module docstring says. Not a collective (every process reads the
    whole saved tensor and takes its part).
    """
    embeddings, filled = _as_job_queues(saved)
    saved_world = embeddings.shape[0]
    n_assign, dim = queue.embeddings.shape[0], queue.embeddings.shape[2]
    if (embeddings.shape[1], embeddings.shape[3]) != (n_assign, dim):
        raise ValueError(
            f"queue in checkpoint holds {embeddings.shape[1]} assignment crops of dim {embeddings.shape[3]}, "
            f"the config {n_assign} of dim {dim} (swav.crops_for_assign or model.out_dim changed)"
        )
    world, rank = distributed.world_size(), distributed.rank()
    if saved_world == world and embeddings.shape[2] == queue.length:
        queue.load_state_dict({"embeddings": embeddings[rank], "filled": filled[rank]})
        return
    if queue.length == 0:
        return
    pooled = torch.cat([embeddings[r, :, : filled[r]] for r in range(saved_world)], dim=1)
    share = min(pooled.shape[1] // world, queue.length)
    mine = torch.zeros_like(queue.embeddings, device="cpu")
    mine[:, :share] = pooled[:, rank * share : (rank + 1) * share]
    queue.load_state_dict({"embeddings": mine, "filled": share})
    if distributed.is_main():
        log.info(
            "embedding queue: %d processes saved %d entries in queues of %d; shared out over %d processes, "
            "%d each in queues of %d (%d dropped)",
            saved_world,
            pooled.shape[1],
            embeddings.shape[2],
            world,
            share,
            queue.length,
            pooled.shape[1] - share * world,
        )
