"""Rank 0 alone writes the run folder: in a 2-process gloo run of ``openseer pretrain`` (DDP), config.yaml,
metrics.jsonl, the TensorBoard events, autotune.json, the checkpoints, skipped_images.json, summary.json, the
evaluation's results and the report come from rank 0, each file written once and whole; rank 1 writes nothing
there.

Each rank runs this file as a script, which records through an audit hook (:func:`sys.addaudithook`) every file
the process opens for writing and every rename (how an atomic write puts a finished file in place), then runs
the command line.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support import free_port, make_image_folder, rank_env, tiny_overrides

MAX_STEPS = 4
CHECKPOINT_EVERY = 2


def _record_writes(record: Path) -> None:
    """Note ["open", path, mode] for every file this process opens for writing (``mode``: open()'s, or the flags
    of os.open) and ["rename", src, dst] for every rename, and write the list to ``record`` as JSON when the
    process exits."""
    events: list[list[str]] = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):  # a file descriptor: opened (and counted) already
                return
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & write_flags)
            if writing:
                events.append(["open", os.path.abspath(os.fsdecode(path)), str(mode if mode else flags)])
        elif event == "os.rename":  # os.rename and os.replace
            events.append(["rename", os.path.abspath(os.fsdecode(args[0])), os.path.abspath(os.fsdecode(args[1]))])

    sys.addaudithook(hook)
    atexit.register(lambda: record.write_text(json.dumps(events)))


def _run_folder_writes(record: Path, root: Path) -> tuple[Counter, Counter, list[list[str]]]:
    """(files under ``root`` put in place, by how many times: renamed there or opened to be truncated or created;
    files appended to, by how many opens; every event that touched ``root``, temporary files included)."""
    replaced: Counter = Counter()
    appended: Counter = Counter()
    touched = []
    for event in json.loads(record.read_text()):
        path = Path(event[2] if event[0] == "rename" else event[1])
        if root not in path.parents:
            continue
        touched.append(event)
        name = path.relative_to(root).as_posix()
        if event[0] == "rename":
            replaced[name] += 1
        elif path.name.startswith(".") and path.name.endswith(".tmp"):
            continue  # an atomic write's temporary file: what counts is its rename into place
        elif "a" in event[2]:
            appended[name] += 1
        else:
            replaced[name] += 1
    return replaced, appended, touched


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-process gloo run (DDP) of ``openseer pretrain``, MAX_STEPS steps, checkpoints every CHECKPOINT_EVERY,
    metrics every step, TensorBoard and the end-of-run evaluation on; each rank's record of its writes."""
    root = tmp_path_factory.mktemp("rank0")
    out = root / "run"
    args = tiny_overrides(
        make_image_folder(root / "imgs"),
        out,
        optim__batch_size=4,
        optim__epochs=4,  # longer than MAX_STEPS
        run__max_steps=MAX_STEPS,
        run__checkpoint_every=CHECKPOINT_EVERY,
        run__tensorboard=True,
        run__evaluate=True,
        run__precision="fp32",
        run__compile=False,
        run__dist_timeout_s=60,
    )
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**rank_env(rank, 2, port), "OPENSEER_CACHE": str(root / "cache")}
        cmd = [sys.executable, __file__, str(root / f"writes-{rank}.json"), "pretrain", *args]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        for proc in procs:
            output, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, output[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    writes = [_run_folder_writes(root / f"writes-{rank}.json", out) for rank in range(2)]
    return {"out": out, "args": args, "writes": writes}


@pytest.mark.slow
def test_only_rank_0_writes_the_run_folder_each_file_once_and_whole(two_process_run: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from openseer.config import load_config
    from openseer.fileio.checkpoint import load_checkpoint, verify
    from openseer.train.config import PretrainConfig

    out = two_process_run["out"]
    (replaced, appended, _), (_, _, rank1_touched) = two_process_run["writes"]
    assert rank1_touched == []  # not a file, not even a temporary one
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(replaced) | set(appended) == on_disk  # every file there is rank 0's, and nothing rank 0 wrote is gone
    (events,) = [name for name in on_disk if name.startswith("tensorboard/")]
    assert set(appended) == {"metrics.jsonl", events} and appended["metrics.jsonl"] == 1  # kept open for the run
    once = {name: n for name, n in replaced.items() if not name.startswith("checkpoints/")}
    assert once and set(once.values()) == {1}, once  # checkpoints: test_every_checkpoint_is_written_once
    assert {"config.yaml", "autotune.json", "skipped_images.json", "summary.json", "report.html"} <= set(once)
    assert {"eval/pretraining-knn.json", "eval/pretraining-knn-random.json", "eval/pretraining-linear.json"} <= set(
        once
    )
    assert {"eval/clusters.json", "eval/clusters/index.html"} <= set(once)  # the report's cluster gallery

    # whole: every file reads back as what the run meant to write
    assert load_config(PretrainConfig, [out / "config.yaml"]) == load_config(
        PretrainConfig, ["cpu"], two_process_run["args"]
    )
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "loss" in m] == list(range(1, MAX_STEPS + 1))
    assert len(lines) == MAX_STEPS + 1 and lines[-1]["final/steps"] == MAX_STEPS  # the run's summary last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == MAX_STEPS and summary["images_seen"] == MAX_STEPS * 4 * 2
    for name in ("autotune.json", "skipped_images.json", *(n for n in once if n.startswith("eval/") and n.endswith(".json"))):
        json.loads((out / name).read_text())
    assert (out / "report.html").read_text().rstrip().endswith("</html>")
    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()  # checks each record's checksum
    assert [e.step for e in board.Scalars("loss")] == list(range(1, MAX_STEPS + 1))
    steps = range(CHECKPOINT_EVERY, MAX_STEPS + 1, CHECKPOINT_EVERY)
    checkpoints = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    assert [load_checkpoint(p)["step"] for p in checkpoints] == list(steps)
    assert all(verify(p) for p in checkpoints)


@pytest.mark.slow
def test_every_checkpoint_is_written_once(two_process_run: dict) -> None:
    (replaced, _, _), _ = two_process_run["writes"]
    checkpoints = {name: n for name, n in replaced.items() if name.startswith("checkpoints/")}
    assert len(checkpoints) == 2 * MAX_STEPS // CHECKPOINT_EVERY  # each .pt with its .sha256
    assert set(checkpoints.values()) == {1}, checkpoints


if __name__ == "__main__":
    _record_writes(Path(sys.argv[1]))
    from openseer.cli import main

    sys.exit(main(sys.argv[2:]))
