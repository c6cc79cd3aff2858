"""bf16 against fp32 at equal steps over several seeds: kNN and linear-probe top-1 on held-out images, mean and
spread per variant, on a preset (default: cpu) or on the rehearsal of a large-scale preset.

    python benchmarks/bf16_quality.py --preset cpu --steps 200 --seeds 0,1,2 --data cifar10
    python benchmarks/bf16_quality.py --preset cpu --steps 200 --seeds 0,1,2 --data cifar10 \\
        --variants fp32,bf16,bf16+batchnorm,bf16+head,bf16+small_maps,bf16+batchnorm+head+small_maps
    python benchmarks/bf16_quality.py --rehearsal seer-rg256gf --steps 300 --seeds 0,1,2 --data cifar10

A variant is a precision ('fp32', 'bf16', 'fp16') and, after '+', the modules its autocast keeps in fp32
(``run.fp32_modules``: batchnorm, head, small_maps). Each (variant, seed) is a run from scratch with the same
steps, schedule and data; the seed (``run.seed``) draws the initialisation, the data order and augmentation and
the held-out split, so the runs of one seed differ only in their variant, and each variant's difference to fp32
is taken seed by seed.

* ``--preset``: the preset's recipe for exactly ``--steps`` optimiser steps (``optim.epochs`` set so that its
  schedule spans them; no time budget: equal steps whatever each precision's speed), one process, scored as a
  pretraining run is at its end (kNN and linear probe on the held-out split, ``openseer.eval.pretraining``).
* ``--rehearsal PRESET``: ``benchmarks/rehearsal.py``'s run of that preset (2 gloo processes, killed and resumed
  part-way, scored), with the variant's ``run.precision`` and ``run.fp32_modules`` and the seed passed on.

Extra ``key=value`` overrides go to every run (a smoke run: a smaller model and batch). Where the CPU emulates
bf16 the bf16 runs are slow, not different (``bf16=`` on the last line says which). ``<out>/results.json``
keeps every run, written after each one.

Last line: ``<variant>_knn_mean=<x> <variant>_knn_sd=<x> <variant>_linear_mean=<x> <variant>_linear_sd=<x>
[<variant>_knn_vs_fp32=<x> <variant>_linear_vs_fp32=<x>] ... steps=<n> seeds=<n> preset=<name>
bf16=<native|emulated> bf16_flag=<flag> cpu=<model>`` (variant names with '_' for '+'; ``sd``: the standard
deviation over seeds; ``vs_fp32``: the mean over seeds of the variant's score minus fp32's with the same seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from _common import cifar10_folder, machine  # the sibling module (its folder is on sys.path when run)

from openseer.api import pretrain  # trains, then the one end-of-run evaluation
from openseer.config import load_config
from openseer.fileio.atomic import atomic_write_text
from openseer.hardware import bf16_support
from openseer.train.config import PretrainConfig
from openseer.train.data import prepare_data
from openseer.train.step import FP32_MODULE_KINDS

HERE = Path(__file__).resolve().parent
PRECISIONS = ("fp32", "bf16", "fp16")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'bf16+batchnorm+head' -> ('bf16', ['batchnorm', 'head'])."""
    precision, *kinds = text.split("+")
    unknown = [k for k in kinds if k not in FP32_MODULE_KINDS]
    if precision not in PRECISIONS or unknown:
        raise SystemExit(
            f"variant {text!r}: expected a precision ({', '.join(PRECISIONS)}) and, after '+', modules kept in "
            f"fp32 ({', '.join(FP32_MODULE_KINDS)})"
        )
    return precision, kinds


def variant_overrides(variant: str, seed: int) -> list[str]:
    """The config keys that make a run of ``variant`` with ``seed``."""
    precision, kinds = parse_variant(variant)
    return [
        f"run.precision={precision}",
        f"run.fp32_modules=[{', '.join(kinds)}]",
        "run.compile=false",
        f"run.seed={seed}",
    ]


def last_line_figures(stdout: str) -> dict[str, str]:
    """The ``key=value`` pairs of a benchmark's last line."""
    lines = [line for line in stdout.splitlines() if "=" in line]
    if not lines:
        raise ValueError("no key=value line in the output")
    return dict(pair.split("=", 1) for pair in lines[-1].split() if "=" in pair)


def preset_run(
    preset: str, source: str, steps: int, n_train: int, run: list[str], overrides: list[str], out: Path
) -> dict:
    """One run of ``preset`` for exactly ``steps`` steps; its scores."""
    cfg = load_config(PretrainConfig, [preset], [f"data.source={source}", *overrides])
    epochs = steps * cfg.optim.batch_size / n_train
    cfg = load_config(
        PretrainConfig,
        [preset],
        [
            f"data.source={source}",
            f"optim.epochs={epochs!r}",
            f"run.max_steps={steps}",
            "run.budget_minutes=null",
            f"run.out_dir={out}",
            "run.evaluate=true",
            "run.progress=false",
            "run.tensorboard=false",
            *overrides,
            *run,
        ],
    )
    result = pretrain(cfg)
    if not result.evaluation or "knn_top1" not in result.evaluation:
        raise SystemExit(f"{source} has no labelled held-out images to score the runs on")
    e = result.evaluation
    return {
        "knn": e["knn_top1"],
        "linear": e["linear_top1"],
        "knn_random": e["knn_top1_random"],
        "steps": result.steps,
    }


