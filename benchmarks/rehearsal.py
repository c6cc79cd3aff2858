"""Rehearse a large-scale recipe on this CPU: the preset with only its sizes scaled down, on 2 gloo processes,
killed part-way, resumed, and scored.

    python benchmarks/rehearsal.py --preset swav-rn50
    python benchmarks/rehearsal.py --preset seer-rg256gf --steps 300 --data cifar10

What is scaled, and why the rest stays, is in ``tests/support/rehearsal.py``. The run is launched with
torchrun's variables (2 processes, gloo), killed with SIGKILL once it has logged ``--kill-at`` of its steps (after a
checkpoint, before the next), resumed with ``--resume`` and run to the end; then its backbone is scored with
weighted kNN (k=200, T=0.1) on the held-out images, against the same network at random initialisation.
bf16 is kept where this CPU computes it natively, else the rehearsal runs in fp32 (and says so).

Last line: ``steps=<n> resumed=1 knn_top1=<x> knn_top1_random=<y> prototypes_used=<k> ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import cifar10_folder, machine  # the sibling module (its folder is on sys.path when run)
from support import free_port, rank_env
from support.reference import REFERENCES
from support.rehearsal import rehearsal_overrides

from openseer.config import load_config, parse_override
from openseer.eval.clusters import ClustersConfig, run_clusters
from openseer.eval.embed import FeatureConfig
from openseer.eval.pretraining import evaluate_pretraining
from openseer.eval.report import read_metrics
from openseer.hardware import device_native_bf16
from openseer.train.config import PretrainConfig
from openseer.train.data import prepare_data

WORLD = 2


def _launch(preset: str, overrides: dict, resume: bool, log: Path) -> list[subprocess.Popen]:
    """The run's processes, as torchrun would start them on one machine (gloo), each in its own session so that
    a SIGKILL takes each down at once, like a machine that fails. Rank 0's stderr goes to ``log``."""
    args = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    command = [
        sys.executable,
        "-m",
        "openseer",
        "pretrain",
        "--config",
        preset,
        *(["--resume"] if resume else []),
    ]
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as rank0_err:
        return [
            subprocess.Popen(
                [*command, *args],
                env=rank_env(rank, WORLD, port, threads=1),
                stderr=rank0_err if rank == 0 else subprocess.DEVNULL,
                start_new_session=True,
            )
            for rank in range(WORLD)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="swav-rn50", choices=[r.preset for r in REFERENCES])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64, help="images per process")
    parser.add_argument(
        "--resolution", type=int, default=32, help="side of the first crop (the others scale)"
    )
    parser.add_argument(
        "--kill-at", type=float, default=0.6, help="share of the steps logged before the kill"
    )
    parser.add_argument("--data", choices=["builtin", "cifar10"], default="builtin")
    parser.add_argument("--out", default=None, help="run folder (default runs/rehearsal-<preset>)")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides (YAML values)")
    args = parser.parse_args()

    out = Path(args.out or f"runs/rehearsal-{args.preset}")
    shutil.rmtree(out, ignore_errors=True)  # a rehearsal starts from nothing; --resume must find only its own
    source = "builtin" if args.data == "builtin" else str(cifar10_folder())
    data = prepare_data(load_config(PretrainConfig, [args.preset], [f"data.source={source}"]).data)
    bf16 = device_native_bf16(torch.device("cpu"))
    overrides = rehearsal_overrides(
        args.preset,
        args.steps,
        WORLD,
        len(data),
        batch_size=args.batch_size,
        resolution=args.resolution,
        bf16=bf16,
    )
    overrides.update(
        {"data.source": source, "run.out_dir": str(out), "run.progress": False, "run.threads": 1}
    )
    overrides.update(parse_override(item) for item in args.overrides)  # YAML values: lists, numbers
    cpu, cores = machine(torch.device("cpu"))
    print(
        f"cpu={cpu} cores={cores} processes={WORLD} native_bf16={bf16} train_images={len(data)}", flush=True
    )
    print(json.dumps(overrides, indent=1), flush=True)

    # ============ run, kill part-way ============
    started = time.perf_counter()
    kill_at = round(args.kill_at * args.steps)
    first = _launch(args.preset, overrides, resume=False, log=out / "rehearsal-first.log")
    while all(p.poll() is None for p in first):
        if any(r["step"] >= kill_at for r in read_metrics(out / "metrics.jsonl")):
            for p in first:
                os.kill(p.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    for p in first:
        p.wait()
    killed_after = max((r["step"] for r in read_metrics(out / "metrics.jsonl")), default=0)
    print(f"killed at step {killed_after} of {args.steps} (rc {[p.returncode for p in first]})", flush=True)

    # ============ resume to the end ============
    second = _launch(args.preset, overrides, resume=True, log=out / "rehearsal-resumed.log")
    for p in second:
        p.wait()
    err = (out / "rehearsal-resumed.log").read_text()
    sys.stderr.write(err[-4000:])
    if any(p.returncode for p in second):
        sys.exit(f"the resumed run failed (rc {[p.returncode for p in second]})")
    resumed = re.search(r"resumed from \S+ at step (\d+)", err)
    train_s = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())

    # ============ score ============
    scores = evaluate_pretraining(out)
    # prototypes that take at least one of 10,000 images (argmax of its scores), as `openseer clusters` counts them
    clusters = run_clusters(
        ClustersConfig(
            checkpoint=str(out),
            data="builtin:test" if args.data == "builtin" else source,
            max_images=10_000,
            clusters=8,
            features=FeatureConfig(bn_recalibrate=False, workers=0, progress=False),
        )
    )
    records = read_metrics(out / "metrics.jsonl")  # the logged steps
    early = [r["loss"] for r in records[:3]]
    late = [r["loss"] for r in records[-3:]]
    print(
        f"steps={summary['steps']} resumed={int(bool(resumed))} "
        f"resumed_from={resumed.group(1) if resumed else 0} "
        f"knn_top1={scores['knn_top1']:.4f} knn_top1_random={scores['knn_top1_random']:.4f} "
        f"linear_top1={scores['linear_top1']:.4f} prototypes_used={clusters['used']} "
        f"prototypes={overrides['model.prototypes']} loss_start={sum(early) / len(early):.3f} "
        f"loss_end={sum(late) / len(late):.3f} precision={overrides['run.precision']} "
        f"train_minutes={train_s / 60:.1f} preset={args.preset} data={args.data} cpu={cpu.replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
