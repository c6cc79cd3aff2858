"""Pretraining throughput, the fast paths ``run.precision=auto`` / ``run.compile=auto`` would choose here, and how
close the training step comes to this machine's matrix-product peak.

On the preset's model, crops and batch (default: the cpu preset), in one run:

* the step on ready-made crops, timed each way: fp32 and bf16 autocast, eager and compiled
  (``openseer.train.trials.measure``: the same weights for each, losses compared). Printed: seconds per step,
  ``bf16_speedup`` (fp32 step time / bf16 step time), ``compile_speedup`` (eager / compiled, fp32) and the
  compile seconds of the first compiled steps;
* what ``auto`` chooses, and what choosing costs, for runs of each ``--choosing-budgets`` minutes (and of
  ``--budget-minutes``): ``openseer.train.autotune.choose_fast_paths`` itself, each time as a first run on this
  machine (an empty record; inductor's caches as they are), its one line printed; ``precision=`` and
  ``compile=`` are its choice for ``--budget-minutes``, ``choosing_s_<M>m=`` and ``choosing_share_<M>m=`` its
  seconds and their share of each budget, ``probe_bf16_speedup=`` the probe's bf16 ratio beside the trial
  steps' ``bf16_speedup=``, and ``bf16=native|emulated`` with ``bf16_flag=`` the CPU flag that decides it;
* the matrix-product peaks in fp32 and bf16, measured now; ``mfu`` = training FLOPs per image (forward and
  backward, ``FlopCounterMode``) x images/s of the chosen path / the peak of the chosen precision;
* ``imgs_per_s``: end to end, the real pretraining loop (``openseer.train.pretrain``) with the chosen paths over
  the data (input pipeline, multi-crop, forward, Sinkhorn, loss, backward, optimiser), from its per-step rates
  after ``--warmup`` steps, and ``data_wait_share``: the share of those steps' time the loop waited for its next
  batch (decoding, caching, cropping not hidden behind the step);
* with ``--profile``: each layer kind's input and output dtype and layout, then the step's operators by self
  time and the shares of convolutions, matrix products and, for the compiled step on a CPU (compiled again with
  inductor's kernel profile on), the kernels inductor generates;
* with ``--compile-cold-warm``: the compile seconds of the step in two fresh processes sharing a new, empty
  inductor cache folder, the first cold, the second warm (FX graph and AOT autograd caches).

    python benchmarks/throughput.py                       # cpu preset, built-in data
    python benchmarks/throughput.py --data cifar10 --compile-cold-warm
    python benchmarks/throughput.py --no-compile          # skip the compiled candidates (minutes on a CPU)
    python benchmarks/throughput.py --choosing-budgets 5,10,20,40,120 --no-compile
    python benchmarks/throughput.py --device cuda --preset swav-rn50 optim.batch_size=64
    python benchmarks/throughput.py --preset photos --data ~/photos --no-compile   # sized from the folder
    python benchmarks/throughput.py --preset photos --data ~/photos --no-compile data.cache_size=null

Last line: ``precision=<fp32|bf16> compile=<on|off> imgs_per_s=<x> data_wait_share=<x> compute_imgs_per_s=<x> bf16_speedup=<x>
probe_bf16_speedup=<x> compile_speedup=<x> compile_s=<x> gflops_per_img=<x> mfu=<x> peak_fp32=<x> peak_bf16=<x>
choosing_s_<M>m=<x> choosing_share_<M>m=<x> ... bf16=<native|emulated> bf16_flag=<flag> cores=<n> cpu=<model>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from _common import (  # the sibling module (its folder is on sys.path when run)
    cifar10_folder,
    machine,
    matmul_peak_gflops,
    swav_step_fn,
    synthetic_crops,
    training_flops,
)

from openseer.config import load_config
from openseer.hardware import bf16_support
from openseer.train import autotune as at
from openseer.train.config import PretrainConfig
from openseer.train.data import prepare_data
from openseer.train.parallel import build_for_strategy
from openseer.train.pretrain import pretrain
from openseer.train.sizing import auto_keys, size_run
from openseer.train.trials import Candidate, Trial, measure


def end_to_end_rate(cfg: PretrainConfig, warmup: int) -> tuple[float, float]:
    """Images/s of the pretraining loop after ``warmup`` steps, and the share of that time it waited for its
    input, from the per-step figures it logs."""
    pretrain(cfg)
    lines = (Path(cfg.run.out_dir) / "metrics.jsonl").read_text().splitlines()
    steps = [r for r in map(json.loads, lines) if "imgs_per_s" in r and r["step"] > warmup]
    if not steps:
        return float("nan"), float("nan")
    seconds = [1.0 / r["imgs_per_s"] for r in steps]  # per image of each step: equal batches
    waited = sum(r["data_wait_share"] * t for r, t in zip(steps, seconds, strict=True))
    return len(steps) / sum(seconds), waited / sum(seconds)  # images per total time, waited per total time


# the operators of a step, by what they do; the kernels torch.compile generates (names "..._cpp_fused_..." when
# inductor's kernel profile is on) hold BatchNorm, activations, squeeze-excitation and casts, fused
_KINDS = {
    "convolutions": ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::cudnn_convolution"),
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
}


def profile_table(step, crops: list[torch.Tensor], rows: int = 15) -> str:
    """Where one training step spends its time, by operator (self time): what limits the step; then the shares
    of convolutions, matrix products and compiled (fused element-wise and reduction) kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if crops[0].is_cuda else [])
    with profile(activities=activities) as prof:
        step(crops)
    key = "self_cuda_time_total" if crops[0].is_cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, key) for e in events) or 1.0
    shares = {
        kind: sum(getattr(e, key) for e in events if e.key in ops) / total for kind, ops in _KINDS.items()
    }
    shares["compiled kernels"] = sum(getattr(e, key) for e in events if "cpp_fused" in e.key) / total
    summary = ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items())
    return f"{events.table(sort_by=key, row_limit=rows)}\nshares of the step: {summary}"


