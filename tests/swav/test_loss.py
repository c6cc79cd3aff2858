"""Swapped prediction loss (Caron et al. 2020, Eq. 1-2; swav main_swav.py training loop).

For each assignment crop a with codes q_a and every other crop v: -mean_b sum_k q_a[b,k] log p_v[b,k], with
p_v = softmax(scores_v / tau); averaged over the other crops, then over the assignment crops.
"""

import math

import pytest
import torch

from openseer.swav.loss import swav_loss
from openseer.swav.sinkhorn import sinkhorn


def _hand_loss(scores, codes, n_crops, crops_for_assign, temperature):
    """Explicit loops in float64 with the log-softmax written out."""
    s = scores.double().tolist()
    batch = len(s) // n_crops
    total = 0.0
    for q_crop, crop_id in zip(codes, crops_for_assign, strict=True):
        q = q_crop.double().tolist()
        sub = 0.0
        others = [v for v in range(n_crops) if v != crop_id]
        for v in others:
            ce = 0.0
            for b in range(batch):
                row = [x / temperature for x in s[v * batch + b]]
                top = max(row)
                log_norm = top + math.log(sum(math.exp(x - top) for x in row))
                ce += -sum(q[b][k] * (row[k] - log_norm) for k in range(len(row)))
            sub += ce / batch
        total += sub / len(others)
    return total / len(crops_for_assign)


def _random(n_crops, batch, k, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_crops * batch, k, generator=g) * 0.5
    codes = [torch.softmax(torch.randn(batch, k, generator=g) * 2, dim=1) for _ in range(2)]
    return scores, codes


