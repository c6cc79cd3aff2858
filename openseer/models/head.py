"""SwAV projection head and prototypes (Caron et al. 2020, Sec. 3 and main_swav.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from openseer.models.padded_crops import padded_trunk_features

CropPass = Literal["by_size", "padded"]


@contextlib.contextmanager
def _autocast_off(device_type: str) -> Iterator[None]:
    """Autocast disabled for ``device_type`` (nothing to do on devices autocast does not know, e.g. meta)."""
    try:
        context = torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:
        context = contextlib.nullcontext()
    with context:
        yield


class SwAVHead(nn.Module):
    """Projection MLP -> L2-normalised embedding z -> prototype scores z @ C^T.

    ``hidden``: sizes of the hidden layers (SwAV RN50: [2048] with BN; SEER RG-256GF: [8192, 8192] without).
    The prototypes are a bias-free linear layer whose rows are kept at unit length by
    :meth:`normalize_prototypes`, called before every step.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, n_prototypes: int, use_bn: bool
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for width in hidden:
            layers.append(nn.Linear(dim, width))
            if use_bn:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
            dim = width
        layers.append(nn.Linear(dim, out_dim))
        self.projection = nn.Sequential(*layers)
        self.prototypes = nn.Linear(out_dim, n_prototypes, bias=False)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype row c_k back onto the unit sphere."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1, p=2))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every weight again as at construction (torch's Linear/BatchNorm defaults, unit prototypes).

        Used to materialise a head built on the meta device; works on sharded (DTensor) parameters too.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.BatchNorm1d):
                module.reset_parameters()
        self.normalize_prototypes()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, in_dim) -> embeddings z (N, out_dim) float32 with ||z||=1, scores (N, K) = z C^T float32.

        The projection MLP follows the caller's autocast; the normalisation and the prototype scores do not.
        The codes are computed from exp(scores / epsilon): in bfloat16 (8 significant bits) a score near 1 is
        off by up to 2^-9, which moves scores / epsilon by up to 0.04 at epsilon 0.05 (0.07 at 0.03) and skews
        the codes. VISSL's FSDP head for SEER 10B keeps the prototype weights in float32 for the same reason,
        though its autocast still computes their product in float16 (docs/conformance.md).
        """
        h = self.projection(features)
        with _autocast_off(h.device.type):
            z = F.normalize(h.float(), dim=1, p=2)
            return z, self.prototypes(z)


class SwAVModel(nn.Module):
    """Backbone and head kept apart (evaluation touches only ``backbone``).

    ``crop_pass``: how the multi-crop batch goes through the backbone (``model.crop_pass``): ``'by_size'``, one
    pass per run of same-size crops (swav src/resnet50.py ``forward``, VISSL ``multi_res_input_forward``);
    ``'padded'``, one pass over every crop zero-padded to the largest, the padding cut before the average pool
    (VISSL's SEER 10B: :mod:`openseer.models.padded_crops`).
    """

    def __init__(self, backbone: nn.Module, head: SwAVHead, crop_pass: CropPass = "by_size") -> None:
        super().__init__()
        if crop_pass not in ("by_size", "padded"):
            raise ValueError(f"unknown crop pass {crop_pass!r} (expected 'by_size' or 'padded')")
        self.backbone = backbone
        self.head = head
        self.crop_pass = crop_pass

    def forward(self, crops: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """crops: per-crop batches [(B,3,s_i,s_i)]. Returns z (n_crops*B, D) and scores (n_crops*B, K),
        crop-major. By size, consecutive crops of one size run through the backbone as a single batch."""
        if self.crop_pass == "padded":
            return self.head(padded_trunk_features(self.backbone, crops))
        features = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            batch = torch.cat(list(crops[start:end])) if end - start > 1 else crops[start]
            features.append(self.backbone(batch))
            start = end
        return self.head(torch.cat(features))
