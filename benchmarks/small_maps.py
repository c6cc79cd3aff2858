"""The small-map kernels (``openseer.models.small_maps``) against oneDNN's convolution, on this CPU.

1. Per layer: every distinct convolution of the preset's trunk at the input shape the step gives it (crops of
   the preset, batch as the step: all crops of one size together), forward and backward, fp32 and bf16, with
   the plain ``nn.Conv2d`` and with the layer the kernels give it (a 1x1 as a matrix product; a narrow grouped
   one in fp32 under bf16 autocast). Fastest of ``--repeats`` calls, in ms, and the layer's count in the trunk.
2. The whole training step (``_common.swav_step_fn``: multi-crop forward, fp32 Sinkhorn and loss, backward,
   optimiser), fp32 and bf16 autocast, with ``model.small_map_kernels`` off and on; the four alternate for
   ``--rounds`` rounds and the fastest step of each is kept (this machine's speed moves between seconds).

    python benchmarks/small_maps.py                       # cpu preset
    python benchmarks/small_maps.py --rounds 5 model.arch=regnety_400mf

Last line: ``step_fp32_off=<img/s> step_fp32_on=<x> step_bf16_off=<x> step_bf16_on=<x> bf16_on_vs_fp32_off=<x>
layers_ms_fp32_off=<x> layers_ms_fp32_on=<x> layers_ms_bf16_off=<x> layers_ms_bf16_on=<x> peak_fp32=<GFLOP/s>
peak_bf16=<x> cpu=<model>``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import replace

import torch
from _common import machine, matmul_peak_gflops, swav_step_fn, synthetic_crops  # sibling module
from torch import nn

from openseer.config import load_config
from openseer.hardware import device_native_bf16
from openseer.models import build_model
from openseer.models.small_maps import use_small_map_kernels_
from openseer.train.config import PretrainConfig


def fastest(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def layer_shapes(cfg: PretrainConfig) -> Counter:
    """(in, out, kernel, stride, groups, input shape) of every convolution the step runs, with counts."""
    model = build_model(replace(cfg.model, small_map_kernels=False)).to(memory_format=torch.channels_last)
    seen: Counter = Counter()

    def hook(conv: nn.Conv2d, args: tuple, _out: torch.Tensor) -> None:
        k, s = conv.kernel_size[0], conv.stride[0]
        seen[(conv.in_channels, conv.out_channels, k, s, conv.groups, tuple(args[0].shape))] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(synthetic_crops(cfg, torch.device("cpu")))
    for h in handles:
        h.remove()
    return seen


def layer_ms(key: tuple, precision: str, kernels: bool, repeats: int) -> float:
    cin, cout, k, s, groups, shape = key
    conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False).to(memory_format=torch.channels_last)
    if kernels:
        use_small_map_kernels_(conv)
    x = torch.randn(shape).to(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        y = conv(x)
    grad = torch.randn_like(y)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = conv(x)
        out.backward(grad)

    return 1e3 * fastest(step, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--repeats", type=int, default=8, help="timed calls per layer and per step round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the four whole steps")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    cfg = load_config(PretrainConfig, [args.preset], args.overrides)
    cpu, cores = machine(device)
    peak32 = matmul_peak_gflops(device, torch.float32, 2048)
    peak16 = matmul_peak_gflops(device, torch.bfloat16, 2048)
    print(
        f"cpu={cpu} cores={cores} threads={torch.get_num_threads()} native_bf16={device_native_bf16(device)}"
    )
    print(f"matmul peak: fp32 {peak32:.1f} GFLOP/s, bf16 {peak16:.1f} GFLOP/s")
    paths = [(p, k) for p in ("fp32", "bf16") for k in (False, True)]
    names = {path: f"{path[0]}_{'on' if path[1] else 'off'}" for path in paths}

    totals = dict.fromkeys(paths, 0.0)
    print("layer (in->out kxk/stride groups, input) x count: fwd+bwd ms  fp32 off / on | bf16 off / on")
    for key, count in layer_shapes(cfg).items():
        ms = {path: layer_ms(key, *path, args.repeats) for path in paths}
        for path in paths:
            totals[path] += count * ms[path]
        cin, cout, k, s, groups, shape = key
        print(
            f"  {cin}->{cout} {k}x{k}/{s} g{groups} {tuple(shape)} x{count}: "
            f"{ms['fp32', False]:.1f} / {ms['fp32', True]:.1f} | {ms['bf16', False]:.1f} / {ms['bf16', True]:.1f}"
        )
    print("all layers, ms: " + " ".join(f"{names[p]}={totals[p]:.0f}" for p in paths))

    crops = synthetic_crops(cfg, device)
    images = cfg.optim.batch_size
    steps = {
        path: swav_step_fn(
            replace(cfg, model=replace(cfg.model, small_map_kernels=path[1])), device, path[0], False
        )
        for path in paths
    }
    best = dict.fromkeys(paths, float("inf"))
    for round_ in range(args.rounds):
        for path in paths:
            best[path] = min(best[path], fastest(lambda step=steps[path]: step(crops), args.repeats))
        print(
            f"round {round_ + 1}: " + " ".join(f"{names[p]}={images / best[p]:.1f}" for p in paths) + " img/s"
        )
    rates = {path: images / best[path] for path in paths}
    print(
        " ".join(f"step_{names[p]}={rates[p]:.1f}" for p in paths)
        + f" bf16_on_vs_fp32_off={rates['bf16', True] / rates['fp32', False]:.3f} "
        + " ".join(f"layers_ms_{names[p]}={totals[p]:.1f}" for p in paths)
        + f" peak_fp32={peak32:.1f} peak_bf16={peak16:.1f} cpu={cpu.replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