def rehearsal_command(
    preset: str, data: str, steps: int, run: list[str], overrides: list[str], out: Path
) -> list[str]:
    """``benchmarks/rehearsal.py`` for one (variant, seed)."""
    script = HERE / "rehearsal.py"
    return [
        sys.executable, str(script), "--preset", preset, "--steps", str(steps), "--data", data,
        "--out", str(out), *overrides, *run,
    ]  # fmt: skip


def rehearsal_run(command: list[str]) -> dict:
    """The rehearsal's scores, from its last line."""
    res = subprocess.run(command, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"the rehearsal failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    f = last_line_figures(res.stdout)
    return {
        "knn": float(f["knn_top1"]),
        "linear": float(f["linear_top1"]),
        "knn_random": float(f["knn_top1_random"]),
        "steps": int(f["steps"]),
    }


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def summary(runs: dict[str, dict[int, dict]]) -> tuple[list[str], list[str]]:
    """(one readable line per variant, the last line's figures)."""
    lines, figures = [], []
    base = runs.get("fp32", {})
    for variant, by_seed in runs.items():
        name = variant.replace("+", "_")
        text = f"{variant}: "
        for metric in ("knn", "linear"):
            mean, sd = _spread([r[metric] for r in by_seed.values()])
            figures += [f"{name}_{metric}_mean={mean:.4f}", f"{name}_{metric}_sd={sd:.4f}"]
            text += f"{metric} {mean:.4f} ± {sd:.4f}  "
        paired = sorted(set(by_seed) & set(base))
        if variant != "fp32" and paired:
            for metric in ("knn", "linear"):
                diff = statistics.fmean(by_seed[s][metric] - base[s][metric] for s in paired)
                figures.append(f"{name}_{metric}_vs_fp32={diff:+.4f}")
                text += f"{metric} vs fp32 {diff:+.4f}  "
        lines.append(text + f"(seeds {', '.join(map(str, sorted(by_seed)))})")
    return lines, figures


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--preset", default="cpu", help="a preset run for --steps steps in one process")
    where.add_argument("--rehearsal", default=None, help="a large-scale preset rehearsed by rehearsal.py")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="fp32,bf16", help="comma-separated precision[+module...]")
    ap.add_argument(
        "--data", default="builtin", help="builtin, cifar10, or a labelled folder (--preset only)"
    )
    ap.add_argument("--out", default="runs/bf16-quality")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    for v in variants:
        parse_variant(v)
    device = torch.device("cpu")
    cpu, cores = machine(device)
    support, flag = bf16_support(device)
    print(f"cpu={cpu} cores={cores} bf16={support} ({flag}) variants={variants} seeds={seeds}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.rehearsal:
        if args.data not in ("builtin", "cifar10"):
            raise SystemExit("--rehearsal runs on builtin or cifar10 data (benchmarks/rehearsal.py)")
        name = f"rehearsal-{args.rehearsal}"
    else:
        name = args.preset
        source = str(cifar10_folder()) if args.data == "cifar10" else args.data
        base = load_config(PretrainConfig, [args.preset], [f"data.source={source}", *args.overrides])
        n_train = len(prepare_data(base.data, seeds[0]))

    runs: dict[str, dict[int, dict]] = {v: {} for v in variants}
    for seed in seeds:  # seed by seed, so an interrupted sweep has whole pairs
        for variant in variants:
            run_dir = out / f"{name}-{variant}-seed{seed}"
            settings = variant_overrides(variant, seed)
            if args.rehearsal:
                command = rehearsal_command(
                    args.rehearsal, args.data, args.steps, settings, args.overrides, run_dir
                )
                record = rehearsal_run(command)
            else:
                record = preset_run(
                    args.preset, source, args.steps, n_train, settings, args.overrides, run_dir
                )
            runs[variant][seed] = record
            print(
                f"{variant} seed {seed}: kNN {record['knn']:.4f}, linear {record['linear']:.4f}", flush=True
            )
            results = {"cpu": cpu, "bf16": support, "bf16_flag": flag, "preset": name, "runs": runs}
            atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    steps = {r["steps"] for by_seed in runs.values() for r in by_seed.values()}
    if len(steps) != 1:
        raise SystemExit(f"the runs made different numbers of steps: {sorted(steps)}")
    lines, figures = summary(runs)
    print("\n".join(lines))
    last = " ".join(
        [*figures, f"steps={steps.pop()}", f"seeds={len(seeds)}", f"preset={name}", f"bf16={support}"]
        + [f"bf16_flag={flag}", f"cpu={cpu.replace(' ', '_')}"]
    )
    print(last)
    return last


if __name__ == "__main__":
    main()
