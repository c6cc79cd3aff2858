"""Sinkhorn-Knopp codes over the global batch (Caron et al. 2020, Sec. 3.1 and Appendix A.1)."""

from __future__ import annotations

import torch

from openseer import distributed


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft codes Q for prototype scores, with equal prototype mass over the *global* batch.

    scores: (B, K) local z^T C (any dtype). Returns Q (B, K) float32; over all processes every row sums to 1
    (each sample is fully assigned) and every column sums to B_global / K (equipartition).

    Works in float32 outside autocast. The global maximum is subtracted before the exponential: the constant
    cancels in the first normalisation, and exp can no longer overflow even for scores/epsilon ~ 100+.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        logits = scores.float() / epsilon
        peak = distributed.all_reduce_max(logits.max().clone())
        q = torch.exp(logits - peak).t()  # (K, B_local): rows are prototypes
        n_prototypes = q.shape[0]
        n_samples = torch.tensor(float(q.shape[1]), device=q.device)
        n_samples = distributed.all_reduce_sum(n_samples)

        total = distributed.all_reduce_sum(q.sum())
        q /= total
        for _ in range(iterations):
            # rows: total weight per prototype must be 1/K
            row_sums = distributed.all_reduce_sum(q.sum(dim=1, keepdim=True))
            q /= row_sums
            q /= n_prototypes
            # columns: total weight per sample must be 1/B
            q /= q.sum(dim=0, keepdim=True)
            q /= n_samples
        q *= n_samples  # columns sum to 1: each sample's code is a distribution over prototypes
        return q.t()


@torch.no_grad()
def sinkhorn_reference(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """The textbook algorithm in float64 on one process, for tests: Q = diag(u) exp(S/eps) diag(v)."""
    kernel = torch.exp(scores.double() / epsilon).t()
    n_prototypes, n_samples = kernel.shape
    q = kernel / kernel.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / n_prototypes
        q = q / q.sum(dim=0, keepdim=True) / n_samples
    return (q * n_samples).t()
