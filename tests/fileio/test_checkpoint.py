"""Checkpoints: atomic writes, checksums, keep-last-K, fallback past damaged files, no unpickling."""

import errno
import logging

import pytest
import torch

from openseer.fileio import checkpoint as ckpt
from openseer.fileio.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify,
)


def _state(step: int) -> dict:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "queue": {"embeddings": torch.randn(2, 5, 3), "filled": 5},
        "config": {"model": {"arch": "regnety_200mf", "head_hidden": [512]}, "optim": {"base_lr": 0.6}},
        "rng": {"torch": torch.get_rng_state()},
    }


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def test_round_trip(tmp_path):
    state = _state(7)
    path = save_checkpoint(state, tmp_path, step=7)
    assert path == checkpoint_path(tmp_path, 7) == tmp_path / "ckpt-00000007.pt"
    assert path.with_suffix(".sha256").read_text().split() == [ckpt._sha256(path), path.name]
    assert verify(path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["config"] == state["config"]
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert torch.equal(loaded["queue"]["embeddings"], state["queue"]["embeddings"])
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    momentum = loaded["optimizer"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, state["optimizer"]["state"][0]["momentum_buffer"])
    assert latest_checkpoint(tmp_path) == path
    assert _leftovers(tmp_path) == []


def test_keep_last_k(tmp_path):
    for step in (100, 200, 300, 400, 500):
        save_checkpoint({"step": step}, tmp_path, step, keep=3)
    kept = list_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["ckpt-00000300.pt", "ckpt-00000400.pt", "ckpt-00000500.pt"]
    assert sorted(p.name for p in tmp_path.glob("*.sha256")) == [p.with_suffix(".sha256").name for p in kept]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 500


def test_keep_zero_keeps_everything(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, tmp_path, step, keep=0)
    assert len(list_checkpoints(tmp_path)) == 3


def test_steps_are_ordered_numerically_and_other_files_ignored(tmp_path):
    for step in (9, 10, 100):
        save_checkpoint({"step": step}, tmp_path, step, keep=10)
    (tmp_path / "ckpt-final.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(tmp_path)] == [9, 10, 100]


def test_empty_or_missing_folder(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    assert list_checkpoints(tmp_path / "missing") == []


def test_truncated_newest_falls_back_to_previous(tmp_path, caplog):
    save_checkpoint(_state(1), tmp_path, 1)
    newest = save_checkpoint(_state(2), tmp_path, 2)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # e.g. the node died while the file system flushed
    assert not verify(newest)
    with caplog.at_level(logging.WARNING, logger="openseer.fileio.checkpoint"):
        found = latest_checkpoint(tmp_path)
    assert found == checkpoint_path(tmp_path, 1)
    assert load_checkpoint(found)["step"] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ckpt-00000002.pt" in warnings[0].getMessage()
    assert "corrupted" in warnings[0].getMessage()
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(newest)


def test_missing_sidecar_or_flipped_byte_is_not_trusted(tmp_path):
    first = save_checkpoint({"step": 1}, tmp_path, 1)
    second = save_checkpoint({"step": 2}, tmp_path, 2)
    third = save_checkpoint({"step": 3}, tmp_path, 3)
    third.with_suffix(".sha256").unlink()
    data = bytearray(second.read_bytes())
    data[-10] ^= 0xFF
    second.write_bytes(bytes(data))
    assert latest_checkpoint(tmp_path) == first


def test_all_damaged_gives_none(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path, 1)
    path.write_bytes(b"")
    assert latest_checkpoint(tmp_path) is None


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    good = save_checkpoint(_state(1), tmp_path, 1)
    real_save = torch.save

    def save_then_disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_disk_full)
    with pytest.raises(OSError) as info:
        save_checkpoint(_state(2), tmp_path, 2)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.pt", "ckpt-00000001.sha256"]
    assert latest_checkpoint(tmp_path) == good
    assert load_checkpoint(good)["step"] == 1


def test_failed_write_does_not_prune(tmp_path, monkeypatch):
    for step in (1, 2):
        save_checkpoint({"step": step}, tmp_path, step, keep=2)

    def boom(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint({"step": 3}, tmp_path, 3, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]


class _Payload:
    """Unpickling this calls open(path, 'w'), i.e. runs code chosen by whoever wrote the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    # the payload is live: a plain unpickle does create the file
    probe = tmp_path / "probe"
    torch.save({"x": _Payload(str(probe))}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False).get("x").close()
    assert probe.exists()

    target = tmp_path / "pwned"
    path = save_checkpoint(
        {"step": 1, "model": {"w": torch.ones(2)}, "evil": _Payload(str(target))}, tmp_path, 1
    )
    assert verify(path)  # a valid checksum does not make the content safe
    with pytest.raises(CheckpointError, match="refused on purpose"):
        load_checkpoint(path)
    assert not target.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(latest_checkpoint(tmp_path))
    assert not target.exists()


def test_garbage_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "ckpt-00000001.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="ckpt-00000001.pt"):
        load_checkpoint(path)
