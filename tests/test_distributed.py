"""Process-group helpers: single-process fallbacks, and a real 2-process gloo group for global Sinkhorn."""

import subprocess
import sys
import textwrap

import pytest
import torch
from support import free_port, rank_env

from openseer import distributed
from openseer.swav.sinkhorn import sinkhorn, sinkhorn_reference


@pytest.fixture
def no_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_fallbacks(no_torchrun):
    assert not distributed.is_enabled()
    assert distributed.world_size() == 1
    assert distributed.rank() == 0
    assert distributed.local_rank() == 0
    assert distributed.is_main()
    distributed.barrier()
    distributed.destroy()


def test_all_reduce_is_a_no_op_returning_the_tensor(no_torchrun):
    t = torch.tensor([1.0, -2.0, 3.5])
    for reduce in (distributed.all_reduce_sum, distributed.all_reduce_max):
        out = reduce(t)
        assert out is t
        assert torch.equal(t, torch.tensor([1.0, -2.0, 3.5]))


def test_torchrun_detection(no_torchrun, monkeypatch):
    assert not distributed.launched_with_torchrun()
    assert distributed.init_from_env(torch.device("cpu")) is False
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched_with_torchrun()  # a world of one needs no process group
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launched_with_torchrun()
    assert distributed.local_rank() == 1


WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from openseer import distributed
    from openseer.swav.sinkhorn import sinkhorn

    scores_path, out_path = sys.argv[1], sys.argv[2]
    assert distributed.init_from_env(torch.device("cpu"), timeout_s=60)
    rank, world = distributed.rank(), distributed.world_size()
    scores = torch.load(scores_path)
    local = scores.chunk(world)[rank]  # this process's share of the global batch
    q = sinkhorn(local, epsilon=0.05, iterations=3)
    tiny = sinkhorn(local, epsilon=0.005, iterations=3)
    total = distributed.all_reduce_sum(torch.tensor([float(rank + 1)]))
    torch.save({"q": q, "tiny": tiny, "total": total, "world": world}, out_path)
    distributed.destroy()
    """
)


@pytest.mark.slow
def test_sinkhorn_over_two_processes_equals_one_process_on_the_global_batch(tmp_path):
    """Equipartition is over the *global* batch: 2 gloo ranks with 12 + 12 samples give the codes one process
    computes on all 24."""
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(24, 6, generator=g) * 2 - 1
    torch.save(scores, tmp_path / "scores.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = rank_env(rank, 2, port)
        cmd = [
            sys.executable,
            str(tmp_path / "worker.py"),
            str(tmp_path / "scores.pt"),
            str(tmp_path / f"{rank}.pt"),
        ]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()[-2000:]
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    assert [r["world"] for r in results] == [2, 2]
    assert [r["total"].item() for r in results] == [3.0, 3.0]
    q = torch.cat([r["q"] for r in results])
    torch.testing.assert_close(q, sinkhorn(scores, 0.05, 3), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(q.double(), sinkhorn_reference(scores, 0.05, 3), atol=1e-6, rtol=1e-4)
    # every sample (on either rank) is fully assigned
    torch.testing.assert_close(q.sum(1), torch.ones(24), atol=1e-5, rtol=0)
    tiny = torch.cat([r["tiny"] for r in results])
    torch.testing.assert_close(tiny, sinkhorn(scores, 0.005, 3), atol=1e-5, rtol=1e-4)
