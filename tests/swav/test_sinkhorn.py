"""Sinkhorn-Knopp codes (Caron et al. 2020, Sec. 3.1 / Appendix A.1; swav main_swav.py distributed_sinkhorn).

Q = diag(u) exp(S / eps) diag(v), scaled so that every sample's code sums to 1 and every prototype receives
B / K of the total mass. The reference behaviour is re-derived below with plain Python float64 loops.
"""

import math

import pytest
import torch

from openseer.swav.sinkhorn import sinkhorn, sinkhorn_reference


def _scores(b: int, k: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, k, generator=g) * 2 - 1) * scale


def _plain_sinkhorn(scores: list[list[float]], epsilon: float, iterations: int) -> list[list[float]]:
    """The algorithm written out element by element in float64: alternate prototype / sample normalisation.

    Works on the (K, B) matrix like the paper's pseudo-code, but on log q (each normalisation divides by a sum,
    i.e. subtracts a log-sum-exp) so that it stays exact for any scores / epsilon.
    """
    b, k = len(scores), len(scores[0])

    def lse(values: list[float]) -> float:
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    log_q = [[scores[j][i] / epsilon for j in range(b)] for i in range(k)]  # (K, B)
    total = lse([v for row in log_q for v in row])
    log_q = [[v - total for v in row] for row in log_q]
    for _ in range(iterations):
        for i in range(k):  # each prototype gets 1/K of the mass
            norm = lse(log_q[i]) + math.log(k)
            log_q[i] = [v - norm for v in log_q[i]]
        for j in range(b):  # each sample gets 1/B of the mass
            norm = lse([log_q[i][j] for i in range(k)]) + math.log(b)
            for i in range(k):
                log_q[i][j] -= norm
    return [[math.exp(log_q[i][j]) * b for i in range(k)] for j in range(b)]  # (B, K), rows sum to 1


def test_rows_sum_to_one_and_columns_to_b_over_k_after_many_iterations():
    b, k = 64, 16
    q = sinkhorn(_scores(b, k), epsilon=0.05, iterations=200)
    assert q.shape == (b, k)
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), b / k), atol=1e-4, rtol=1e-5)


def test_three_iterations_are_already_roughly_balanced():
    b, k = 64, 16
    s = _scores(b, k, seed=1)
    q = sinkhorn(s, epsilon=0.05, iterations=3)
    # samples: exact (the last normalisation is over samples)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b), atol=1e-5, rtol=0)
    # prototypes: within 50% of B/K after 3 iterations, far closer than the raw softmax would be
    col = q.sum(dim=0) / (b / k)
    assert (col - 1).abs().max() < 0.5
    raw = torch.softmax(s / 0.05, dim=1).sum(dim=0) / (b / k)
    assert (col - 1).abs().max() < (raw - 1).abs().max()


