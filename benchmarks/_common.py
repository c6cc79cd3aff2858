"""What the benchmark scripts share: the CIFAR-10 folder, a SwAV training step on ready-made crops, timing."""

from __future__ import annotations

import statistics
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from openseer.data.cache import default_cache_dir
from openseer.models import build_model
from openseer.optim.lars import LARS, param_groups
from openseer.train.config import PretrainConfig
from openseer.train.pretrain import objective

REPO = Path(__file__).resolve().parents[1]
CIFAR_TAR = REPO.parent / "shared" / "data" / "cifar10-train.tar.gz"


def cifar10_folder(tar_path: Path = CIFAR_TAR) -> Path:
    """Unpack the CIFAR-10 JPEG folder once into the openseer cache and return it."""
    target = default_cache_dir() / "cifar10-train"
    if (target / "truck").is_dir():
        return target
    if not tar_path.exists():
        sys.exit(f"CIFAR-10 archive not found at {tar_path}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(target.parent, filter="data")
    return target


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 7) -> float:
    """This machine's matrix-product peak: the median GFLOP/s of ``repeats`` timed n x n products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def synthetic_crops(cfg: PretrainConfig, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """Normalised crops of the config's sizes, as the input pipeline hands them to the step."""
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    crops = []
    for spec in cfg.crops:
        for _ in range(spec.count):
            x = torch.randn(cfg.optim.batch_size, 3, spec.size, spec.size, generator=gen)
            crops.append(x.to(device, memory_format=fmt))
    return crops


def swav_step_fn(cfg: PretrainConfig, device: torch.device) -> Callable[[list[torch.Tensor]], float]:
    """One SwAV training step as the pretraining loop runs it (no queue, no logging, no non-finite check):
    prototypes re-normalised, multi-crop forward, the loop's own ``objective`` (Sinkhorn codes,
    swapped-prediction loss), backward, LARS/SGD step."""
    model = build_model(cfg.model).to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if cfg.run.compile else model
    groups = param_groups(model, cfg.optim.weight_decay)
    lr = cfg.optim.base_lr * cfg.optim.batch_size / 256
    if cfg.optim.name == "lars":
        optimizer = LARS(groups, momentum=cfg.optim.momentum, trust_coefficient=cfg.optim.trust_coefficient)
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum)
    for group in optimizer.param_groups:
        group["lr"] = lr
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.run.precision)

    def step(crops: list[torch.Tensor]) -> float:
        bs = crops[0].shape[0]
        model.head.normalize_prototypes()
        with torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None):
            z, scores = forward(crops)
        loss, _ = objective(cfg, model, z, scores)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return bs

    return step


def images_per_second(step: Callable[[], int], steps: int, warmup: int, device: torch.device) -> float:
    """Images/s over ``steps`` calls of ``step`` (which returns its batch size) after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(device)
    done, start = 0, time.perf_counter()
    for _ in range(steps):
        done += step()
    synchronize(device)
    return done / (time.perf_counter() - start)
