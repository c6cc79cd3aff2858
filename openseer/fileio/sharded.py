"""Sharded checkpoints of ``torch.distributed.checkpoint`` (DCP): where they are, and their tensors read into one
process as a plain state dict.

A sharded checkpoint is a folder ``dcp-<step>/`` holding DCP's files (each rank's shards and the ``.metadata``
index) and ``meta.json`` (the plain values: step, config, world size...); a folder with both is complete. Writing
them, and resuming a run with another number of processes, is :mod:`openseer.train.sharded_checkpoint`'s job;
reading the model's tensors back for evaluation or export is :func:`read_sharded_tensors`'s. Loading never
executes pickled code: DCP's non-tensor entries are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.planner import ReadItem

from openseer.fileio.checkpoint import CheckpointError

META = "meta.json"
_NAME = re.compile(r"^dcp-(\d{8})$")


class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner unpickles non-tensor entries with ``weights_only=False``; ours are numbers, strings
    and lists, which the restricted unpickler reads, and anything else is refused."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def sharded_path(folder: Path, step: int) -> Path:
    return folder / f"dcp-{step:08d}"


def list_sharded(folder: Path) -> list[Path]:
    """Complete sharded checkpoints in step order."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if _NAME.match(p.name) and (p / META).exists() and (p / ".metadata").exists()
    )


def latest_sharded(folder: Path) -> Path | None:
    found = list_sharded(folder)
    return found[-1] if found else None


def read_meta(path: Path) -> dict[str, Any]:
    """The plain values saved beside the tensors (``meta.json``)."""
    return json.loads((path / META).read_text())


def saved_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Empty tensors of the shapes and dtypes saved under ``prefix`` (keys without it): the targets DCP fills."""
    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    return {
        key.removeprefix(f"{prefix}."): torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in saved.items()
        if key.startswith(f"{prefix}.") and isinstance(meta, TensorStorageMetadata)
    }


def read_sharded_tensors(path: Path, prefix: str = "model") -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix`` (a whole model state dict, however many processes wrote it) gathered
    into this process as plain CPU tensors; a CheckpointError when the folder cannot be read."""
    try:
        tensors = saved_tensors(path, prefix)
        if not tensors:
            raise CheckpointError(f"the sharded checkpoint {path} holds no '{prefix}' tensors")
        with warnings.catch_warnings():  # DCP warns that one process loads alone: that is what is asked
            warnings.filterwarnings("ignore", "torch.distributed is disabled")
            # no_dist: this process reads every shard itself, whatever process group it may be in
            dcp.load({prefix: tensors}, checkpoint_id=path, planner=WeightsOnlyLoadPlanner(), no_dist=True)
    except CheckpointError:
        raise
    # DCP reports missing and damaged files with assorted exception types, a failed read as its own
    # CheckpointException (a BaseException) whose text ends with the reading rank's error
    except (Exception, CheckpointException) as err:
        lines = str(err).strip().splitlines()
        reason = lines[-1] if lines else err.__class__.__name__
        raise CheckpointError(f"cannot read the sharded checkpoint {path}: {reason}") from err
    return tensors
