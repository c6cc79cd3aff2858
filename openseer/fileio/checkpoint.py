"""Self-describing checkpoints written atomically, verified on load, never unpickled.

One file holds model, optimiser, scaler, queue, step, config and RNG states, so a resume needs nothing else.
Writes go to a temporary file in the same folder, are flushed and fsynced, then renamed over the target; a
``.sha256`` sidecar lets :func:`latest_checkpoint` detect a truncated or corrupted file and fall back to the
previous one. Loading uses ``torch.load(weights_only=True)``: a file carrying a pickled payload is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import torch

from openseer.fileio.atomic import atomic_write

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"ckpt-{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int = 3) -> Path:
    """Write ``state`` as ``folder/ckpt-<step>.pt`` (+ checksum) and delete all but the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    atomic_write(path, lambda f: torch.save(state, f))
    digest = _sha256(path)
    atomic_write(path.with_suffix(".sha256"), lambda f: f.write(f"{digest}  {path.name}\n".encode()))
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        old.with_suffix(".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in step order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def verify(path: Path) -> bool:
    sidecar = path.with_suffix(".sha256")
    if not sidecar.exists():
        return False
    expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
    return expected == _sha256(path)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose checksum matches; corrupted newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(folder)):
        if verify(path):
            return path
        log.warning(
            "checkpoint %s is truncated or corrupted (checksum mismatch); trying the previous one", path
        )
    return None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing any pickled code (``weights_only=True``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (
        Exception
    ) as err:  # torch raises UnpicklingError, RuntimeError, EOFError... depending on the damage
        raise CheckpointError(
            f"cannot load checkpoint {path}: {err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            " (files carrying arbitrary pickled objects are refused on purpose)"
        ) from err


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or for a run folder / checkpoints folder its newest valid checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            found = latest_checkpoint(folder)
            if found is not None:
                return found
        raise CheckpointError(f"no valid checkpoint under {path}")
    if not path.exists():
        raise CheckpointError(f"checkpoint does not exist: {path}")
    return path


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/ckpt-*.pt`` -> ``RUN``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