def compiled_profile_table(cfg: PretrainConfig, device: torch.device, precision: str, crops) -> str:
    """``profile_table`` of the compiled step, with inductor's kernel profile on so that each generated kernel
    is timed under its own name. Compiled cold: dynamo's code for the model class, inductor's and AOT autograd's
    caches would all hand back the kernels built without it (and dynamo's is cleared again after)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    no_cache = functorch_config.patch(enable_autograd_cache=False)
    with no_cache, inductor_config.patch({"cpp.enable_kernel_profile": True, "fx_graph_cache": False}):
        step = swav_step_fn(cfg, device, precision=precision, compiled=True)
        step(crops)
        step(crops)  # compiled (the second call: the backward's graph is in place too)
    table = profile_table(step, crops)
    torch._dynamo.reset()
    return table


def _layout(x: torch.Tensor) -> str:
    if x.dim() == 4 and x.shape[-1] * x.shape[-2] > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous" if x.is_contiguous() else "strided"


def layer_formats(
    cfg: PretrainConfig, device: torch.device, precision: str, crops: list[torch.Tensor]
) -> str:
    """Per kind of layer, the dtype and memory layout it receives and returns in one training step under
    ``precision``: where autocast casts, and whether channels_last survives the casts."""
    from collections import Counter

    from torch import nn

    model = build_for_strategy(cfg, device)
    seen: Counter = Counter()

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        kind = type(mod).__name__ + ("(grouped)" if getattr(mod, "groups", 1) > 1 else "")
        x = inp[0]
        seen[
            (
                kind,
                str(x.dtype).removeprefix("torch."),
                _layout(x),
                str(out.dtype).removeprefix("torch."),
                _layout(out),
            )
        ] += 1

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.BatchNorm1d | nn.Linear):
            m.register_forward_hook(hook)
    swav_step_fn(cfg, device, precision, compiled=False, model=model)(crops)
    return "\n".join(f"  {k[0]}: {k[1]} {k[2]} -> {k[3]} {k[4]} x{n}" for k, n in sorted(seen.items()))


def time_paths(
    cfg: PretrainConfig, device: torch.device, steps: int, compile_too: bool, native_bf16: bool
) -> list[Trial]:
    """Every path timed on the same synthetic crops from the same weights (fp32 eager first: the reference).

    Without native bf16 the bf16 step is emulated (minutes on a CPU): one timed step, and never compiled.
    """
    model = build_for_strategy(cfg, device)
    crops = synthetic_crops(cfg, device)
    eager = [Candidate("fp32", False), Candidate("bf16", False)]
    # with native bf16 the two precisions' timed steps take turns, as the start-up choice times them
    groups = [(eager, steps)] if native_bf16 else [(eager[:1], steps), (eager[1:], 1)]
    if compile_too:
        groups.append(([Candidate("fp32", True)] + ([Candidate("bf16", True)] if native_bf16 else []), steps))
    trials, compiled = [], None
    for cands, n in groups:
        more, compiled = measure(cfg, model, model, cands, crops, steps=n, compiled=compiled)
        trials += more
    return trials


class ReadyBatches:
    """A batch stream (``openseer.train.data.BatchStream``'s ``epoch`` and ``steps_per_epoch``) of one
    ready-made batch: what the start-up choice reads its first batch from."""

    steps_per_epoch = 1

    def __init__(self, crops: list[torch.Tensor]) -> None:
        self.crops = crops

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[torch.Tensor]]:
        yield self.crops


def choosing_costs(
    cfg: PretrainConfig, device: torch.device, budgets: list[float], compile_ok: bool, folder: Path
) -> dict[float, at.Decision]:
    """What ``auto`` chooses for a run of each budget (minutes) and what choosing costs it, as a first run on
    this machine: each with an empty record of its own in ``folder``."""
    decisions = {}
    crops = synthetic_crops(cfg, device)
    for minutes in budgets:
        run = replace(
            cfg.run, precision="auto", compile="auto" if compile_ok else False, budget_minutes=minutes
        )
        auto = replace(cfg, run=run)
        model = build_for_strategy(auto, device)
        fast = at.choose_fast_paths(
            auto, model, model, ReadyBatches(crops), device, None, folder / f"autotune-{minutes:g}m.json"
        )
        decisions[minutes] = fast.decision
    return decisions


def compile_probe(preset: str, overrides: list[str], device: str) -> None:
    """Child process of --compile-cold-warm: prints the compile seconds of the first compiled steps."""
    cfg = load_config(PretrainConfig, [preset], overrides)
    dev = torch.device(device)
    crops = synthetic_crops(cfg, dev)
    step = swav_step_fn(cfg, dev, precision="fp32", compiled=True)
    start = time.perf_counter()
    step(crops)
    step(crops)
    first = time.perf_counter() - start
    start = time.perf_counter()
    step(crops)
    print(f"compile_s={max(0.0, first - 2 * (time.perf_counter() - start)):.1f}")


def compile_cold_warm(preset: str, overrides: list[str], device: str) -> tuple[float, float]:
    """Compile seconds in a fresh process with an empty inductor cache folder, then in another one reusing it."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        cmd = [
            sys.executable,
            __file__,
            "--compile-probe",
            "--preset",
            preset,
            "--device",
            device,
            *overrides,
        ]
        out = []
        for _ in range(2):
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out.append(float(res.stdout.strip().splitlines()[-1].split("=")[1]))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", default="builtin", help="builtin, cifar10, or a folder for the end-to-end run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per path and for the end-to-end run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed loop steps before the end-to-end rate")
    ap.add_argument("--budget-minutes", type=float, default=20.0, help="run length auto decides for")
    ap.add_argument(
        "--choosing-budgets",
        default="5,10,20,40",
        help="run lengths (minutes) whose start-up choice and its cost are measured",
    )
    ap.add_argument("--no-compile", action="store_true", help="do not time compiled paths")
    ap.add_argument("--compile-cold-warm", action="store_true", help="also time a cold and a warm compile")
    ap.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--matmul-size", type=int, default=None, help="side of the peak matmuls (2048 CPU, 8192 CUDA)"
    )
    ap.add_argument("--profile", action="store_true", help="print the operators that take the step's time")
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = ap.parse_args()
    if args.compile_probe:
        compile_probe(args.preset, args.overrides, args.device)
        return
    device = torch.device(args.device)
    hardware, cores = machine(device)
    support, flag = bf16_support(device)
    native = support == "native"
    print(
        f"cpu={hardware} cores={cores} threads={torch.get_num_threads()} bf16={support} ({flag}) device={device}"
    )
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    peaks = {
        p: matmul_peak_gflops(device, dt, n) for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    print(
        f"matmul peak (sides up to {n}): fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s"
    )

    source = str(cifar10_folder()) if args.data == "cifar10" else args.data
    cfg = load_config(PretrainConfig, [args.preset], args.overrides)
    if auto_keys(cfg):  # a preset sized from its data (photos): sized here as its run on them sizes it
        cfg = replace(cfg, data=replace(cfg.data, source=source))
        with tempfile.TemporaryDirectory() as folder:
            sized = size_run(cfg, len(prepare_data(cfg.data, cfg.run.seed, run_dir=folder)))
        cfg = sized.cfg
        for reason in sized.reasons:
            print(f"sized from the data: {reason}")
    trials = time_paths(cfg, device, args.steps, not args.no_compile, native)
    by = {t.candidate.name: t for t in trials}
    bs = cfg.optim.batch_size
    for t in trials:
        extra = f", compile {t.compile_s:.1f} s" if t.candidate.compiled else ""
        print(f"{t.candidate.name}: {t.step_s:.3f} s/step = {bs / t.step_s:.1f} img/s{extra}")
    bf16_speedup = by["fp32-eager"].step_s / by["bf16-eager"].step_s
    compiled = by.get("fp32-compiled")
    compile_speedup = by["fp32-eager"].step_s / compiled.step_s if compiled else float("nan")
    compile_s = compiled.compile_s if compiled else float("nan")
    print(f"bf16/fp32 step speed: {bf16_speedup:.2f}x; compiled/eager (fp32): {compile_speedup:.2f}x")
    if args.compile_cold_warm:
        cold, warm = compile_cold_warm(args.preset, args.overrides, args.device)
        print(f"compile of the step in a fresh process: cold cache {cold:.1f} s, warm cache {warm:.1f} s")
    budgets = sorted({*(float(m) for m in args.choosing_budgets.split(",")), args.budget_minutes})
    with tempfile.TemporaryDirectory() as folder:
        decisions = choosing_costs(cfg, device, budgets, not args.no_compile, Path(folder))
    for minutes, d in decisions.items():
        print(f"{minutes:g}-minute run: {d.line()}")
    chosen = decisions[args.budget_minutes]
    best = Candidate(chosen.precision, chosen.compile)
    probe_bf16_speedup = chosen.probe_bf16_speedup or float("nan")
    print(f"probe's bf16/fp32 ratio {probe_bf16_speedup:.2f}x, trial steps' {bf16_speedup:.2f}x")

    flop_step = swav_step_fn(cfg, device, precision="fp32", compiled=False)
    crops = synthetic_crops(cfg, device)
    gflops_img = training_flops(flop_step, crops) / bs / 1e9
    compute = bs / by[best.name].step_s
    achieved = gflops_img * compute
    mfu = achieved / peaks[best.precision]
    print(
        f"compute only ({best.name}): {compute:.1f} img/s, {gflops_img:.4f} GFLOP/img, {achieved:.1f} GFLOP/s "
        f"= {mfu:.1%} of the {best.precision} matmul peak"
    )
    if args.profile:  # for bf16 also where it is emulated: which kernels run, where the casts are
        for precision in dict.fromkeys([best.precision, "bf16"]):
            print(
                f"{precision}: layer input -> output dtype and layout\n{layer_formats(cfg, device, precision, crops)}"
            )
            print(profile_table(swav_step_fn(cfg, device, precision=precision, compiled=False), crops))
        if not args.no_compile and device.type == "cpu":
            table = compiled_profile_table(cfg, device, best.precision, crops)
            print(f"{best.precision}, compiled:\n{table}")

    with tempfile.TemporaryDirectory() as tmp:
        e2e_cfg = load_config(
            PretrainConfig,
            [args.preset],
            [
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
                *args.overrides,
                f"run.precision={best.precision}",
                f"run.compile={str(best.compiled).lower()}",
            ],
        )
        e2e, data_wait = end_to_end_rate(e2e_cfg, args.warmup)
    print(
        f"end to end ({source}, {best.name}): {e2e:.1f} img/s = {e2e / compute:.0%} of compute only, "
        f"{data_wait:.1%} of it waiting for data"
    )
    print(
        f"preset={args.preset} arch={cfg.model.arch} batch={bs} device={device} threads={torch.get_num_threads()}"
    )
    choosing = " ".join(
        f"choosing_s_{m:g}m={d.autotune_s:.1f} choosing_share_{m:g}m={d.autotune_s / (m * 60):.4f}"
        for m, d in decisions.items()
    )
    print(
        f"precision={best.precision} compile={'on' if best.compiled else 'off'} imgs_per_s={e2e:.1f} "
        f"data_wait_share={data_wait:.3f} "
        f"compute_imgs_per_s={compute:.1f} bf16_speedup={bf16_speedup:.3f} "
        f"probe_bf16_speedup={probe_bf16_speedup:.3f} compile_speedup={compile_speedup:.3f} "
        f"compile_s={compile_s:.1f} gflops_per_img={gflops_img:.4f} mfu={mfu:.3f} peak_fp32={peaks['fp32']:.1f} "
        f"peak_bf16={peaks['bf16']:.1f} {choosing} bf16={support} bf16_flag={flag} cores={cores} "
        f"cpu={hardware.replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
