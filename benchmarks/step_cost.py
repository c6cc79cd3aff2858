"""What a recipe lever costs per training step: the step of several config variants, timed in one process.

A lever that changes the work per step (crop sizes or counts, total stride, batch) is compared with the preset
at equal training time, not equal steps; the step count that gives equal time comes from this ratio. Timed runs
on a shared machine move by more than such ratios, so the variants are timed here in alternating rounds on the
same ready-made crops, each from its own initial weights, and the fastest step of each is kept.

    python benchmarks/step_cost.py crop24="crops=[{size: 24, count: 2, scale: [0.2, 1.0]}]" \\
        multicrop="crops=[{size: 32, count: 2, scale: [0.2, 1.0]}, {size: 16, count: 2, scale: [0.08, 0.3]}]"
    python benchmarks/step_cost.py --threads 1 --precision bf16 stride4="model.output_stride=4"

Each variant is ``NAME=OVERRIDES`` (overrides split on the spaces between ``key=value`` pairs); the preset
itself is always the first, ``preset``; ``--common`` overrides apply to it and to every variant. Printed per
variant: the fastest and median step, its ratio to the preset's fastest step and the training FLOPs of one step
(forward and backward, ``FlopCounterMode``).
Last line: ``preset_s=<x> <name>_ratio=<x> ... <name>_flops_ratio=<x> ... threads=<n> precision=<p> cpu=<model>``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import torch
from _common import (  # the sibling module (its folder is on sys.path when run)
    machine,
    swav_step_fn,
    synthetic_crops,
    training_flops,
)

from openseer.config import load_config
from openseer.train.config import PretrainConfig

_PAIR = re.compile(r"\s+(?=[\w.]+=)")  # a space that starts the next key=value pair


def split_overrides(text: str) -> list[str]:
    """``key=value key=value`` -> its overrides; a value may hold spaces (YAML flow lists)."""
    return [o for o in _PAIR.split(text.strip()) if o]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=key=value key=value`` -> (NAME, overrides)."""
    name, sep, overrides = text.partition("=")
    if not sep or not name.isidentifier():
        raise SystemExit(f"a variant is NAME=OVERRIDES, got {text!r}")
    return name, split_overrides(overrides)


def main(argv: list[str] | None = None) -> str:
    """Runs the comparison; returns the last line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", help="NAME=OVERRIDES, compared with the preset")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--common", default="", help="overrides applied to the preset and every variant")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant and round")
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu, cores = machine(device)
    common = split_overrides(args.common)
    variants = [("preset", [])] + [parse_variant(v) for v in args.variants]
    runs = {}
    for name, overrides in variants:
        cfg = load_config(PretrainConfig, [args.preset], common + overrides)
        torch.manual_seed(cfg.run.seed)
        step = swav_step_fn(cfg, device, precision=args.precision, compiled=False)
        crops = synthetic_crops(cfg, device)
        step(crops)  # first step: kernel choice, allocation
        runs[name] = (step, crops, training_flops(step, crops))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (step, crops, _) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(crops)
            times[name].append((time.perf_counter() - start) / args.steps)

    base_s, base_flops = min(times["preset"]), runs["preset"][2]
    print(f"cpu={cpu} cores={cores} threads={torch.get_num_threads()} precision={args.precision}")
    figures = [f"preset_s={base_s:.3f}"]
    for name, (_, _, flops) in runs.items():
        fastest, median = min(times[name]), statistics.median(times[name])
        ratio, flops_ratio = fastest / base_s, flops / base_flops
        print(
            f"{name}: fastest {fastest:.3f} s/step, median {median:.3f}, {ratio:.2f}x the preset's step, "
            f"{flops / 1e9:.1f} GFLOP per step ({flops_ratio:.2f}x)"
        )
        if name != "preset":
            figures += [f"{name}_ratio={ratio:.3f}", f"{name}_flops_ratio={flops_ratio:.3f}"]
    figures += [
        f"threads={torch.get_num_threads()}",
        f"precision={args.precision}",
        f"cpu={cpu.replace(' ', '_')}",
    ]
    line = " ".join(figures)
    print(line)
    return line


if __name__ == "__main__":
    main()
