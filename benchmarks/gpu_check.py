"""One check of a lent CUDA GPU, in well under 8 minutes: what the large-scale recipes need, measured once.

Sections, in order (each one timed; one that fails is reported and the others still run; one that would not
finish before the deadline is skipped and says so):

1. ``peak``: the GPU's name and its bf16 matrix-product rate (median of timed 8192^3 products), the ceiling of
   the MFU figures below.
2. ``rg8`` and ``rg32``: the SwAV training step (``_common.swav_step_fn``: the loop's step, LARS, every
   tensor adapted) of RegNetY-8GF and RegNetY-32GF with SEER's head (-8192-8192-256, 16,000 prototypes, 10
   Sinkhorn iterations) on SEER's crops, 2x224 + 4x96, a small batch per GPU (``--batch``, default 16), bf16
   autocast: images/s, training FLOPs per image (``FlopCounterMode``, forward + backward) and MFU.
3. ``fsdp``: the same RegNetY-8GF step under FSDP2 in one process (a process group of one): built on the meta
   device and materialised shard by shard (``build_for_strategy``), bf16 mixed precision, activation
   checkpointing per stage; also checks that the prototypes are gathered in float32 and the scores are float32.
4. ``compile``: the RegNetY-8GF step with ``torch.compile`` of the model (``run.compile``): compile time (first
   step) and images/s after it.
5. ``rehearsal``: the real pretraining loop (``openseer.train.pretrain``) for 200 steps of the ``seer-rg256gf``
   preset with only its sizes scaled down (``tests/support/rehearsal.py``: RegNetY-200MF, 2x32 + 4x14
   crops) on the GPU (built-in data, bf16): steps done, final loss, images/s.

Without a CUDA GPU it prints one explanatory line and a last line ``gpu=none``, and exits 0, so that CI and
laptops can run it. ``--cpu-smoke`` runs every section but compile on the CPU at toy sizes (tests use it).
Exit status: 0 when every section ran or was skipped for time, 1 when one failed.

    bash benchmarks/gpu_check.sh
    python benchmarks/gpu_check.py --batch 32

Last line: ``gpu=<name> bf16_peak_tflops=<x> rg8_img_s=<x> rg8_mfu=<x> rg32_img_s=<x> rg32_mfu=<x>
fsdp_img_s=<x> compile_s=<x> compile_img_s=<x> rehearsal_steps=<n> rehearsal_loss=<x> rehearsal_img_s=<x>
failed=<n>`` (a section that did not run gives ``-``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _common, also when imported by tests

PRESET = "seer-rg256gf"  # the recipe the rehearsal section runs, scaled down

KEYS = (
    "gpu",
    "bf16_peak_tflops",
    "rg8_img_s",
    "rg8_mfu",
    "rg32_img_s",
    "rg32_mfu",
    "fsdp_img_s",
    "compile_s",
    "compile_img_s",
    "rehearsal_steps",
    "rehearsal_loss",
    "rehearsal_img_s",
)


class Check:
    """Runs the sections against one deadline and collects their figures."""

    def __init__(self, deadline_s: float) -> None:
        self.start = time.perf_counter()
        self.deadline_s = deadline_s
        self.values: dict[str, object] = {}
        self.failed: list[str] = []

    def left(self) -> float:
        return self.deadline_s - (time.perf_counter() - self.start)

    def run(self, name: str, needs_s: float, fn: Callable[[], None]) -> None:
        if self.left() < needs_s:
            print(f"[{name}] skipped: {self.left():.0f} s left, it needs about {needs_s:.0f} s", flush=True)
            return
        began = time.perf_counter()
        try:
            fn()
        except Exception:  # a section's failure is reported, and the next section still runs
            self.failed.append(name)
            print(f"[{name}] FAILED:\n{traceback.format_exc(limit=6)}", flush=True)
        print(f"[{name}] {time.perf_counter() - began:.1f} s", flush=True)

    def last_line(self) -> str:
        def show(v: object) -> str:
            if isinstance(v, float):
                return f"{v:.4g}"
            return str(v).replace(" ", "_")

        parts = [f"{k}={show(self.values.get(k, '-'))}" for k in KEYS]
        return " ".join([*parts, f"failed={len(self.failed)}"])


def _config(preset: str, overrides: list[str]):  # noqa: ANN202 - PretrainConfig
    from openseer.config import load_config
    from openseer.train.config import PretrainConfig

    return load_config(PretrainConfig, [preset], overrides)


def _seer_step_config(  # noqa: ANN202 - PretrainConfig
    arch: str, batch: int, device: torch.device, smoke: bool, extra: tuple[str, ...] = ()
):
    """SEER's recipe (seer-rg256gf preset: head, prototypes, Sinkhorn, crops) on a smaller trunk, one GPU."""
    overrides = [
        f"model.arch={arch}",
        f"optim.batch_size={batch}",
        f"run.device={device.type}",
        "run.precision=bf16",
        "parallel.sync_bn=false",  # one process: nothing to synchronise
        "parallel.activation_checkpointing=false",
        *extra,
    ]
    if smoke:  # toy sizes for the CPU
        overrides += [
            "crops=[{size: 32, count: 2, scale: [0.14, 1.0]}, {size: 16, count: 2, scale: [0.05, 0.14]}]",
            "model.head_hidden=[64, 64]",
            "model.prototypes=50",
            "model.stem=small",
        ]
    return _config("seer-rg256gf", overrides)


