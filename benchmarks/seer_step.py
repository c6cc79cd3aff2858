"""One real SwAV training step of SEER's RegNetY-256GF + SEER head, fully sharded (FSDP2) over 2 CPU processes.

The model is the ``seer-rg256gf`` preset's (1.27B-parameter trunk, 10444-8192-8192-256 head, 16,000 prototypes),
built on the meta device and sharded there, so that each process only ever allocates its half: ``to_empty`` then
gives it uninitialised shards, filled with a He-normal draw per shard (timm's own initialisation would need the
whole tensors; the step costs the same). The step is the training loop's: multi-crop forward with activation
checkpointing per stage, Sinkhorn codes over the global batch (10 iterations), swapped prediction, backward with
FSDP's reduce-scatter, LARS. Crops are small (default 2x64 + 2x32, 2 images per process) to fit 2 CPU cores.

    python benchmarks/seer_step.py                       # RegNetY-256GF, falls back to smaller sizes if needed
    python benchmarks/seer_step.py --arch regnety_32gf --steps 3

Before launching, the memory a process needs is estimated (float32 shards of weights, gradients and LARS
momentum, plus ~4 copies of the largest unit gathered whole, plus ~2.5 GiB of runtime; calibrated below) and
compared with the machine's available memory; a size that cannot fit is skipped with the reason, and the next
smaller size is tried. On a 24 GiB machine RegNetY-256GF + head (1.43B parameters) does not fit 2 processes: its
fp32 weights, gradients and momentum alone are 17.2 GB, and each process adds ~2.5 GiB of runtime and ~3.8 GiB
while its 251M-parameter last-stage block is gathered; RegNetY-128GF (9.3 GiB per process) is the largest that does.
Last line: ``trunk_params=<n> peak_rss_gib_per_rank=<x> step_s=<x>`` (peak RSS from ``getrusage``, the largest
over the ranks; step_s: the last step, the first one also pays for first-touch allocations).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import _common  # noqa: F401  (the sibling module: puts tests/support on sys.path)
import torch
import torch.multiprocessing as mp
from support import free_port
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

FALLBACK = ("regnety_256gf", "regnety_128gf", "regnety_64gf", "regnety_32gf", "regnety_16gf")
GIB = 2**30


def _config(arch: str, sizes: tuple[int, ...] = ()):  # noqa: ANN202 - PretrainConfig
    """The seer-rg256gf preset with trunk ``arch`` and, when given, one crop of each of ``sizes`` instead of
    SEER's."""
    from openseer.config import load_config
    from openseer.train.config import PretrainConfig

    overrides = [f"model.arch={arch}"]
    if sizes:
        crops = ", ".join(f"{{size: {s}, count: 1, scale: [0.14, 1.0]}}" for s in sizes)
        overrides.append(f"crops=[{crops}]")
    return load_config(PretrainConfig, ["seer-rg256gf"], overrides)


# Calibrated on this machine: RegNetY-200MF peaks at 2.2 GiB per process (runtime alone), RegNetY-128GF at 9.3 GiB
# (estimate 9.1). A gathered unit costs about 4 copies: parameters, gradients, the flat reduce-scatter input and
# gloo's full-size fallback buffer (gloo has no native reduce-scatter).
RUNTIME_GIB = 2.5
UNIT_COPIES = 4


def estimate_gib_per_rank(arch: str, world: int) -> tuple[dict[str, float], int]:
    """(GiB one process needs, by item; trunk parameters), from the model built on the meta device."""
    from openseer.models import build_model
    from openseer.train.parallel import _inner, backbone_stages

    with torch.device("meta"):
        model = build_model(_config(arch).model)
    total = sum(p.numel() for p in model.parameters())
    units = [b for _, s in backbone_stages(model.backbone) for b in _inner(s).children()] + [
        model.head.projection
    ]
    largest = max(sum(p.numel() for p in u.parameters()) for u in units)
    trunk = sum(p.numel() for p in model.backbone.parameters())
    need = {
        "sharded weights+grads+momentum": total * 4 * 3 / world / GIB,
        "largest unit gathered (x4)": largest * 4 * UNIT_COPIES / GIB,
        "runtime": RUNTIME_GIB,
    }
    return need, trunk


