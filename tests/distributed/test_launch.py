"""Launching: torchrun and SLURM variables, a sharded run resumed by one process, and a dead rank ending the job.

The multi-process tests run the real command line (``python -m openseer pretrain``) on 2 gloo processes with a
tiny model; the dying rank is this file run as a script, which wraps the loss to ``os._exit`` on rank 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import free_port, make_image_folder, tiny_overrides

from openseer import distributed

TIMEOUT_S = 10


def overrides(source: Path, out: Path, **extra: object) -> list[str]:
    changes = dict(data__cache_size=None, optim__batch_size=4, optim__epochs=5, run__knn_k=3)
    return tiny_overrides(source, out, **{**changes, "run__dist_timeout_s": TIMEOUT_S, **extra})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imgs"), classes=2)


# ============ environment ============


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("gpu[007-009,012],cpu1", "gpu007"), ("node12", "node12"), ("a-b[3,5]", "a-b3"), ("x,y", "x")],
)
def test_first_slurm_host(nodelist: str, host: str) -> None:
    assert distributed.first_slurm_host(nodelist) == host


def test_slurm_variables_fill_torchruns() -> None:
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[02-03]"}
    env["SLURM_JOB_ID"] = "123"
    assert distributed.env_from_slurm(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("5", "8", "1")
    assert env["MASTER_ADDR"] == "gpu02" and env["MASTER_PORT"] == "20123"
    # torchrun's own variables win, and a single task is no distributed job
    assert not distributed.env_from_slurm({"RANK": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"})
    assert not distributed.env_from_slurm({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    given = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}
    assert (
        distributed.env_from_slurm(given)
        and given["MASTER_ADDR"] == "10.0.0.1"
        and given["MASTER_PORT"] == "1234"
    )


# ============ torchrun + FSDP, resumed by one process ============


@pytest.mark.slow
def test_torchrun_fsdp_run_resumes_in_one_process(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """2 processes, FSDP + activation checkpointing + the embedding queue (in use from step 3), sharded
    checkpoints every step; then one process resumes from the last one (model, LARS state and the whole queue)."""
    from openseer.config import load_config
    from openseer.train.config import PretrainConfig
    from openseer.train.pretrain import pretrain

    out = tmp_path / "run"
    args = overrides(
        folder,
        out,
        parallel__strategy="fsdp",
        parallel__activation_checkpointing="true",
        run__evaluate="false",
        swav__queue_length=16,  # 8 per process: full after 2 steps of 4
        swav__queue_start_epoch=0,
    )
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"),
        f"--master_port={free_port()}",
        *("-m", "openseer", "pretrain"),
        *args,
        *("run.max_steps=3", "run.checkpoint_every=1", "run.keep_checkpoints=2"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["dcp-00000002", "dcp-00000003"]
    meta = json.loads((ckpt / "dcp-00000003" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["images_seen"] == 24 and meta["_queue_filled"] == [8, 8]

    cfg = load_config(PretrainConfig, ["cpu"], [*args, "run.max_steps=4"])
    with caplog.at_level("INFO"):
        result = pretrain(cfg, resume=True)  # one process, no process group: reshards 2 -> 1
    assert result.steps == 4 and result.images_seen == 24 + 4
    assert "resharded" in caplog.text
    assert json.loads((ckpt / "dcp-00000004" / "meta.json").read_text())["world_size"] == 1


# ============ a dead rank ============


@pytest.mark.parametrize("fate", ["exit", "hang"])
@pytest.mark.slow
def test_dead_rank_ends_the_other_with_a_clear_error(folder: Path, tmp_path: Path, fate: str) -> None:
    """Rank 1 exits abruptly (or hangs) at step 3; rank 0, blocked in a collective, must stop with an explanation
    within the collective timeout. Launched with SLURM's variables only (no torchrun), which also checks their
    mapping. A closed connection is noticed at once; a silent peer after run.dist_timeout_s."""
    port = str(free_port())
    marker = tmp_path / "died_at"
    timeout = TIMEOUT_S if fate == "exit" else 4
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(
            SLURM_PROCID=str(rank),
            SLURM_NTASKS="2",
            SLURM_LOCALID=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
        )
        args = overrides(folder, tmp_path / "run", run__max_steps=50, run__dist_timeout_s=timeout)
        cmd = [sys.executable, __file__, fate, str(marker), *args]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    survivor, peer = procs
    try:
        _, err = survivor.communicate(timeout=120)
        ended = time.time()
    finally:
        peer.kill()
        peer.communicate()
    died = float(marker.read_text())
    assert survivor.returncode not in (0, None)
    # a hung peer: rank 0 first finishes its own forward pass, then waits run.dist_timeout_s, then tears down
    assert ended - died < (timeout if fate == "exit" else timeout + 30), f"survivor took {ended - died:.1f} s"
    message = err.strip().splitlines()[-1]
    assert message.startswith("openseer: error: rank 0 of 2: a collective inside"), err[-3000:]
    assert "probably died" in message and f"run.dist_timeout_s={float(timeout)}" in message


def _fail_on_rank_1(fate: str, marker: str, at_step: int) -> None:
    """Wrap the SwAV loss of the training loop so that rank 1 exits without a word (or stops answering) at its
    ``at_step``-th step."""
    from openseer.swav import SwAVLoss

    original, calls = SwAVLoss.__call__, [0]

    def fail(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - pass-through
        calls[0] += 1
        out = original(self, *args, **kwargs)  # its Sinkhorn collectives done: rank 0 goes on into backward
        if distributed.rank() == 1 and calls[0] == at_step:
            Path(marker).write_text(str(time.time()))
            if fate == "exit":
                os._exit(3)
            time.sleep(600)
        return out

    SwAVLoss.__call__ = fail


if __name__ == "__main__":
    from openseer.cli import main

    _fail_on_rank_1(sys.argv[1], sys.argv[2], at_step=3)
    sys.exit(main(["pretrain", *sys.argv[3:]]))