def _time_step(cfg, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:  # noqa: ANN001
    """(images/s, training GFLOP per image) of the loop's step on ready-made crops."""
    from _common import images_per_second, swav_step_fn, synthetic_crops, training_flops

    step = swav_step_fn(cfg, device)
    crops = synthetic_crops(cfg, device)
    rate = images_per_second(lambda: step(crops), steps, warmup, device)
    gflop_per_img = training_flops(step, crops) / cfg.optim.batch_size / 1e9
    return rate, gflop_per_img


def section_peak(check: Check, device: torch.device, smoke: bool) -> None:
    from _common import matmul_peak_gflops

    peak = matmul_peak_gflops(device, torch.bfloat16, 512 if smoke else 8192, repeats=5 if smoke else 10)
    check.values["bf16_peak_tflops"] = peak / 1e3
    print(f"[peak] bf16 matrix products: {peak / 1e3:.1f} TFLOP/s", flush=True)


def section_step(check: Check, key: str, arch: str, device: torch.device, args: argparse.Namespace) -> None:
    cfg = _seer_step_config(arch, args.batch, device, args.cpu_smoke)
    rate, gflop = _time_step(cfg, device, args.steps, args.warmup)
    peak = check.values.get("bf16_peak_tflops")
    mfu = gflop * rate / (peak * 1e3) if isinstance(peak, float) else math.nan
    check.values[f"{key}_img_s"], check.values[f"{key}_mfu"] = rate, mfu
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    crops = " + ".join(f"{c.count}x{c.size}" for c in cfg.crops)
    print(
        f"[{key}] {arch}, {crops}, batch {args.batch}, bf16: {rate:.1f} img/s, {gflop:.1f} GFLOP/img, "
        f"{gflop * rate / 1e3:.1f} TFLOP/s, MFU {mfu:.3f}, peak memory {memory:.1f} GiB",
        flush=True,
    )


@contextlib.contextmanager
def _process_group_of_one(device: torch.device):  # noqa: ANN202 - a context manager
    """A process group of one process (nccl on CUDA, gloo otherwise), as torchrun would create it."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, **kwargs)
    try:
        yield
    finally:
        dist.destroy_process_group()


def section_fsdp(check: Check, device: torch.device, args: argparse.Namespace) -> None:
    from _common import images_per_second, synthetic_crops

    from openseer.train.parallel import build_for_strategy, parallelize
    from openseer.train.step import learning_rates, step_parts, train_step

    arch = "regnety_200mf" if args.cpu_smoke else "regnety_8gf"
    extra = ("parallel.strategy=fsdp", "parallel.activation_checkpointing=true")  # after the defaults: wins
    cfg = _seer_step_config(arch, args.batch, device, args.cpu_smoke, extra)
    with _process_group_of_one(device):
        torch.manual_seed(0)
        model = build_for_strategy(cfg, device)  # meta -> sharded -> materialised shard by shard
        forward = parallelize(model, cfg.parallel, device, cfg.run.precision)
        seen: dict[str, torch.dtype] = {}

        def record_prototypes(module: torch.nn.Module, inputs: tuple) -> None:
            seen.setdefault("prototypes", module.weight.dtype)

        def record_scores(module: torch.nn.Module, inputs: tuple, out: tuple) -> None:
            seen.setdefault("scores", out[1].dtype)

        model.head.prototypes.register_forward_pre_hook(record_prototypes)
        model.head.register_forward_hook(record_scores)
        # the loop's step (openseer.train.step) at the peak learning rate, bf16 autocast (run.precision)
        parts = step_parts(cfg, model, forward, cfg.run.precision, device)
        _, peak_lr, _ = learning_rates(cfg.optim, 1)
        crops = synthetic_crops(cfg, device)
        losses: list[float] = []

        def step() -> int:
            losses.append(float(train_step(parts, crops, len(losses), peak_lr).loss))
            return cfg.optim.batch_size

        rate = images_per_second(step, args.steps, args.warmup, device)
    check.values["fsdp_img_s"] = rate
    print(
        f"[fsdp] {arch} FSDP2 (1 process), bf16 mixed precision, activation checkpointing: {rate:.1f} img/s; "
        f"prototypes gathered in {seen.get('prototypes')}, scores {seen.get('scores')}, "
        f"last loss {losses[-1]:.3f}",
        flush=True,
    )
    if seen.get("prototypes") != torch.float32 or seen.get("scores") != torch.float32:
        raise AssertionError(f"prototypes or scores not float32 under FSDP bf16: {seen}")
    if not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"non-finite loss under FSDP: {losses}")


def section_compile(check: Check, device: torch.device, args: argparse.Namespace) -> None:
    from _common import images_per_second, swav_step_fn, synthetic_crops

    cfg = _seer_step_config("regnety_8gf", args.batch, device, args.cpu_smoke, ("run.compile=true",))
    step = swav_step_fn(cfg, device)
    crops = synthetic_crops(cfg, device)
    began = time.perf_counter()
    step(crops)  # compiles the forward and backward graphs
    step(crops)  # and anything a second call recompiles
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    compile_s = time.perf_counter() - began
    rate = images_per_second(lambda: step(crops), args.steps, args.warmup, device)
    check.values["compile_s"], check.values["compile_img_s"] = compile_s, rate
    print(f"[compile] regnety_8gf, torch.compile: first two steps {compile_s:.1f} s, then {rate:.1f} img/s")


def section_rehearsal(check: Check, device: torch.device, args: argparse.Namespace) -> None:
    from support.rehearsal import rehearsal_overrides

    from openseer.data.builtin import load_builtin
    from openseer.train.pretrain import pretrain

    batch = 32 if args.cpu_smoke else 64
    n_train = len(load_builtin("train").images)  # Debian's 60,000 or the shipped slice
    # SEER's recipe with only its sizes scaled down (tests/support/rehearsal.py), in bf16, on the built-in data
    scaled = rehearsal_overrides(PRESET, args.rehearsal_steps, 1, n_train, batch_size=batch, bf16=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("OPENSEER_CACHE", str(Path(tmp) / "cache"))
        overrides = [f"{key}={json.dumps(value)}" for key, value in scaled.items()] + [
            "data.source=builtin",
            f"run.device={device.type}",
            f"run.out_dir={Path(tmp) / 'run'}",
            "run.progress=false",
            "run.tensorboard=false",
            "run.log_every=50",
            "run.checkpoint_every=100000",
        ]
        result = pretrain(_config(PRESET, overrides))
    rate = result.images_seen / max(result.train_seconds, 1e-9)
    check.values.update(rehearsal_steps=result.steps, rehearsal_loss=result.final_loss, rehearsal_img_s=rate)
    print(
        f"[rehearsal] {PRESET} scaled down on {device.type}, bf16: {result.steps} steps, final loss "
        f"{result.final_loss:.3f}, {rate:.0f} img/s, {result.nonfinite_steps} non-finite steps",
        flush=True,
    )
    if result.steps != args.rehearsal_steps or not math.isfinite(result.final_loss):
        raise AssertionError(f"rehearsal ran {result.steps} steps, final loss {result.final_loss}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch", type=int, default=16, help="images per GPU in the timed steps (default 16)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each (default 5)")
    parser.add_argument("--rehearsal-steps", type=int, default=200)
    parser.add_argument(
        "--deadline-s", type=float, default=450.0, help="skip what would end later (default 450)"
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="every section but compile, toy sizes, CPU")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.batch, args.steps, args.warmup = min(args.batch, 4), min(args.steps, 2), min(args.warmup, 1)
        args.rehearsal_steps = min(args.rehearsal_steps, 3)
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch; nothing to check here (run it on a GPU machine)")
        print("gpu=none")
        return 0
    device = torch.device("cuda", 0) if not args.cpu_smoke else torch.device("cpu")
    check = Check(args.deadline_s)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        check.values["gpu"] = props.name
        print(
            f"gpu_check: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
            f"compute capability {props.major}.{props.minor}; torch {torch.__version__}, CUDA {torch.version.cuda}",
            flush=True,
        )
        torch.backends.cudnn.benchmark = True
    else:
        check.values["gpu"] = "cpu-smoke"
        print(
            f"gpu_check --cpu-smoke: torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True
        )
    small, big = ("regnety_200mf", "regnety_400mf") if args.cpu_smoke else ("regnety_8gf", "regnety_32gf")
    check.run("peak", 10, lambda: section_peak(check, device, args.cpu_smoke))
    check.run("rg8", 30, lambda: section_step(check, "rg8", small, device, args))
    check.run("rg32", 45, lambda: section_step(check, "rg32", big, device, args))
    check.run("fsdp", 40, lambda: section_fsdp(check, device, args))
    if args.cpu_smoke:
        print("[compile] skipped: --cpu-smoke (compiling for the CPU takes minutes)")
    else:
        check.run("compile", 150, lambda: section_compile(check, device, args))
    check.run("rehearsal", 40, lambda: section_rehearsal(check, device, args))
    print(f"gpu_check: {time.perf_counter() - check.start:.0f} s in all", flush=True)
    print(check.last_line(), flush=True)
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
