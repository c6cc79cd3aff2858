"""Two FSDP processes whose queues fill at different steps (one saw a batch cut short by unreadable files) agree
on whether the queue is stacked in: scoring it gathers the prototypes, a collective that one process alone would
wait in until the process group's timeout.

The workers are this file run as a script (``python test_queue_fill.py OUT``) with torchrun's variables set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import free_port, rank_env

BATCH = 4  # per process
QUEUE = 8  # rows per process


def worker(out: Path) -> None:
    from openseer import distributed
    from openseer.config import from_dict
    from openseer.models import SwAVHead, SwAVModel, build_backbone, feature_dim
    from openseer.swav import EmbeddingQueue, sinkhorn
    from openseer.train.config import ParallelConfig, PretrainConfig
    from openseer.train.parallel import parallelize
    from openseer.train.step import step_parts

    assert distributed.init_from_env(torch.device("cpu"), timeout_s=30)
    rank = distributed.rank()
    cfg = from_dict(
        PretrainConfig,
        {
            "crops": [{"size": 16, "count": 2, "scale": [0.3, 1.0]}],
            "model": {"out_dim": 16, "prototypes": 10},
        },
    )
    torch.manual_seed(0)
    backbone = build_backbone("regnety_200mf", stem="small")
    model = SwAVModel(backbone, SwAVHead(feature_dim(backbone), [32], 16, 10, use_bn=False)).eval()
    forward = parallelize(model, ParallelConfig(strategy="fsdp"), torch.device("cpu"))
    queue = EmbeddingQueue(2, QUEUE, 16)
    # rank 0 has seen two full batches (its queue is full); rank 1 one full batch and one of 3 readable images
    for _ in range(1 if rank else 2):
        queue.push(0, torch.randn(BATCH, 16))
        queue.push(1, torch.randn(BATCH, 16))
    if rank:
        queue.push(0, torch.randn(BATCH - 1, 16))
        queue.push(1, torch.randn(BATCH - 1, 16))
    assert queue.full == (rank == 0)
    crops = [torch.randn(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(rank)) for _ in range(2)]
    z, scores = forward(crops)
    loss, codes = step_parts(cfg, model, forward, "fp32", torch.device("cpu"), queue).loss(z, scores)
    # the codes of the global batch without the queue (every process calls this collective alike)
    plain = sinkhorn(scores[:BATCH].detach(), cfg.swav.epsilon, cfg.swav.sinkhorn_iters)
    result = {
        "loss": float(loss),
        "filled_after": queue.filled,
        "codes_without_queue": bool(torch.allclose(codes[0], plain, rtol=1e-5, atol=1e-7)),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    distributed.destroy()


@pytest.mark.slow
def test_processes_with_unequally_filled_queues_neither_hang_nor_disagree(tmp_path: Path) -> None:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(tmp_path)],
            env=rank_env(rank, 2, port),
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # neither stacked its queue in, rank 0's full one included: both computed the codes of the global batch alone
    assert [r["codes_without_queue"] for r in results] == [True, True]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in results)
    assert [r["filled_after"] for r in results] == [QUEUE, QUEUE]  # both keep pushing


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
