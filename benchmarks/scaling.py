"""Throughput of the CPU preset on 2 processes (DDP over gloo, launched with torchrun) against 1 process.

Both runs use the ``cpu`` preset with the same global batch (1 x 256 vs 2 x 128) for ``--steps`` steps and the
same number of cores: 1 process with 2 threads against 2 processes with 1 thread each. Throughput is the run's
own images / training seconds (no start-up, no evaluation).

    python benchmarks/scaling.py --steps 30

On one 2-core machine no speed-up is expected: the work per image is the same and the cores the same, while
2 processes add a gradient all-reduce and the global Sinkhorn's all-reduces per step, duplicate the data pipeline,
and run their convolutions on half batches. Data parallelism pays off across machines or GPUs, where each process
brings its own compute.

``--restride`` also runs the 2 processes without handing the channels-last 1x1 kernels' gradients on in their
parameters' strides (``openseer.train.parallel.grads_in_parameter_strides``, switched off by
``_no_restride.py``), where DDP warns "grad strides do not match bucket view strides" and copies those gradients
element by element: the ratio of the two is what the re-striding buys, and each run says whether torch warned.

    python benchmarks/scaling.py --steps 30 --restride

Last line: ``speedup_2proc=<x>`` (and ``restride_speedup=<x> warned_restrided=<0|1> warned_control=<0|1>
cpu=<model>`` with ``--restride``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _common import machine  # the sibling module (also puts tests/support on sys.path)
from support import free_port

STRIDE_WARNING = "grad strides do not match bucket view strides"  # torch capitalises it


def run(procs: int, steps: int, global_batch: int, out: Path, restride: bool = True) -> tuple[float, bool]:
    """Images per second of one pretraining run with ``procs`` processes, and whether torch warned that
    gradients and DDP's buckets disagree in strides; ``restride=False``: the re-striding switched off."""
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
    program = ["-m", "openseer"] if restride else [str(Path(__file__).with_name("_no_restride.py"))]
    launch = [sys.executable, *program]
    if procs > 1:
        launch = [
            *(sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}"),
            *("--master_addr=127.0.0.1", f"--master_port={free_port()}", *program),
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [*launch, "pretrain", "--config", "cpu", *overrides], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        done.check_returncode()
    warned = STRIDE_WARNING in done.stderr.lower()
    summary = json.loads((out / "summary.json").read_text())
    rate = summary["images_seen"] / summary["train_seconds"]
    print(
        f"{procs} process(es) x {threads} thread(s){'' if restride else ', no re-striding'}: {rate:.1f} img/s "
        f"over {summary['steps']} steps{', torch warned of grad strides' if warned else ''}",
        flush=True,
    )
    return rate, warned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument(
        "--restride", action="store_true", help="also 2 processes without the gradient re-striding"
    )
    args = parser.parse_args()
    cpu, _cores = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        one, _ = run(1, args.steps, args.global_batch, Path(tmp) / "one")
        two, warned = run(2, args.steps, args.global_batch, Path(tmp) / "two")
        figures = f"speedup_2proc={two / one:.2f}"
        if args.restride:
            control, warned_control = run(2, args.steps, args.global_batch, Path(tmp) / "control", False)
            figures += (
                f" restride_speedup={two / control:.3f} warned_restrided={int(warned)} "
                f"warned_control={int(warned_control)} cpu={cpu.replace(' ', '_')}"
            )
    print(figures)


if __name__ == "__main__":
    main()
