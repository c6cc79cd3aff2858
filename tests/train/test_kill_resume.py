"""A pretraining process killed with SIGKILL at a random step, then resumed with ``--resume``, ends on weights
bit-identical to those of an uninterrupted run with the same seed.

The runs' precision and compilation are fixed: with ``auto`` (the cpu preset's) each run would choose them by
timing trial steps, a choice a loaded machine can flip between the runs compared (fp32 against bf16 weights)."""

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
LIMIT_S = (
    600  # for each run to get where it is waited for: catches a hang, and allows a heavily loaded machine
)


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
        run__precision="fp32",
        run__compile=False,
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


def _assert_identical(a: object, b: object, where: str) -> None:
    """Every leaf equal: tensors bit for bit (dtype and shape too), numbers, strings, None exactly."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_gives_identical_weights(tmp_path: Path) -> None:
    rng = random.Random(20250611)
    kill_after = rng.randint(1, STEPS - 4)
    print(f"killing the run once step {kill_after} is logged (of {STEPS})")
    source = make_image_folder(tmp_path / "imgs", per_class=16)
    env = {**os.environ, "OPENSEER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def start(name: str, run: Path, *extra: str) -> subprocess.Popen:
        # stderr to a file: a pipe nobody reads while the test waits could fill up and stall the run
        with open(tmp_path / f"{name}.err", "w") as err:
            return subprocess.Popen(
                _command(source, run, *extra), env=env, stdout=subprocess.DEVNULL, stderr=err
            )

    def stderr(name: str) -> str:
        return (tmp_path / f"{name}.err").read_text()

    straight, victim = start("straight", tmp_path / "straight"), start("victim", tmp_path / "killed")
    try:
        deadline = time.monotonic() + LIMIT_S
        while _logged_steps(tmp_path / "killed") < kill_after and victim.poll() is None:
            assert time.monotonic() < deadline, "the run never reached the step to kill it at"
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=LIMIT_S)
        straight.wait(timeout=LIMIT_S)
    finally:
        for proc in (straight, victim):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert straight.returncode == 0, stderr("straight")[-3000:]
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    interrupted_at = _final_state(tmp_path / "killed")["step"]
    print(
        f"killed after step {_logged_steps(tmp_path / 'killed')}; newest valid checkpoint: step {interrupted_at}"
    )
    assert kill_after - 1 <= interrupted_at < STEPS

    resumed = start("resumed", tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=LIMIT_S) == 0, stderr("resumed")[-3000:]
    assert "resumed from" in stderr("resumed")

    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "killed")
    assert a["step"] == b["step"] == STEPS
    # the whole state but the wall-clock seconds (training, and waiting for data) and the run folder: weights,
    # optimiser (buffers and settings), queue, loss scaler, RNG, counters
    assert set(a) == set(b)
    for part in sorted(set(a) - {"train_seconds", "data_seconds", "config"}):
        _assert_identical(a[part], b[part], part)
    assert a["config"]["run"].pop("out_dir") != b["config"]["run"].pop("out_dir")
    _assert_identical(a["config"], b["config"], "config")
