"""Pretraining throughput, and how close the training step comes to this machine's matrix-product peak.

Three measurements in one run, on the preset's model, crops and batch (default: the cpu preset):

* ``imgs_per_s``: end to end, the real pretraining loop (``openseer.train.pretrain``) over the data: input
  pipeline (decoded cache or per-image loader), multi-crop, forward, Sinkhorn, loss, backward, optimiser step.
  Taken from the loop's own per-step rates after ``--warmup`` steps.
* ``compute_imgs_per_s``: the same training step on ready-made crops (no input pipeline).
* ``gflops_per_img``: training FLOPs per image (forward + backward) counted by
  ``torch.utils.flop_counter.FlopCounterMode`` over one step; ``gflops_per_s`` = that x compute_imgs_per_s;
  ``mfu`` = gflops_per_s / the median rate of large square matrix products measured in the same run
  (fp32 on CPU; bf16 on CUDA, where the step also runs under bf16 autocast).

    python benchmarks/throughput.py                       # cpu preset on the built-in data
    python benchmarks/throughput.py --data cifar10 run.compile=true
    python benchmarks/throughput.py --device cuda --preset swav-rn50 optim.batch_size=64

Last line: ``imgs_per_s=<x> compute_imgs_per_s=<x> gflops_per_img=<x> mfu=<x>``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from _common import (  # the sibling module (its folder is on sys.path when run)
    cifar10_folder,
    images_per_second,
    matmul_peak_gflops,
    swav_step_fn,
    synthetic_crops,
)
from torch.utils.flop_counter import FlopCounterMode

from openseer.config import load_config
from openseer.train.config import PretrainConfig
from openseer.train.pretrain import pretrain


def end_to_end_rate(cfg: PretrainConfig, warmup: int) -> float:
    """Images/s of the pretraining loop after ``warmup`` steps, from the per-step rates it logs."""
    pretrain(cfg)
    lines = (Path(cfg.run.out_dir) / "metrics.jsonl").read_text().splitlines()
    rates = [r["imgs_per_s"] for r in map(json.loads, lines) if "imgs_per_s" in r and r["step"] > warmup]
    return len(rates) / sum(1.0 / r for r in rates) if rates else float("nan")  # images per total time


def training_flops(step, crops: list[torch.Tensor]) -> float:
    """FLOPs of one training step (forward and backward; the optimiser's element-wise work is not counted)."""
    with FlopCounterMode(display=False) as counter:
        step(crops)
    return float(counter.get_total_flops())


def profile_table(step, crops: list[torch.Tensor], rows: int = 12) -> str:
    """Where one training step spends its time, by operator (self time): what limits the step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if crops[0].is_cuda else [])
    with profile(activities=activities) as prof:
        step(crops)
    key = "self_cuda_time_total" if crops[0].is_cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default="builtin", help="builtin, cifar10, or a folder for the end-to-end run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    ap.add_argument(
        "--matmul-size", type=int, default=None, help="side of the peak matmuls (2048 CPU, 8192 CUDA)"
    )
    ap.add_argument("--profile", action="store_true", help="print the operators that take the step's time")
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    source = str(cifar10_folder()) if args.data == "cifar10" else args.data
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"data.source={source}",
            f"run.device={args.device}",
            f"run.out_dir={tmp}",
            f"run.max_steps={args.warmup + args.steps}",
            "run.budget_minutes=null",
            "run.log_every=1",
            "run.checkpoint_every=1000000",
            "run.evaluate=false",
            "run.progress=false",
            "run.tensorboard=false",
            *(["run.precision=bf16"] if cuda else []),
            *args.overrides,
        ]
        cfg = load_config(PretrainConfig, [args.preset], overrides)
        peak_dtype = torch.bfloat16 if cuda else torch.float32
        peak = matmul_peak_gflops(device, peak_dtype, args.matmul_size or (8192 if cuda else 2048))
        print(f"matmul peak ({str(peak_dtype).removeprefix('torch.')}): {peak:.1f} GFLOP/s")

        step = swav_step_fn(cfg, device)
        crops = synthetic_crops(cfg, device)
        compute = images_per_second(lambda: step(crops), args.steps, args.warmup, device)
        gflops_img = training_flops(step, crops) / cfg.optim.batch_size / 1e9
        achieved = gflops_img * compute
        print(
            f"compute only: {compute:.1f} img/s, {gflops_img:.4f} GFLOP/img, {achieved:.1f} GFLOP/s "
            f"= {achieved / peak:.1%} of the matmul peak"
        )
        if args.profile:
            print(profile_table(step, crops))
        e2e = end_to_end_rate(cfg, args.warmup)
        print(f"end to end ({cfg.data.source}): {e2e:.1f} img/s = {e2e / compute:.0%} of compute only")
    print(
        f"preset={args.preset} arch={cfg.model.arch} batch={cfg.optim.batch_size} device={device} "
        f"threads={torch.get_num_threads()} compile={cfg.run.compile} peak_gflops={peak:.1f} "
        f"gflops_per_s={achieved:.1f}"
    )
    print(
        f"imgs_per_s={e2e:.1f} compute_imgs_per_s={compute:.1f} gflops_per_img={gflops_img:.4f} "
        f"mfu={achieved / peak:.3f}"
    )


if __name__ == "__main__":
    main()
