"""Sharded (torch.distributed.checkpoint) checkpoints: which folders are whole, and a model read back in one process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from openseer.fileio.checkpoint import CheckpointError
from openseer.fileio.sharded import (
    latest_sharded,
    list_sharded,
    read_meta,
    read_sharded_tensors,
    sharded_path,
)


def _model_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "backbone.conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "backbone.bn.num_batches_tracked": torch.tensor(7),
        "head.prototypes.weight": torch.randn(5, 4, generator=gen).bfloat16(),
    }


def _write(folder: Path, step: int, meta: bool = True) -> Path:
    """A checkpoint as a one-process run writes it: DCP's files, then meta.json."""
    path = sharded_path(folder, step)
    content = {"model": _model_state(), "optimizer": {"lr": 0.1}, "tensors": {"rng": torch.arange(3)}}
    with warnings.catch_warnings():  # DCP warns that one process saves alone: that is the point here
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.save(content, checkpoint_id=path, no_dist=True)
    if meta:
        (path / "meta.json").write_text(json.dumps({"step": step, "config": {"model": {"arch": "x"}}}))
    return path


def test_only_whole_checkpoints_are_listed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    assert list_sharded(folder) == [] and latest_sharded(folder) is None
    first, second = _write(folder, 3), _write(folder, 12)
    _write(folder, 20, meta=False)  # killed before meta.json: not whole
    (folder / "dcp-00000030.tmp").mkdir()  # being written
    assert list_sharded(folder) == [first, second] and latest_sharded(folder) == second
    assert read_meta(second)["step"] == 12


def test_the_model_is_read_back_as_plain_tensors(tmp_path: Path) -> None:
    path = _write(tmp_path, 5)
    state = read_sharded_tensors(path, "model")
    expected = _model_state()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    assert torch.equal(read_sharded_tensors(path, "tensors")["rng"], torch.arange(3))


def test_missing_parts_and_damaged_files_are_checkpoint_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, 5)
    with pytest.raises(CheckpointError, match="holds no 'queue' tensors"):
        read_sharded_tensors(path, "queue")
    for shard in path.glob("*.distcp"):
        shard.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot read the sharded checkpoint") as err:
        read_sharded_tensors(path, "model")
    assert "\n" not in str(err.value)  # one line naming the reading rank's error, not DCP's traceback
