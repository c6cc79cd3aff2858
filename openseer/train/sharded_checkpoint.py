"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), resumable with another number of processes.

``checkpoints/dcp-<step>/`` holds DCP's files (each rank writes its own shards, rank 0 the ``.metadata``) for the
model, the optimiser, every process's embedding queue ``(world, n_assign, length, dim)`` and the other tensors of
the training state, plus ``meta.json`` for the plain values (step, counters, grad-scaler state, config, world
size, the filled count of each queue). DCP records every tensor by its global name and shape, so a checkpoint
written by N processes loads into M processes (or into a single process with no process group at all); each
process gets its own queue back, or a share of the saved ones when N != M
(:mod:`openseer.train.queue_checkpoint`).

A checkpoint is written to ``dcp-<step>.tmp/`` and renamed by rank 0 once complete, so a folder named
``dcp-<step>`` is always whole; the newest one is resumed. Loading never executes pickled code: DCP's non-tensor
entries (optimiser hyper-parameters) are read with ``torch.load(weights_only=True)``. Finding the folders and
reading a model out of one in a single process (evaluation, export) is :mod:`openseer.fileio.sharded`'s.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from openseer import distributed
from openseer.fileio.sharded import (
    META,
    WeightsOnlyLoadPlanner,
    latest_sharded,
    list_sharded,
    read_meta,
    saved_tensors,
    sharded_path,
)
from openseer.swav import EmbeddingQueue
from openseer.train.queue_checkpoint import gather_queues, restore_queue

log = logging.getLogger(__name__)

_TENSORS = "tensors"  # DCP key holding the loose tensors of the training state (RNG states...)

__all__ = ["latest_sharded", "list_sharded", "load_sharded", "save_sharded", "sharded_path"]


def _split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (and lists of tensors, as ``key/i``) for DCP; everything else must be JSON for meta.json."""
    tensors, plain = {}, {"_lists": {}}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, list | tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            tensors.update({f"{key}/{i}": v for i, v in enumerate(value)})
            plain["_lists"][key] = len(value)
        else:
            plain[key] = value
    return tensors, plain


def save_sharded(
    folder: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    queue: EmbeddingQueue,
    state: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Collective: every rank writes its shards of model and optimiser; returns the checkpoint folder."""
    final = sharded_path(folder, step)
    tmp = final.with_name(final.name + ".tmp")
    if distributed.is_main():
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while writing
        tmp.mkdir(parents=True)
    distributed.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    tensors, plain = _split_state(state)
    queues = gather_queues(queue)  # a collective: every process's queue, to be given back to it
    plain["_queue_filled"] = queues["filled"].tolist()
    plain["world_size"] = distributed.world_size()
    content = {
        "model": model_state,
        "optimizer": optim_state,
        "queue": queues["embeddings"],
        _TENSORS: tensors,
    }
    with warnings.catch_warnings():  # DCP warns that one process saves alone even when told so
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        # returns on rank 0 once every rank's files and the .metadata are written
        dcp.save(content, checkpoint_id=tmp, no_dist=not distributed.is_enabled())
    if distributed.is_main():
        (tmp / META).write_text(json.dumps(plain, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_sharded(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _saved_queues(embeddings: torch.Tensor, filled: int | list[int], world: int) -> dict[str, Any]:
    """The saved queues as :func:`restore_queue` reads them. Checkpoints written before queues were saved per
    process hold them concatenated, (n_assign, world * length, dim), with one filled count for all."""
    if isinstance(filled, list):
        return {"embeddings": embeddings, "filled": filled}
    per_process = embeddings.unflatten(1, (world, -1)).transpose(0, 1)
    return {"embeddings": per_process, "filled": [filled] * world}


def load_sharded(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, queue: EmbeddingQueue
) -> dict[str, Any]:
    """Collective: load model, optimiser and this process's queue in place, resharded to the current number
    of processes; returns the rest of the saved ``state`` (same keys as given to save)."""
    plain = read_meta(path)
    model_state, optim_state = get_state_dict(model, optimizer)  # the targets, sharded like the live model
    tensors = saved_tensors(path, _TENSORS)  # loose tensors are allocated from their saved shapes
    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    full_queue = torch.empty(saved["queue"].size, dtype=queue.embeddings.dtype)
    content = {"model": model_state, "optimizer": optim_state, "queue": full_queue, _TENSORS: tensors}
    with warnings.catch_warnings():  # as in save_sharded
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(
            content,
            checkpoint_id=path,
            planner=WeightsOnlyLoadPlanner(),
            no_dist=not distributed.is_enabled(),
        )
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)

    world = distributed.world_size()
    restore_queue(queue, _saved_queues(full_queue, plain["_queue_filled"], plain["world_size"]))
    state = {k: v for k, v in plain.items() if not k.startswith("_") and k != "world_size"}
    state.update({k: v for k, v in tensors.items() if "/" not in k})
    for key, n in plain["_lists"].items():
        state[key] = [tensors[f"{key}/{i}"] for i in range(n)]
    if plain["world_size"] != world:
        log.info("resharded %s from %d to %d processes", path, plain["world_size"], world)
    return state