def available_gib() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] / 2**20


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (a view: writing to it writes the parameter), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


@torch.no_grad()
def init_shards(model: nn.Module) -> None:
    """He-normal weights, zero biases, unit BatchNorm, each process drawing its own shards."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
            _local(m.weight).normal_(0.0, (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                _local(m.bias).zero_()
        elif isinstance(m, _BatchNorm):
            _local(m.weight).fill_(1.0)
            _local(m.bias).zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.num_batches_tracked.zero_()


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, out: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    from openseer import distributed
    from openseer.models import build_model
    from openseer.train.config import ParallelConfig
    from openseer.train.parallel import parallelize
    from openseer.train.step import learning_rates, step_parts, train_step

    cpu = torch.device("cpu")
    distributed.init_from_env(cpu, timeout_s=1800)
    sizes = tuple(int(s) for s in args.crops.split(","))
    cfg = _config(args.arch, sizes)
    with torch.device("meta"):
        model = build_model(cfg.model)
    parallelize(model, ParallelConfig(strategy="fsdp", activation_checkpointing=True), cpu, args.precision)
    model.to_empty(device=cpu)
    torch.manual_seed(rank)
    init_shards(model)
    # the loop's step (openseer.train.step): its optimiser, loss and Sinkhorn settings, at the peak learning rate
    parts = step_parts(cfg, model, model, args.precision, cpu)
    _, peak_lr, _ = learning_rates(cfg.optim, world)
    crops = [torch.randn(args.batch, 3, s, s) for s in sizes]
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        loss = train_step(parts, crops, step, peak_lr).loss
        times.append(time.perf_counter() - start)
        if rank == 0:
            print(f"step {len(times)}: {times[-1]:.1f} s, loss {float(loss):.3f}", flush=True)
    peak = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, times[-1]])
    distributed.all_reduce_max(peak)  # the worst rank
    if rank == 0:
        out.update(peak_rss_gib=float(peak[0]), step_s=float(peak[1]))
    distributed.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="regnety_256gf", help="first size to try (default: regnety_256gf)")
    parser.add_argument("--world", type=int, default=2, help="processes (default: 2)")
    parser.add_argument("--batch", type=int, default=2, help="images per process (default: 2)")
    parser.add_argument("--crops", default="64,64,32,32", help="crop sizes (default: 64,64,32,32)")
    parser.add_argument("--steps", type=int, default=2, help="steps; the last is timed (default: 2)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    sizes = FALLBACK[FALLBACK.index(args.arch) :] if args.arch in FALLBACK else (args.arch,)
    for arch in sizes:
        need, trunk = estimate_gib_per_rank(arch, args.world)
        per_rank, free = sum(need.values()), available_gib()
        parts = ", ".join(f"{k} {v:.1f}" for k, v in need.items())
        print(f"{arch}: {trunk / 1e9:.3f}B trunk parameters; per process ~{per_rank:.1f} GiB ({parts})")
        if per_rank * args.world > free:
            print(f"{arch} does not fit: {args.world} x {per_rank:.1f} GiB > {free:.1f} GiB available")
            continue
        args.arch = arch
        out = mp.Manager().dict()
        ctx = mp.start_processes(
            rank_main,
            (args.world, free_port(), args, out),
            nprocs=args.world,
            join=False,
            start_method="spawn",
        )
        try:
            while not ctx.join():
                pass
        except mp.ProcessExitedException as err:
            print(f"{arch}: a process died ({err}); probably out of memory, trying the next size", flush=True)
            continue
        print(
            f"trunk_params={trunk} peak_rss_gib_per_rank={out['peak_rss_gib']:.2f} step_s={out['step_s']:.1f}"
        )
        return
    sys.exit("no RegNetY size fits this machine")


if __name__ == "__main__":
    main()
