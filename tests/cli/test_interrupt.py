"""Ctrl-C during ``openseer pretrain``: exit status 130, a message that says how to go on, and a whole checkpoint
that ``--resume`` continues from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import make_image_folder, tiny_overrides

from openseer.cli import main
from openseer.fileio.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

INTERRUPTED = "openseer: interrupted; rerun with --resume to continue from the last checkpoint"


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_a_checkpoint_to_resume_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    args = tiny_overrides(
        make_image_folder(tmp_path / "imgs"),
        out,
        optim__epochs=1000,  # far longer than the test waits: the run is stopped by the interrupt
        run__checkpoint_every=1,  # a checkpoint being written when the interrupt comes is likely
        run__keep_checkpoints=2,
        run__evaluate=False,
        run__precision="fp32",  # no timed trial steps at start-up (the cpu preset's 'auto')
        run__compile=False,
    )
    ckpts = out / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "-m", "openseer", "pretrain", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while len(list_checkpoints(ckpts)) < 3:  # training, and past its first checkpoints
            if proc.poll() is not None:
                pytest.fail(f"pretrain ended before the interrupt:\n{proc.communicate()[1][-3000:]}")
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == INTERRUPTED
    # an interrupted write leaves no partial file, and the newest whole checkpoint is the one resumed from
    assert not [p.name for p in ckpts.iterdir() if p.name.endswith(".tmp")]
    last = latest_checkpoint(ckpts)  # checksum verified
    assert last is not None
    state = load_checkpoint(last)
    stopped, seen = state["step"], state["images_seen"]
    assert stopped >= 2 and seen > 0

    with caplog.at_level("INFO"):
        assert main(["pretrain", *args, f"run.max_steps={stopped + 2}", "--resume"]) == 0
    assert f"resumed from {last} at step {stopped} of " in caplog.text
    resumed = load_checkpoint(latest_checkpoint(ckpts))
    assert resumed["step"] == stopped + 2 and resumed["images_seen"] > seen


def test_a_command_runs_under_a_handler_of_its_own_that_raises(monkeypatch, capsys) -> None:  # noqa: ANN001
    """Python's default handler lets native code that polls for interrupts consume a Ctrl-C: a command runs
    under openseer's own, which raises KeyboardInterrupt (exit 130), and the caller's handler comes back."""
    import dataclasses

    import openseer.cli as cli

    before = signal.getsignal(signal.SIGINT)
    seen = []

    def run(cfg, args) -> int:  # noqa: ANN001 - the command's run, replaced
        seen.append(signal.getsignal(signal.SIGINT))
        signal.raise_signal(signal.SIGINT)
        return 0

    (index,) = [i for i, c in enumerate(cli.COMMANDS) if c.name == "report"]
    commands = list(cli.COMMANDS)
    commands[index] = dataclasses.replace(commands[index], run=run)
    monkeypatch.setattr(cli, "COMMANDS", commands)
    assert main(["report", "runs/none"]) == 130
    assert seen and seen[0] not in (before, signal.default_int_handler)
    assert signal.getsignal(signal.SIGINT) is before
    assert capsys.readouterr().err.strip().splitlines()[-1] == INTERRUPTED