def test_two_crops_by_hand():
    # 2 crops x 2 samples x 3 prototypes, crops_for_assign [0, 1]: crop 0 predicts q_1 and crop 1 predicts q_0
    scores = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.5], [-0.3, 0.2, 0.1], [0.0, 0.4, -0.1]])
    q0 = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    q1 = torch.tensor([[0.2, 0.2, 0.6], [1.0, 0.0, 0.0]])
    tau = 0.1
    loss = swav_loss(scores, [q0, q1], n_crops=2, crops_for_assign=[0, 1], temperature=tau)
    # written out: (CE(q0 -> crop 1) + CE(q1 -> crop 0)) / 2
    log_p = torch.log_softmax(scores.double() / tau, dim=1)
    ce_q0_crop1 = -(q0.double() * log_p[2:]).sum(1).mean()
    ce_q1_crop0 = -(q1.double() * log_p[:2]).sum(1).mean()
    expected = float((ce_q0_crop1 + ce_q1_crop0) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(_hand_loss(scores, [q0, q1], 2, [0, 1], tau), rel=1e-5)


@pytest.mark.parametrize("crops_for_assign", [[0, 1], [0], [1], [2, 0]])
def test_three_crops_by_hand(crops_for_assign):
    scores, codes = _random(n_crops=3, batch=4, k=5, seed=0)
    codes = codes[: len(crops_for_assign)]
    loss = swav_loss(scores, codes, n_crops=3, crops_for_assign=crops_for_assign, temperature=0.1)
    expected = _hand_loss(scores, codes, 3, crops_for_assign, 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_multicrop_swav_layout_by_hand():
    # 2 large + 4 small crops, codes from the two large ones (SEER layout), temperature 0.2
    scores, codes = _random(n_crops=6, batch=3, k=7, seed=1)
    loss = swav_loss(scores, codes, n_crops=6, crops_for_assign=[0, 1], temperature=0.2)
    assert loss.item() == pytest.approx(_hand_loss(scores, codes, 6, [0, 1], 0.2), rel=1e-5)


def test_assignment_crop_does_not_predict_itself():
    """Changing crop a's own scores cannot change the loss of its codes when a is the only assigner."""
    scores, codes = _random(n_crops=3, batch=4, k=5, seed=2)
    base = swav_loss(scores, codes[:1], 3, [0])
    moved = scores.clone()
    moved[:4] += torch.randn(4, 5)
    assert swav_loss(moved, codes[:1], 3, [0]).item() == pytest.approx(base.item(), rel=1e-6)
    moved = scores.clone()
    moved[4:8] += torch.randn(4, 5)
    assert swav_loss(moved, codes[:1], 3, [0]).item() != pytest.approx(base.item(), rel=1e-3)


def test_confident_correct_predictions_give_zero_loss():
    k = 6
    targets = torch.tensor([0, 3, 5, 1])
    q = torch.nn.functional.one_hot(targets, k).float()
    scores = torch.cat([q, q]) * 10.0  # scores/tau = 100 on the right prototype
    loss = swav_loss(scores, [q, q], n_crops=2, crops_for_assign=[0, 1], temperature=0.1)
    assert 0 <= loss.item() < 1e-6
    # the same confidence on the wrong prototype is heavily penalised
    wrong = torch.nn.functional.one_hot((targets + 1) % k, k).float()
    bad = swav_loss(torch.cat([wrong, wrong]) * 10.0, [q, q], 2, [0, 1], 0.1)
    assert bad.item() == pytest.approx(100.0, rel=1e-4)


def test_cross_entropy_is_bounded_below_by_code_entropy():
    scores, codes = _random(n_crops=2, batch=5, k=4, seed=3)
    loss = swav_loss(scores, codes, 2, [0, 1], 0.1)
    entropy = sum(float(-(q * q.log()).sum(1).mean()) for q in codes) / 2
    assert loss.item() >= entropy - 1e-6
    # and reaches it when the predictions equal the codes
    swapped = torch.cat([codes[1], codes[0]]).log() * 0.1  # softmax(scores/0.1) of crop 0 == codes[1]
    assert swav_loss(swapped, codes, 2, [0, 1], 0.1).item() == pytest.approx(entropy, rel=1e-5)


@pytest.mark.parametrize("k", [3, 100, 3000])
def test_uniform_scores_give_log_k(k):
    batch = 4
    scores = torch.full((3 * batch, k), 0.37)
    codes = [torch.softmax(torch.randn(batch, k), dim=1) for _ in range(2)]
    loss = swav_loss(scores, codes, n_crops=3, crops_for_assign=[0, 1], temperature=0.1)
    assert loss.item() == pytest.approx(math.log(k), rel=1e-5)


def test_gradient_flows_to_the_predicting_scores_only():
    """Codes come from sinkhorn (no graph): crop 0's own scores get no gradient when only crop 0 assigns, and
    crop 1's gradient is the softmax-minus-codes formula."""
    batch, k, tau = 4, 5, 0.1
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(2 * batch, k, generator=g).requires_grad_()
    q = sinkhorn(scores[:batch], epsilon=0.05, iterations=3)
    assert not q.requires_grad
    loss = swav_loss(scores, [q], n_crops=2, crops_for_assign=[0], temperature=tau)
    loss.backward()
    assert scores.grad is not None
    assert torch.equal(scores.grad[:batch], torch.zeros(batch, k))
    expected = (torch.softmax(scores.detach()[batch:] / tau, dim=1) - q) / (tau * batch)
    torch.testing.assert_close(scores.grad[batch:], expected, atol=1e-6, rtol=1e-4)


def test_loss_is_float32_for_bf16_scores():
    scores, codes = _random(n_crops=2, batch=3, k=4, seed=5)
    loss = swav_loss(scores.bfloat16(), codes, 2, [0, 1])
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(
        _hand_loss(scores.bfloat16().float(), codes, 2, [0, 1], 0.1), rel=1e-5
    )


def test_codes_and_assignment_crops_must_pair_up():
    scores, codes = _random(n_crops=2, batch=3, k=4, seed=6)
    with pytest.raises(ValueError):
        swav_loss(scores, codes[:1], 2, [0, 1])
