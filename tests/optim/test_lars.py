"""LARS as apex LARC (clip=False) wrapped around SGD-momentum, used by swav main_swav.py and SEER.

apex LARC, for a parameter with ||p|| != 0 and ||g|| != 0:
    local_lr = trust * ||p|| / (||g|| + wd * ||p|| + eps);  g <- (g + wd * p) * local_lr
otherwise the gradient is left alone (no decay either); then torch SGD with momentum (wd 0, dampening 0):
    buf = g (first step) or momentum * buf + g;  p <- p - lr * buf
"""

import math

import pytest
import torch
from torch import nn

from openseer.optim.lars import LARS, param_groups


def _apex_larc_step(p, g, buf, lr, wd, momentum, trust, eps, adapt=True):
    """One step in float64 plain Python over flattened values; returns new p and buffer."""
    p_norm = math.sqrt(sum(x * x for x in p))
    g_norm = math.sqrt(sum(x * x for x in g))
    if adapt and p_norm != 0 and g_norm != 0:
        local = trust * p_norm / (g_norm + wd * p_norm + eps)
        g = [(gi + wd * pi) * local for gi, pi in zip(g, p, strict=True)]
    buf = list(g) if buf is None else [momentum * b + gi for b, gi in zip(buf, g, strict=True)]
    return [pi - lr * b for pi, b in zip(p, buf, strict=True)], buf


def _param(values, shape):
    return nn.Parameter(torch.tensor(values, dtype=torch.float64).view(shape))


def test_param_groups_split_1d_from_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters are left out
    decay, plain = param_groups(model, weight_decay=1e-5)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in plain["params"]} == {id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    assert decay["weight_decay"] == 1e-5 and not decay["lars_exclude"]
    assert plain["weight_decay"] == 0.0 and plain["lars_exclude"]


def test_excluded_1d_parameters_follow_plain_sgd_momentum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1.0, 1.0)
    reference = [p.detach().clone().requires_grad_() for p in (model[0].bias, model[1].weight, model[1].bias)]
    opt = LARS(param_groups(model, weight_decay=0.1), lr=0.5, momentum=0.9)
    sgd = torch.optim.SGD(reference, lr=0.5, momentum=0.9)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in reference]
        for p, r, g in zip((model[0].bias, model[1].weight, model[1].bias), reference, grads, strict=True):
            p.grad, r.grad = g.clone(), g.clone()
        model[0].weight.grad = torch.randn_like(model[0].weight)
        opt.step()
        sgd.step()
        # neither decayed nor adapted: identical to SGD with momentum and no weight decay
        for p, r in zip((model[0].bias, model[1].weight, model[1].bias), reference, strict=True):
            torch.testing.assert_close(p, r, atol=1e-7, rtol=1e-6)


def test_two_lars_steps_match_apex_larc_by_hand():
    lr, wd, momentum, trust, eps = 0.8, 1e-2, 0.9, 0.001, 1e-8
    p0 = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5]
    grads = [[0.1, 0.2, -0.3, 0.05, 0.0, -0.1], [-0.2, 0.4, 0.1, -0.3, 0.2, 0.05]]
    w = _param(p0, (2, 3))
    opt = LARS(
        [{"params": [w], "weight_decay": wd, "lars_exclude": False}],
        lr=lr,
        momentum=momentum,
        trust_coefficient=trust,
        eps=eps,
    )
    expected, buf = p0, None
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64).view(2, 3)
        opt.step()
        expected, buf = _apex_larc_step(expected, g, buf, lr, wd, momentum, trust, eps)
        torch.testing.assert_close(w.detach().flatten(), torch.tensor(expected, dtype=torch.float64))
    # the trust ratio matters here: a plain SGD step would have moved the weights ~1000x further
    assert (w.detach().flatten() - torch.tensor(p0, dtype=torch.float64)).abs().max() < 1e-2


def test_trust_ratio_makes_the_step_scale_free():
    """Scaling the gradient (e.g. a loss scale) does not change a LARS step (up to eps)."""
    p0 = torch.randn(4, 5, dtype=torch.float64)
    g = torch.randn(4, 5, dtype=torch.float64)
    results = []
    for scale in (1.0, 1000.0):
        w = nn.Parameter(p0.clone())
        w.grad = g * scale
        LARS([w], lr=1.0, momentum=0.0, eps=0.0).step()
        results.append(w.detach())
    torch.testing.assert_close(results[0], results[1])
    # and its size is lr * trust * ||p|| with no weight decay
    step = (results[0] - p0).norm()
    assert step.item() == pytest.approx(0.001 * p0.norm().item(), rel=1e-9)


def test_zero_weight_falls_back_to_the_plain_step():
    w = nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    g = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.1, 0.3]], dtype=torch.float64)
    w.grad = g.clone()
    LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5).step()
    torch.testing.assert_close(w.detach(), -0.1 * g)


def test_zero_gradient_leaves_the_weight_alone_like_larc():
    # apex LARC leaves the gradient untouched (no weight decay added) when ||g|| == 0
    p0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    w = nn.Parameter(p0.clone())
    w.grad = torch.zeros_like(p0)
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.1)
    opt.step()
    torch.testing.assert_close(w.detach(), p0)
    expected, _ = _apex_larc_step(p0.flatten().tolist(), [0.0] * 4, None, 0.5, 0.1, 0.9, 0.001, 1e-8)
    torch.testing.assert_close(w.detach().flatten(), torch.tensor(expected, dtype=torch.float64))


def test_parameters_without_gradient_are_skipped():
    a = nn.Parameter(torch.ones(2, 2))
    b = nn.Parameter(torch.ones(2, 2))
    a.grad = torch.ones(2, 2)
    opt = LARS([a, b], lr=1.0)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2, 2))
    assert b not in opt.state and a in opt.state


def test_group_lr_is_read_each_step():
    """Schedules write group['lr'] before each step; the step must use it."""
    w = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    opt = LARS([w], lr=0.0, momentum=0.0)
    w.grad = torch.ones(2, 2, dtype=torch.float64)
    opt.step()
    assert torch.equal(w.detach(), torch.zeros(2, 2, dtype=torch.float64))
    for group in opt.param_groups:
        group["lr"] = 0.25
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.25, dtype=torch.float64))


def test_closure_is_evaluated_and_returned():
    w = nn.Parameter(torch.ones(3, 3))
    opt = LARS([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 9.0
    assert (w.detach() < 1).all()
