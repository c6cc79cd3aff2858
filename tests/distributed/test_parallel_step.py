"""One SwAV step on 2 gloo processes, with DDP and with FSDP2, equals one process on the union batch; a sharded
checkpoint written by the 2 processes loads into 1 process.

BatchNorm runs in eval mode: its batch statistics would otherwise be per process (SyncBatchNorm, which would
make them global, has CUDA kernels only), and the comparison is meant to be exact to float rounding. Gradients are
compared as well as the weights, because LARS normalises the step and would hide a wrongly scaled gradient.

The workers are this file run as a script (``python test_parallel_step.py OUT``) with torchrun's variables set.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from support import free_port, rank_env

from openseer.models import SwAVHead, SwAVModel, build_backbone, feature_dim
from openseer.optim import LARS, param_groups
from openseer.swav import EmbeddingQueue, sinkhorn, swav_loss

BATCH = 4  # per process
CROPS = [16, 16, 8, 8]


def tiny_model() -> SwAVModel:
    torch.manual_seed(0)
    backbone = build_backbone("regnety_200mf", stem="small")
    return SwAVModel(backbone, SwAVHead(feature_dim(backbone), [32], 16, 10, use_bn=False)).eval()


def all_crops(world: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH * world, 3, s, s, generator=g) for s in CROPS]


def step(model: SwAVModel, forward: torch.nn.Module, crops: list[torch.Tensor]) -> LARS:
    """The training loop's step: codes over the global batch, swapped prediction, LARS."""
    optimizer = LARS(param_groups(model, 1e-6))
    for group in optimizer.param_groups:
        group["lr"] = 0.5
    model.head.normalize_prototypes()
    bs = crops[0].shape[0]
    z, scores = forward(crops)
    codes = [sinkhorn(scores[bs * c : bs * (c + 1)].detach(), 0.05, 3) for c in (0, 1)]
    loss = swav_loss(scores, codes, len(CROPS), [0, 1], 0.1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return optimizer


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def worker(out: Path) -> None:
    """Runs on each rank: a DDP step and an FSDP step from the same start; saves weights, grads, a checkpoint."""
    from openseer import distributed
    from openseer.config import ConfigError
    from openseer.train.config import ParallelConfig
    from openseer.train.parallel import convert_sync_bn, parallelize
    from openseer.train.sharded_checkpoint import save_sharded

    assert distributed.init_from_env(torch.device("cpu"), timeout_s=60)
    rank = distributed.rank()
    mine = [c.chunk(2)[rank] for c in all_crops()]
    result = {}
    for strategy in ("ddp", "fsdp"):
        model = tiny_model()
        forward = parallelize(model, ParallelConfig(strategy=strategy), torch.device("cpu"))
        optimizer = step(model, forward, mine)
        params = {n: _full(p.detach()) for n, p in model.named_parameters()}
        grads = {n: _full(p.grad) for n, p in model.named_parameters()}
        result[strategy] = {"params": params, "grads": grads}
        if strategy == "fsdp":
            queue = EmbeddingQueue(2, 0, 16)
            save_sharded(out / "ckpt", 1, model, optimizer, queue, {"step": 1, "rng": torch.arange(3)})
            result["fsdp"]["momentum"] = {
                n: _full(optimizer.state[p]["momentum_buffer"]) for n, p in model.named_parameters()
            }
    # SyncBatchNorm in groups of one process (its training forward needs CUDA; eval mode runs anywhere)
    synced = convert_sync_bn(tiny_model(), group_size=1)
    norms = [m for m in synced.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    result["sync_bn"] = (len(norms), sorted({dist.get_world_size(m.process_group) for m in norms}))
    try:  # several CPU processes: SyncBatchNorm has no CPU kernels
        parallelize(tiny_model(), ParallelConfig(sync_bn=True), torch.device("cpu"))
        result["sync_bn_cpu_refused"] = False
    except ConfigError as err:
        result["sync_bn_cpu_refused"] = "needs CUDA" in str(err)
    synced(mine)
    # FSDP in bf16, BatchNorm in training mode: BatchNorm weights stay float32 next to their statistics
    model = tiny_model().train()
    forward = parallelize(model, ParallelConfig(strategy="fsdp"), torch.device("cpu"), precision="bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        optimizer = step(model, forward, mine)
    result["bf16"] = {
        "bn": {
            _full(m.weight.detach()).dtype for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
        },
        "grads": {n: _full(p.grad) for n, p in model.named_parameters()},
    }
    if rank == 0:
        torch.save(result, out / "result.pt")
    distributed.destroy()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parallel")
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = rank_env(rank, 2, port)
        cmd = [sys.executable, __file__, str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, log.decode()[-3000:]
    return out


@pytest.fixture(scope="module")
def reference() -> dict:
    """One process, both halves of the batch at once."""
    model = tiny_model()
    step(model, model, all_crops())
    return {
        "params": {n: p.detach() for n, p in model.named_parameters()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
    }


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_ddp_step_on_two_ranks_equals_one_process_on_the_union_batch(
    two_ranks: Path, reference: dict
) -> None:
    result = torch.load(two_ranks / "result.pt")
    _assert_same(result["ddp"]["grads"], reference["grads"])
    _assert_same(result["ddp"]["params"], reference["params"])
    start = dict(tiny_model().named_parameters())
    assert any(not torch.equal(start[n], p) for n, p in reference["params"].items())  # the step did move


@pytest.mark.slow
def test_fsdp_step_equals_ddp_step(two_ranks: Path) -> None:
    result = torch.load(two_ranks / "result.pt")
    _assert_same(result["fsdp"]["grads"], result["ddp"]["grads"])
    _assert_same(result["fsdp"]["params"], result["ddp"]["params"])


@pytest.mark.slow
def test_sharded_checkpoint_from_two_ranks_loads_in_one_process(two_ranks: Path) -> None:
    from openseer.train.sharded_checkpoint import latest_sharded, load_sharded

    saved = torch.load(two_ranks / "result.pt")["fsdp"]
    path = latest_sharded(two_ranks / "ckpt")
    assert path is not None and path.name == "dcp-00000001"
    model = tiny_model()
    optimizer = LARS(param_groups(model, 1e-6))
    state = load_sharded(path, model, optimizer, EmbeddingQueue(2, 0, 16))
    assert state["step"] == 1 and torch.equal(state["rng"], torch.arange(3))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), saved["params"][name], atol=0, rtol=0, msg=name)
    for name, p in model.named_parameters():
        momentum = optimizer.state[p]["momentum_buffer"]
        torch.testing.assert_close(momentum, saved["momentum"][name], atol=0, rtol=0, msg=name)


@pytest.mark.slow
def test_sync_bn_groups_on_two_ranks(two_ranks: Path) -> None:
    result = torch.load(two_ranks / "result.pt")
    count, sizes = result["sync_bn"]
    assert count > 0 and sizes == [1]
    assert result["sync_bn_cpu_refused"]


@pytest.mark.slow
def test_fsdp_bf16_step_keeps_norms_in_float32(two_ranks: Path) -> None:
    result = torch.load(two_ranks / "result.pt")["bf16"]
    assert result["bn"] == {torch.float32}
    for name, grad in result["grads"].items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name


def test_sync_bn_group_partition_and_single_process() -> None:
    from openseer.config import ConfigError
    from openseer.train.config import ParallelConfig
    from openseer.train.parallel import parallelize, sync_bn_groups

    assert sync_bn_groups(4, 2) == [[0, 1], [2, 3]]
    assert sync_bn_groups(4, None) == [[0, 1, 2, 3]]
    with pytest.raises(ConfigError, match="does not divide"):
        sync_bn_groups(4, 3)
    assert sync_bn_groups(4, 8) == [[0, 1, 2, 3]]  # a group larger than the world is the world (VISSL)
    # one process: nothing to synchronise, BatchNorm stays (the GPU presets' sync_bn also runs on a CPU)
    single = parallelize(tiny_model(), ParallelConfig(sync_bn=True), torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in single.modules())


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
