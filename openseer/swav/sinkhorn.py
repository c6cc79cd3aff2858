"""Sinkhorn-Knopp codes over the global batch (Caron et al. 2020, Sec. 3.1 and Appendix A.1)."""

from __future__ import annotations

import math

import torch

from openseer import distributed


def _global_log_sum(x: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """log of the sum of exp(x) over ``dim`` and all processes, shifted by the global max (cannot overflow)."""
    peak = distributed.all_reduce_max(x.amax(dim=dim, keepdim=True))
    return distributed.all_reduce_sum(torch.exp(x - peak).sum(dim=dim, keepdim=True)).log() + peak


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft codes Q for prototype scores, with equal prototype mass over the *global* batch.

    scores: (B, K) local z^T C (any dtype). Returns Q (B, K) float32; over all processes every row sums to 1
    (each sample is fully assigned) and every column sums to B_global / K (equipartition).

    Works in float32 outside autocast, in the log domain: the normalisations are log-sum-exps (each shifted by
    its global maximum), so exp can neither overflow nor underflow a whole prototype's or sample's mass to 0
    (which gave 0/0 = NaN codes) even for scores/epsilon ~ 100+.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = (scores.float() / epsilon).t()  # (K, B_local): rows are prototypes
        n_prototypes = log_q.shape[0]
        n_samples = torch.tensor(float(log_q.shape[1]), device=log_q.device)
        n_samples = distributed.all_reduce_sum(n_samples)

        log_q = log_q - _global_log_sum(log_q, (0, 1))
        for _ in range(iterations):
            # rows: total weight per prototype must be 1/K
            log_q = log_q - _global_log_sum(log_q, (1,)) - math.log(n_prototypes)
            # columns: total weight per sample must be 1/B (samples are local to the process)
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - n_samples.log()
        # columns sum to 1: each sample's code is a distribution over prototypes
        return torch.exp(log_q + n_samples.log()).t()


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
