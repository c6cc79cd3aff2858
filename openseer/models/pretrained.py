"""Rebuild a pretrained network from an openseer checkpoint (no pickled code is executed)."""

from __future__ import annotations

from pathlib import Path

import torch

from openseer.config import from_dict
from openseer.models.head import SwAVModel
from openseer.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from openseer.train.config import PretrainConfig


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder / checkpoints folder (then its newest valid checkpoint)."""
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


def load_pretrained(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SwAVModel, PretrainConfig]:
    """(SwAVModel with trained weights in eval mode, the config it was trained with).

    ``path``: a ``ckpt-*.pt`` file or a run folder. Mismatched weights raise a CheckpointError listing the
    missing, unexpected and wrongly shaped keys.
    """
    from openseer.train.pretrain import build_model  # the loop module imports this one's siblings

    file = resolve_checkpoint(path)
    state = load_checkpoint(file, map_location=map_location)
    if "config" not in state or "model" not in state:
        raise CheckpointError(
            f"{file} is not an openseer pretraining checkpoint (no 'config'/'model' entries)"
        )
    cfg = from_dict(PretrainConfig, state["config"])
    model = build_model(cfg)
    load_state_checked(model, state["model"], source=str(file))
    return model.eval(), cfg


def load_state_checked(
    module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """``load_state_dict`` that reports every missing, unexpected and mismatched key in one error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError(f"{source} does not fit this architecture; " + "; ".join(parts))
    module.load_state_dict(state)
