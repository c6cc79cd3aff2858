"""Build a SwAV model from its config, and load weights into a module with an error that lists every problem."""

from __future__ import annotations

import torch

from openseer.config import resolved
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.backbone import build_backbone, feature_dim, init_backbone_
from openseer.models.config import ModelConfig
from openseer.models.head import SwAVHead, SwAVModel


def build_model(cfg: ModelConfig) -> SwAVModel:
    """Backbone and SwAV head (projection MLP and prototypes), freshly initialised from torch's global RNG as
    ``cfg`` asks, on the current default device (inside ``torch.device('meta')`` nothing is allocated: see
    :func:`init_model_`)."""
    backbone = build_backbone(
        cfg.arch,
        cfg.stem,
        zero_init_last_bn=cfg.zero_init_last_bn,
        small_map_kernels=cfg.small_map_kernels,
        output_stride=cfg.output_stride,
    )
    prototypes = resolved(cfg.prototypes, "model.prototypes")
    head = SwAVHead(feature_dim(backbone), cfg.head_hidden, cfg.out_dim, prototypes, cfg.head_bn)
    return SwAVModel(backbone, head, cfg.crop_pass)


@torch.no_grad()
def init_model_(model: SwAVModel, zero_init_last_bn: bool) -> None:
    """Draw every parameter and buffer of ``model`` again, in place, as :func:`build_model` does.

    For a model built on the meta device and given storage with ``to_empty`` (whole, or as FSDP2 shards: each
    process then fills only its own shards).
    """
    init_backbone_(model.backbone, zero_init_last_bn)
    model.head.reset_parameters()


def random_model(cfg: ModelConfig, seed: int) -> SwAVModel:
    """The model of ``cfg`` at random initialisation drawn with ``seed``, in eval mode; torch's global RNG is
    left as it was. Pretraining draws its initial weights the same way, so this is the very network a run
    started from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg).eval()


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
