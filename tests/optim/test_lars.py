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


def test_param_groups_default_to_one_group_of_every_tensor_as_the_references():
    """swav wraps LARC around SGD(model.parameters()); VISSL's SwAV/SEER set regularize_bn/bias True."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters are left out
    (group,) = param_groups(model, weight_decay=1e-5)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in group["params"]] == [id(p) for p in trainable]
    assert group["weight_decay"] == 1e-5 and not group["lars_exclude"]


def test_param_groups_split_1d_from_weights_when_asked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters are left out
    decay, plain = param_groups(model, weight_decay=1e-5, exclude_bias_and_norm=True)
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
    opt = LARS(param_groups(model, weight_decay=0.1, exclude_bias_and_norm=True), lr=0.5, momentum=0.9)
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


class ApexLARCOverSGD:
    """An independent re-derivation of what swav main_swav.py:171-177 runs: torch SGD(model.parameters(),
    momentum, weight_decay) wrapped in apex LARC(trust_coefficient, clip=False).

    apex's step, per tensor, in a Python loop: the group's weight decay is taken away from SGD for the step;
    when ||p|| and ||g|| are both non-zero, g <- (g + wd p) * trust ||p|| / (||g|| + wd ||p|| + eps), else g is
    left as it is; then SGD steps (momentum only) and gets its weight decay back.
    """

    def __init__(self, params, lr, momentum, weight_decay, trust, eps=1e-8):
        self.sgd = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.trust, self.eps = trust, eps

    @torch.no_grad()
    def step(self):
        decays = []
        for group in self.sgd.param_groups:
            wd = group["weight_decay"]
            decays.append(wd)
            group["weight_decay"] = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                p_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                if p_norm != 0 and g_norm != 0:
                    adaptive = self.trust * p_norm / (g_norm + p_norm * wd + self.eps)
                    p.grad += wd * p
                    p.grad *= adaptive
        self.sgd.step()
        for group, wd in zip(self.sgd.param_groups, decays, strict=True):
            group["weight_decay"] = wd


def _swav_like_model():
    """Conv, BatchNorm (scales and shifts), biased Linear layers and a BatchNorm1d: every kind of tensor."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 5),
    ).double()


def test_lars_over_every_tensor_matches_apex_larc_over_sgd():
    """openseer's LARS with the default (reference) parameter groups == apex LARC(clip=False) over SGD on all
    parameters, biases and BatchNorm weights included, over several steps with momentum and weight decay."""
    lr, wd, momentum, trust = 2.4, 1e-5, 0.9, 0.001
    torch.manual_seed(0)
    ours = _swav_like_model()
    with torch.no_grad():  # BatchNorm away from its 1/0 start, so its norms are generic
        for m in ours.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    theirs = _swav_like_model()
    theirs.load_state_dict(ours.state_dict())
    opt = LARS(param_groups(ours, wd), lr=lr, momentum=momentum, trust_coefficient=trust)
    ref = ApexLARCOverSGD(theirs.parameters(), lr=lr, momentum=momentum, weight_decay=wd, trust=trust)
    x = torch.randn(8, 3, 9, 9, dtype=torch.float64)
    start = {n: p.detach().clone() for n, p in ours.named_parameters()}
    for _ in range(4):
        for model in (ours, theirs):
            model.zero_grad()
            (model(x) ** 2).mean().backward()
        opt.step()
        ref.step()
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    # biases and BatchNorm weights were adapted too: their step is ~trust * lr * ||p||, not lr * ||g||
    for name in ("1.weight", "1.bias", "5.bias", "6.weight"):
        moved = (ours.get_parameter(name) - start[name]).norm()
        assert 0 < moved <= 4 * 1.1 * trust * lr * start[name].norm() / (1 - momentum), name


def test_exclusion_changes_the_step_of_1d_tensors_only():
    lr, wd = 2.4, 1e-5
    torch.manual_seed(1)
    a, b = _swav_like_model(), _swav_like_model()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 3, 9, 9, dtype=torch.float64)
    zero_at_start = {n for n, p in a.named_parameters() if p.norm() == 0}  # BatchNorm shifts
    for model, exclude in ((a, False), (b, True)):
        (model(x) ** 2).mean().backward()
        LARS(param_groups(model, wd, exclude_bias_and_norm=exclude), lr=lr).step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if pa.ndim > 1 or name in zero_at_start:  # a zero tensor takes LARC's plain step either way
            torch.testing.assert_close(pa, pb, rtol=1e-12, atol=0, msg=name)
        else:
            assert not torch.allclose(pa, pb), name
    assert zero_at_start == {"1.bias", "6.bias"}


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
