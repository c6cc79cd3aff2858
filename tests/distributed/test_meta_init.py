"""build_for_strategy: under FSDP the model is built on the meta device, sharded, and materialised shard by shard
(no process ever holds the whole model); the prototypes are gathered in float32 under bf16 mixed precision.

The workers are this file run as a script on 2 gloo processes (``python test_meta_init.py OUT``) with torchrun's
variables set, as in test_parallel_step.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import free_port, rank_env

from openseer.config import load_config
from openseer.train.config import PretrainConfig

OVERRIDES = [
    "parallel.strategy=fsdp",
    "parallel.activation_checkpointing=true",
    "run.precision=bf16",
    "run.device=cpu",
    "model.zero_init_last_bn=false",
    "model.prototypes=24",
]


def _config() -> PretrainConfig:
    return load_config(PretrainConfig, ["cpu"], OVERRIDES)


def worker(out: Path) -> None:
    """Each rank: build sharded from the meta device, check what it holds, run one bf16 step."""
    from torch.distributed.tensor import DTensor

    from openseer import distributed
    from openseer.optim import LARS, param_groups
    from openseer.swav import sinkhorn, swav_loss
    from openseer.train.parallel import backbone_stages, build_for_strategy, parallelize

    assert distributed.init_from_env(torch.device("cpu"), timeout_s=60)
    rank = distributed.rank()
    cfg = _config()
    torch.manual_seed(0)
    model = build_for_strategy(cfg, torch.device("cpu"))
    params = dict(model.named_parameters())
    result: dict = {
        "all_dtensor": all(isinstance(p, DTensor) for p in params.values()),
        "meta_left": [n for n, t in [*params.items(), *model.named_buffers()] if t.is_meta],
        "local_numel": sum(p.to_local().numel() for p in params.values()),
        "full_numel": sum(p.numel() for p in params.values()),
    }
    plain = lambda name: name.replace("_checkpoint_wrapped_module.", "")  # noqa: E731 - names as checkpoints have them
    # full_tensor is a collective: every rank gathers every parameter
    result["full"] = {plain(n): p.detach().full_tensor() for n, p in params.items()}
    result["buffers"] = {plain(n): b.clone() for n, b in model.named_buffers()}
    # the loop's parallelize() must leave the already-sharded model as it is (no second wrapping)
    forward = parallelize(model, cfg.parallel, torch.device("cpu"), cfg.run.precision)
    result["same_module"] = forward is model
    result["stage_types"] = [type(s).__name__ for _, s in backbone_stages(model.backbone)]
    # one bf16 step: record the dtype the prototypes and a projection weight are gathered in
    seen = {}

    def record(name: str):  # noqa: ANN202 - a forward pre-hook
        def hook(module: torch.nn.Module, args: tuple) -> None:
            seen.setdefault(name, module.weight.dtype)

        return hook

    model.head.prototypes.register_forward_pre_hook(record("prototypes"))
    model.head.projection[0].register_forward_pre_hook(record("projection"))
    g = torch.Generator().manual_seed(1 + rank)
    crops = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)]
    model.head.normalize_prototypes()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, scores = forward(crops)
    codes = [sinkhorn(scores[4 * c : 4 * (c + 1)].detach(), 0.05, 3) for c in (0, 1)]
    loss = swav_loss(scores, codes, 2, [0, 1], 0.1)
    loss.backward()
    optimizer = LARS(param_groups(model, 1e-6))
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    optimizer.step()
    result.update(seen=seen, scores_dtype=scores.dtype, loss=float(loss.detach()))
    result["finite_after_step"] = all(
        bool(torch.isfinite(p.detach().to_local()).all()) for p in model.parameters()
    )
    torch.save(result, out / f"rank{rank}.pt")
    distributed.destroy()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("meta_init")
    port = str(free_port())
    procs = []
    for rank in range(2):
        cmd = [sys.executable, __file__, str(out)]
        procs.append(
            subprocess.Popen(
                cmd, env=rank_env(rank, 2, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    for proc in procs:
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log.decode()[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
def test_every_parameter_is_a_shard_and_nothing_is_left_on_meta(two_ranks: list[dict]) -> None:
    for r in two_ranks:
        assert r["all_dtensor"] and r["meta_left"] == []
        assert r["local_numel"] < 0.6 * r["full_numel"]  # this process holds about half, never the whole
    assert sum(r["local_numel"] for r in two_ranks) >= two_ranks[0]["full_numel"]


@pytest.mark.slow
def test_sharded_initialisation_follows_the_config(two_ranks: list[dict]) -> None:
    full = two_ranks[0]["full"]
    for name, t in two_ranks[1]["full"].items():  # both ranks see the same gathered model
        assert torch.equal(t, full[name]), name
    # VISSL's initialisation as the config asks: every BatchNorm scale 1, shifts 0, statistics 0 and 1
    for name, t in full.items():
        if name.endswith("bn.weight"):
            assert torch.equal(t, torch.ones_like(t)), name
        elif name.endswith("bn.bias"):
            assert torch.equal(t, torch.zeros_like(t)), name
    for name, b in two_ranks[0]["buffers"].items():
        if name.endswith("running_var"):
            assert torch.equal(b, torch.ones_like(b)), name
        elif name.endswith("running_mean"):
            assert torch.equal(b, torch.zeros_like(b)), name
    torch.testing.assert_close(full["head.prototypes.weight"].norm(dim=1), torch.ones(24))
    # convolutions: He normal over the fan-out of a group, and each rank's rows are a draw of their own
    w = full["backbone.s4.b1.conv2.conv.weight"]  # the largest grouped 3x3 convolution of RegNetY-200MF
    out_channels, per_group, kh, kw = w.shape
    groups = w.shape[0] // per_group
    expected = math.sqrt(2.0 / (kh * kw * out_channels / groups))
    assert abs(float(w.std()) / expected - 1) < 0.1
    top, bottom = w[: out_channels // 2], w[out_channels // 2 : 2 * (out_channels // 2)]
    assert not torch.allclose(top, bottom)


@pytest.mark.slow
def test_loop_parallelize_leaves_the_sharded_model_alone(two_ranks: list[dict]) -> None:
    for r in two_ranks:
        assert r["same_module"]
        assert r["stage_types"] == ["CheckpointWrapper"] * 4  # wrapped once, not twice


@pytest.mark.slow
def test_prototypes_are_gathered_in_float32_under_bf16(two_ranks: list[dict]) -> None:
    for r in two_ranks:
        assert r["seen"] == {"prototypes": torch.float32, "projection": torch.bfloat16}
        assert r["scores_dtype"] == torch.float32
        assert math.isfinite(r["loss"]) and r["finite_after_step"]


def test_without_a_process_group_the_model_is_built_whole() -> None:
    from openseer.train.parallel import build_for_strategy

    cfg = load_config(PretrainConfig, ["cpu"], ["model.prototypes=24"])
    torch.manual_seed(0)
    model = build_for_strategy(cfg, torch.device("cpu"))
    assert not any(p.is_meta for p in model.parameters())
    conv = model.backbone.stem.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)  # cfg.model.channels_last
    # the cpu preset keeps timm's zero-initialised last BatchNorm scales
    assert all(float(b.conv3.bn.weight.detach().abs().sum()) == 0 for b in model.backbone.s1.children())


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
