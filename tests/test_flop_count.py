"""benchmarks/_common.training_flops against the definition of a convolution's work: the forward pass
2*N*Hout*Wout*Cout*(Cin/groups)*k*k FLOPs, its input gradient and its weight gradient as much again each, for
grouped convolutions too (torch's own formula counts a grouped weight gradient as if ungrouped)."""

from __future__ import annotations

import pytest
import torch
from support.benchmarks import benchmark_module


@pytest.mark.parametrize("groups", [1, 4, 46])
@pytest.mark.parametrize("input_grad", [True, False])
def test_a_convolution_step_counts_forward_and_both_gradients(groups: int, input_grad: bool) -> None:
    training_flops = benchmark_module("_common").training_flops
    n, c, side, k = 2, 368, 6, 3
    conv = torch.nn.Conv2d(c, c, k, padding=1, groups=groups, bias=False)
    x = torch.randn(n, c, side, side, requires_grad=input_grad)

    def step(crops: list[torch.Tensor]) -> None:
        conv(crops[0]).sum().backward()

    forward = 2 * n * side * side * c * (c // groups) * k * k
    assert training_flops(step, [x]) == forward * (3 if input_grad else 2)


def test_a_linear_layer_is_counted_as_torch_counts_it() -> None:
    training_flops = benchmark_module("_common").training_flops
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64, requires_grad=True)

    def step(crops: list[torch.Tensor]) -> None:
        layer(crops[0]).sum().backward()

    assert training_flops(step, [x]) == 3 * 2 * 8 * 64 * 32
