"""Throughput of the CPU preset on 2 processes (DDP over gloo, launched with torchrun) against 1 process.

Both runs use the ``cpu`` preset with the same global batch (1 x 256 vs 2 x 128) for ``--steps`` steps and the
same number of cores: 1 process with 2 threads against 2 processes with 1 thread each. Throughput is the run's
own images / training seconds (no start-up, no evaluation).

    python benchmarks/scaling.py --steps 30

On one 2-core machine no speed-up is expected: the work per image is the same and the cores the same, while
2 processes add a gradient all-reduce and the global Sinkhorn's all-reduces per step, duplicate the data pipeline,
and run their convolutions on half batches. Data parallelism pays off across machines or GPUs, where each process
brings its own compute. Last line: ``speedup_2proc=<x>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (the sibling module: puts tests/support on sys.path)
from support import free_port


def run(procs: int, steps: int, global_batch: int, out: Path) -> float:
    """Images per second of one pretraining run with ``procs`` processes."""
    threads = max(1, (os.cpu_count() or 2) // procs)
    overrides = [
        f"optim.batch_size={global_batch // procs}",
        f"run.max_steps={steps}",
        f"run.threads={threads}",
        f"run.out_dir={out}",
        "run.evaluate=false",
        "run.progress=false",
        "run.tensorboard=false",
        f"run.checkpoint_every={steps * 10}",
    ]
    launch = [sys.executable, "-m", "openseer"]
    if procs > 1:
        launch = [
            *(sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}"),
            *("--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "openseer"),
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launch, "pretrain", "--config", "cpu", *overrides], env=env, check=True)
    summary = json.loads((out / "summary.json").read_text())
    rate = summary["images_seen"] / summary["train_seconds"]
    print(
        f"{procs} process(es) x {threads} thread(s): {rate:.1f} img/s over {summary['steps']} steps",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--global-batch", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args.steps, args.global_batch, Path(tmp) / "one")
        two = run(2, args.steps, args.global_batch, Path(tmp) / "two")
    print(f"speedup_2proc={two / one:.2f}")


if __name__ == "__main__":
    main()
