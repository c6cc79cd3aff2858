"""Cluster health: how many prototypes the codes use, and how evenly."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def cluster_health(codes: torch.Tensor) -> dict[str, float]:
    """codes: (B, K). ``protos_used``: distinct argmax prototypes in the batch; ``usage_entropy``: entropy of
    the argmax histogram divided by its maximum log(min(B, K)) (1 = spread evenly, 0 = one prototype)."""
    b, k = codes.shape
    counts = torch.bincount(codes.argmax(dim=1), minlength=k).float()
    p = counts[counts > 0] / b
    entropy = float(-(p * p.log()).sum())
    top = float(counts.max()) / b
    return {
        "protos_used": float((counts > 0).sum()),
        "usage_entropy": entropy / math.log(min(b, k)) if min(b, k) > 1 else 0.0,
        "top_proto_share": top,
    }
