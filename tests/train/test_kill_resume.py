"""A pretraining process killed with SIGKILL at a random step, then resumed with ``--resume``, ends on weights
bit-identical to those of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import make_image_folder, tiny_overrides

from openseer.fileio.checkpoint import latest_checkpoint, load_checkpoint

STEPS = 12  # 36 training images, batch 8: 4 steps per epoch, 3 epochs


def _command(source: Path, out: Path, *extra: str) -> list[str]:
    args = tiny_overrides(
        source,
        out,
        optim__epochs=3,
        swav__freeze_prototypes_iters=2,
        swav__queue_length=16,
        swav__queue_start_epoch=1.0,
        run__seed=7,
        run__threads=1,
        run__evaluate=False,
        run__checkpoint_every=1,
        run__keep_checkpoints=2,
    )
    return [sys.executable, "-m", "openseer", "pretrain", *extra, *args]


def _logged_steps(run: Path) -> int:
    """The last step metrics.jsonl has a full line for (0 before the first)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):  # not there yet, or a line half written
        return 0


def _final_state(run: Path) -> dict:
    path = latest_checkpoint(run / "checkpoints")
    assert path is not None
    return load_checkpoint(path)


def _assert_equal_tensors(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _assert_equal_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_tensors(x, y, f"{where}[{i}]")


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_gives_identical_weights(tmp_path: Path) -> None:
    rng = random.Random(20250611)
    kill_after = rng.randint(1, STEPS - 4)
    print(f"killing the run once step {kill_after} is logged (of {STEPS})")
    source = make_image_folder(tmp_path / "imgs", per_class=16)
    env = {**os.environ, "OPENSEER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}

    straight = subprocess.Popen(_command(source, tmp_path / "straight"), **quiet)
    victim = subprocess.Popen(_command(source, tmp_path / "killed"), **quiet)
    try:
        deadline = time.monotonic() + 120
        while _logged_steps(tmp_path / "killed") < kill_after and victim.poll() is None:
            assert time.monotonic() < deadline, "the run never reached the step to kill it at"
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=60)
        _, err = straight.communicate(timeout=120)
    finally:
        for proc in (straight, victim):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert straight.returncode == 0, err[-3000:]
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    interrupted_at = _final_state(tmp_path / "killed")["step"]
    print(
        f"killed after step {_logged_steps(tmp_path / 'killed')}; newest valid checkpoint: step {interrupted_at}"
    )
    assert kill_after - 1 <= interrupted_at < STEPS

    resumed = subprocess.run(_command(source, tmp_path / "killed", "--resume"), **quiet, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr

    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "optimizer", "queue"):
        _assert_equal_tensors(a[part], b[part], part)
    assert a["images_seen"] == b["images_seen"]
