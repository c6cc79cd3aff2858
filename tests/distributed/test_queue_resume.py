"""A 2-process run with the embedding queue, stopped and resumed: every process gets back its own queue.

Each process runs this file as a script (``python test_queue_resume.py PHASE RECORDS overrides...``) with
torchrun's variables set; the script wraps the loop's SwAV loss to record the queue it holds: in the
first run after every step (the last record is what the final checkpoint saved), in the resumed run on entry
to its first step (what the resume restored).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import free_port, rank_env, tiny_overrides

from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint


def _overrides(out: Path, strategy: str, max_steps: int) -> list[str]:
    return tiny_overrides(
        "builtin",
        out,
        optim__batch_size=4,
        swav__queue_length=16,  # 8 per process: full after 2 steps, in use from the 3rd
        swav__queue_start_epoch=0,
        parallel__strategy=strategy,
        run__evaluate=False,
        run__max_steps=max_steps,
        run__checkpoint_every=1,
        run__dist_timeout_s=60,
    )


def _run_two(phase: str, records: Path, args: list[str]) -> None:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, phase, str(records), *args],
            env=rank_env(rank, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    for proc in procs:
        log, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, log.decode()[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_each_process_resumes_with_its_own_queue(tmp_path: Path, strategy: str) -> None:
    out, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    _run_two("first", records, _overrides(out, strategy, max_steps=3))
    _run_two("resume", records, [*_overrides(out, strategy, max_steps=4), "--resume"])

    saved = [torch.load(records / f"first-{r}.pt") for r in range(2)]
    restored = [torch.load(records / f"resume-{r}.pt") for r in range(2)]
    assert all(s["filled"] == 8 for s in saved)  # full: the queues were in use when the run stopped
    # the two processes held different embeddings, and each got exactly its own back
    assert not torch.equal(saved[0]["embeddings"], saved[1]["embeddings"])
    for rank in range(2):
        assert restored[rank]["filled"] == saved[rank]["filled"]
        assert torch.equal(restored[rank]["embeddings"], saved[rank]["embeddings"]), f"rank {rank}"
    if strategy == "ddp":  # the single-file checkpoint holds both queues, row r being rank r's
        state = load_checkpoint(latest_checkpoint(out / "checkpoints"))
        assert state["step"] == 4 and tuple(state["queue"]["embeddings"].shape) == (2, 2, 8, 16)


def _record_queues(phase: str, records: Path) -> None:
    """Wrap the loop's SwAV loss so that it saves the queue of this process (see the module docstring)."""
    from openseer import distributed
    from openseer.swav import SwAVLoss

    original, calls = SwAVLoss.__call__, [0]

    def snapshot(queue) -> None:  # noqa: ANN001 - EmbeddingQueue
        path = records / f"{phase}-{distributed.rank()}.pt"
        torch.save({"embeddings": queue.embeddings.clone().cpu(), "filled": queue.filled}, path)

    def record(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - pass-through
        queue = self.queue if kwargs.get("with_queue", True) else None
        assert queue is not None, "the queue must be in use from the first step"
        calls[0] += 1
        if phase == "resume" and calls[0] == 1:
            snapshot(queue)
        out = original(self, *args, **kwargs)
        if phase == "first":
            snapshot(queue)
        return out

    SwAVLoss.__call__ = record


if __name__ == "__main__":
    from openseer.cli import main

    _record_queues(sys.argv[1], Path(sys.argv[2]))
    sys.exit(main(["pretrain", *sys.argv[3:], "run.evaluate=false"]))
