"""model.init under DDP and FSDP: every process starts from the file's weights. Under DDP the file is loaded
before the model is wrapped; under FSDP each process copies its own shard of every tensor out of the file into
the model sharded from the meta device (no process holds the whole network).

The workers are this file run as a script on 2 gloo processes (``python test_init_parallel.py STRATEGY FILE
OUT``) with torchrun's variables set, as in test_meta_init.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from support import run_ranks, vissl_file

from openseer.config import load_config
from openseer.models.build import random_model
from openseer.train.config import PretrainConfig

OVERRIDES = ["run.device=cpu", "run.precision=fp32", "model.prototypes=24", "model.head_hidden=[32]"]


def _config(strategy: str, init: Path | None = None) -> PretrainConfig:
    extra = [f"parallel.strategy={strategy}"] + ([f"model.init={init}"] if init else [])
    return load_config(PretrainConfig, ["cpu"], OVERRIDES + extra)


def worker(strategy: str, file: Path, out: Path) -> None:
    """Each rank: the run's own model building with the file as model.init; the full tensors it then holds."""
    from torch.distributed.tensor import DTensor

    from openseer import distributed
    from openseer.train.initial import read_initial
    from openseer.train.pretrain import _build_model

    assert distributed.init_from_env(torch.device("cpu"), timeout_s=60)
    rank = distributed.rank()
    # each process would draw another random model: the file must win everywhere
    torch.manual_seed(100 + rank)
    cfg, initial = read_initial(_config(strategy, file))
    model, _ = _build_model(cfg, torch.device("cpu"), initial)
    state = {}
    sharded = False
    for name, t in model.state_dict().items():
        if isinstance(t, DTensor):
            sharded = True
            state[name] = t.full_tensor()  # a collective: every rank gathers every tensor
        else:
            state[name] = t.detach().clone()
    torch.save({"state": state, "sharded": sharded}, out / f"{strategy}-rank{rank}.pt")
    distributed.destroy()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A VISSL-layout file with a trunk and a SwAV head of the config's shape; the head's tensors."""
    folder = tmp_path_factory.mktemp("init_parallel")
    head = {k: v.clone() for k, v in random_model(_config("ddp").model, seed=7).head.state_dict().items()}
    return vissl_file(folder / "seer.torch", head=head, seed=5), head


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_every_process_starts_from_the_file(
    strategy: str, weights_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    from openseer.weights import load_weights

    file, head = weights_file
    run_ranks(__file__, [strategy, str(file), str(tmp_path)])
    expected = load_weights(file)
    ranks = [torch.load(tmp_path / f"{strategy}-rank{r}.pt") for r in range(2)]
    assert all(r["sharded"] == (strategy == "fsdp") for r in ranks)
    for r in ranks:
        state = r["state"]
        for key, value in expected.backbone.items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(state[f"backbone.{key}"], value), (strategy, key)
        for key, value in head.items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(state[f"head.{key}"], value), (strategy, key)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
