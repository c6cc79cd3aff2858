"""DDP over a channels-last model on 2 gloo processes: every gradient reaches DDP with its bucket view's strides,
so torch's "grad strides do not match bucket view strides" warning (and the element-by-element copy behind it)
never comes, in fp32 and under bf16 autocast.

The workers are this file run as a script (``python test_ddp_grad_strides.py OUT``) with torchrun's variables
set. Each runs the run's own steps through ``parallelize``, then, as a control that the warning is caught at all,
a DDP wrapper made without it (torch warns once per process, so the control comes last).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from support import run_ranks, tiny_overrides

MESSAGE = "Grad strides do not match bucket view strides"


def _steps(forward: torch.nn.Module, model: torch.nn.Module, precision: str, cfg) -> list[str]:  # noqa: ANN001
    """Two of the run's steps; the warnings they raise."""
    from openseer.train.step import step_parts, train_step

    parts = step_parts(cfg, model, forward, precision, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    crops = [
        torch.randn(4, 3, c.size, c.size, generator=g).contiguous(memory_format=torch.channels_last)
        for c in cfg.crops
        for _ in range(c.count)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(2):
            train_step(parts, crops, step, 0.1)
    return [str(w.message) for w in caught]


def worker(out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from openseer import distributed
    from openseer.config import load_config
    from openseer.train.config import PretrainConfig
    from openseer.train.parallel import build_for_strategy, parallelize

    cpu = torch.device("cpu")
    assert distributed.init_from_env(cpu, timeout_s=60)
    cfg = load_config(PretrainConfig, overrides=tiny_overrides("builtin", out / "run"))
    assert cfg.model.channels_last
    result: dict = {}
    for precision in ("fp32", "bf16"):
        model = build_for_strategy(cfg, cpu)
        forward = parallelize(model, cfg.parallel, cpu, precision)
        result[precision] = _steps(forward, model, precision, cfg)
        result[f"{precision}_strides"] = [
            (name, p.stride(), p.grad.stride())
            for name, p in model.named_parameters()
            if p.grad is not None and p.grad.stride() != p.stride()
        ]
    model = build_for_strategy(cfg, cpu)
    result["control"] = _steps(DistributedDataParallel(model), model, "fp32", cfg)
    if distributed.rank() == 0:
        torch.save(result, out / "result.pt")
    distributed.destroy()


@pytest.mark.slow
def test_no_gradient_is_copied_into_a_bucket_of_other_strides(tmp_path: Path) -> None:
    run_ranks(__file__, [str(tmp_path)])
    result = torch.load(tmp_path / "result.pt")
    for precision in ("fp32", "bf16"):
        assert not [m for m in result[precision] if MESSAGE in m], precision
        assert result[f"{precision}_strides"] == [], precision  # each gradient has its parameter's strides
    assert any(MESSAGE in m for m in result["control"])  # the warning is caught where it does come


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