def test_more_iterations_get_closer_to_equipartition():
    b, k = 64, 16
    s = _scores(b, k, seed=2)
    errors = [(sinkhorn(s, 0.05, n).sum(0) / (b / k) - 1).abs().max().item() for n in (1, 3, 10, 50)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_matches_float64_reference(iterations):
    s = _scores(48, 12, seed=3)
    q = sinkhorn(s, epsilon=0.05, iterations=iterations)
    ref = sinkhorn_reference(s, epsilon=0.05, iterations=iterations)
    torch.testing.assert_close(q.double(), ref, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("iterations", [1, 3, 7])
def test_matches_hand_written_loop(iterations):
    s = _scores(7, 5, seed=4)
    expected = torch.tensor(_plain_sinkhorn(s.double().tolist(), 0.05, iterations), dtype=torch.float64)
    torch.testing.assert_close(sinkhorn(s, 0.05, iterations).double(), expected, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(sinkhorn_reference(s, 0.05, iterations), expected, atol=1e-12, rtol=1e-10)


def test_reference_itself_is_balanced():
    """Guards the reference the other tests compare against."""
    b, k = 30, 6
    ref = sinkhorn_reference(_scores(b, k, seed=5), 0.05, 500)
    torch.testing.assert_close(ref.sum(1), torch.ones(b, dtype=torch.float64))
    torch.testing.assert_close(ref.sum(0), torch.full((k,), b / k, dtype=torch.float64))


@pytest.mark.parametrize("epsilon", [0.01, 0.005, 0.001])
def test_no_overflow_for_large_scores_over_epsilon(epsilon):
    # scores / epsilon up to 1000: exp() of that overflows float32 (and float64) without the max shift
    s = _scores(64, 16, seed=6)
    assert float(s.abs().max()) / epsilon > 88  # float32 exp overflows above ~88.7
    q = sinkhorn(s, epsilon=epsilon, iterations=3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    expected = torch.tensor(_plain_sinkhorn(s.double().tolist(), epsilon, 3), dtype=torch.float64)
    torch.testing.assert_close(q.double(), expected, atol=1e-5, rtol=1e-3)


def test_bf16_input_gives_finite_float32_codes():
    s = _scores(64, 16, seed=7).bfloat16()
    q = sinkhorn(s, epsilon=0.005, iterations=3)
    assert q.dtype == torch.float32
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    # same as running on the (exactly representable) float32 upcast of the bf16 scores
    torch.testing.assert_close(q, sinkhorn(s.float(), epsilon=0.005, iterations=3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_output_is_float32(dtype):
    assert sinkhorn(_scores(8, 4).to(dtype), 0.05, 3).dtype == torch.float32


def test_under_cpu_autocast_bf16():
    s = _scores(32, 8, seed=8)
    expected = sinkhorn(s, 0.05, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = sinkhorn(s, 0.05, 3)
        q_bf16_in = sinkhorn(s.bfloat16(), 0.05, 3)
    assert q.dtype == torch.float32 and q_bf16_in.dtype == torch.float32
    # autocast must not leak into the float32 computation
    torch.testing.assert_close(q, expected, atol=0, rtol=0)
    assert torch.isfinite(q_bf16_in).all()
    torch.testing.assert_close(q_bf16_in.sum(dim=1), torch.ones(32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shift", [-30.0, 5.0, 1000.0])
def test_invariant_to_a_constant_added_to_all_scores(shift):
    # scores on a 2^-10 grid, epsilon a power of two: scores + shift and their logits are exact in float32, so
    # the constant must cancel exactly
    s = torch.round(_scores(32, 8, seed=9) * 1024) / 1024
    torch.testing.assert_close(sinkhorn(s + shift, 1 / 16, 3), sinkhorn(s, 1 / 16, 3), atol=1e-7, rtol=1e-6)


def test_invariant_to_a_constant_up_to_float32_rounding():
    s = _scores(32, 8, seed=9)
    torch.testing.assert_close(sinkhorn(s + 5.0, 0.05, 3), sinkhorn(s, 0.05, 3), atol=1e-5, rtol=1e-4)


def test_codes_follow_the_scores():
    """Each sample's largest code is its best-scoring prototype when the batch is already balanced."""
    k = 8
    s = torch.eye(k).repeat(4, 1) * 0.9 + 0.05  # 32 samples, each prototype best for 4 of them
    q = sinkhorn(s, 0.05, 3)
    assert torch.equal(q.argmax(dim=1), s.argmax(dim=1))


def test_no_gradient_and_input_untouched():
    s = _scores(16, 4, seed=10).requires_grad_()
    before = s.detach().clone()
    q = sinkhorn(s, 0.05, 3)
    assert not q.requires_grad
    assert torch.equal(s.detach(), before)


def test_random_scores_at_tiny_epsilon_never_give_nan():
    # with a plain exp, a sample whose best score is ~0.5 below every prototype's best underflows to an
    # all-zero column at epsilon 0.005 and 0/0 turned the whole Q into NaN for about 1 batch in 4
    for seed in range(20):
        s = _scores(64, 16, seed=seed)
        q = sinkhorn(s, epsilon=0.005, iterations=3)
        assert torch.isfinite(q).all(), seed
        torch.testing.assert_close(q.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)


def test_dead_prototype_and_outlier_sample_at_tiny_epsilon():
    s = _scores(32, 8, seed=11)
    s[:, 3] = -1.0  # a prototype far from every sample
    s[5, :] = -1.0  # a sample far from every prototype
    q = sinkhorn(s, epsilon=0.005, iterations=3)
    assert torch.isfinite(q).all()
    expected = torch.tensor(_plain_sinkhorn(s.double().tolist(), 0.005, 3), dtype=torch.float64)
    torch.testing.assert_close(q.double(), expected, atol=1e-5, rtol=1e-3)
    # equipartition still gives the dead prototype its share once iterated
    q = sinkhorn(s, epsilon=0.005, iterations=2000)
    torch.testing.assert_close(q.sum(dim=0)[3], torch.tensor(32 / 8), atol=1e-3, rtol=0)
