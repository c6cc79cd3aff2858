"""SwAV projection head and prototypes (Caron et al. 2020, Sec. 3 and main_swav.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


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

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, in_dim) -> embeddings z (N, out_dim) with ||z||=1, scores (N, K) = z C^T."""
        z = F.normalize(self.projection(features), dim=1, p=2)
        return z, self.prototypes(z)


class SwAVModel(nn.Module):
    """Backbone and head kept apart (evaluation touches only ``backbone``)."""

    def __init__(self, backbone: nn.Module, head: SwAVHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """crops: per-crop batches [(B,3,s_i,s_i)]; consecutive crops of one size run through the backbone as a
        single batch. Returns z (n_crops*B, D) and scores (n_crops*B, K), crop-major."""
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
