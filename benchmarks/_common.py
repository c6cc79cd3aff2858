"""What the benchmark scripts share: the CIFAR-10 folder, a SwAV training step on ready-made crops, timing, and
the end-of-pretraining kNN score for networks that are not openseer's."""

from __future__ import annotations

import itertools
import statistics
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

from openseer.data.cache import default_cache_dir
from openseer.data.labelled import EvalData
from openseer.data.preprocess import Preprocess
from openseer.hardware import hardware_name, synchronize, usable_cores
from openseer.models import SwAVModel
from openseer.train.compile_cache import persist_compile_caches
from openseer.train.config import PretrainConfig
from openseer.train.parallel import build_for_strategy
from openseer.train.step import learning_rates, step_parts, train_step

REPO = Path(__file__).resolve().parents[1]
# the generators the benchmarks share with the test suite (tests/support: tiny configs, the bad-input corpus,
# the rehearsal's scaling, multi-process environments); importing this module makes them importable
sys.path.insert(0, str(REPO / "tests"))
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


def machine(device: torch.device) -> tuple[str, int]:
    """(processor or GPU model, CPU cores this process may use), to print with every figure."""
    return hardware_name(device), usable_cores()


def matmul_peak_gflops(
    device: torch.device, dtype: torch.dtype, n: int, repeats: int = 7, max_seconds: float = 1.0
) -> float:
    """This machine's matrix-product peak: the median GFLOP/s of ``repeats`` timed n x n products.

    The side starts at 256 and doubles up to ``n`` while the next product would take under ``max_seconds``, so
    a dtype the hardware only emulates (bf16 without avx512_bf16/AMX: ~0.4 GFLOP/s on a Zen 3) does not take
    minutes.
    """
    side = min(256, n)
    while True:
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        torch.mm(a, b)
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if side >= n or 8 * (time.perf_counter() - start) > max_seconds:
            break
        side *= 2
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        rates.append(2 * side**3 / (time.perf_counter() - start) / 1e9)
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


def swav_step_fn(
    cfg: PretrainConfig,
    device: torch.device,
    precision: str | None = None,
    compiled: bool | None = None,
    model: SwAVModel | None = None,
) -> Callable[[list[torch.Tensor]], int]:
    """The pretraining loop's own step (``openseer.train.step.train_step``) on ready-made crops, as the run's
    first steps run it (steps counted from 0, prototype freezing and loss scaling as configured), at the peak
    learning rate, without the queue: prototypes re-normalised, multi-crop forward under autocast, fp32 Sinkhorn
    codes and swapped-prediction loss, backward, non-finite check, LARS/SGD step. Returns the batch size.

    ``precision``/``compiled``: the path to time; None takes the config's (an 'auto' one: fp32, eager).
    ``model``: the one to train (with hooks, say); None: the run's (``build_for_strategy``) on ``device``.
    """
    if precision is None:
        precision = cfg.run.precision if cfg.run.precision != "auto" else "fp32"
    if compiled is None:
        compiled = cfg.run.compile is True
    if model is None:
        model = build_for_strategy(cfg, device)
    if compiled:
        persist_compile_caches()
    forward = torch.compile(model) if compiled else model
    parts = step_parts(cfg, model, forward, precision, device)
    _, peak_lr, _ = learning_rates(cfg.optim, 1)
    steps = itertools.count()

    def step(crops: list[torch.Tensor]) -> int:
        train_step(parts, crops, next(steps), peak_lr)
        return crops[0].shape[0]

    return step


def conv_backward_flops(*args: object, **kwargs: object) -> int:
    """FLOPs of ``aten.convolution_backward``: torch's formula (``flop_counter.conv_backward_flop``), with the
    weight gradient of a grouped convolution divided by its groups.

    torch counts that gradient as a convolution of the input with the output gradient over all input channels,
    which for ``groups`` > 1 is ``groups`` times the work done (each output channel sees ``in / groups`` input
    channels, as the forward formula counts): a RegNet's 3x3 convolutions, with groups of 8 to 64 channels,
    came out at many times their forward cost. The input gradient's count is right as it is.
    """
    names = ("bias", "stride", "padding", "dilation", "transposed", "output_padding", "groups", "output_mask")
    grad_out, x, w, *rest = args
    options = dict(zip(names, rest, strict=False)) | kwargs
    out_shape = options.pop("out_shape")
    mask = options.pop("output_mask")

    def count(input_grad: bool, weight_grad: bool) -> int:
        # torch's formula as registered takes tensors or shapes, and the output as out_val
        return conv_backward_flop(
            grad_out,
            x,
            w,
            *(options[n] for n in names[:-1]),
            [input_grad, weight_grad, False],
            out_val=out_shape,
        )

    flops = count(True, False) if mask[0] else 0
    if mask[1]:
        flops += count(False, True) // int(options["groups"])
    return flops


def training_flops(step: Callable[[list[torch.Tensor]], object], crops: list[torch.Tensor]) -> float:
    """FLOPs of one training step (forward and backward; the optimiser's element-wise work is not counted), with
    grouped convolutions' weight gradients counted as the work they are (:func:`conv_backward_flops`)."""
    fixed = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=fixed) as counter:
        step(crops)
    return float(counter.get_total_flops())


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


def knn_score(
    backbone: torch.nn.Module,
    bank: EvalData,
    test: EvalData,
    cfg: PretrainConfig,
    device: str = "auto",
    preprocess: Preprocess | None = None,
) -> tuple[float, float]:
    """(top-1, top-5) of any backbone (another library's network) scored as the end of pretraining scores a run
    (:func:`openseer.eval.pretraining.knn_on_split` with ``cfg``'s settings); ``preprocess`` defaults to
    ``cfg``'s. Features are computed afresh, never read from the feature cache."""
    from openseer.eval.embed import Embedder, FeatureConfig
    from openseer.eval.pretraining import knn_on_split

    features = FeatureConfig(device=device, workers=cfg.data.workers, progress=False, cache=False)
    embedder = Embedder(backbone, preprocess or cfg.preprocess(), features, cfg.model.channels_last)
    *_, top1, top5 = knn_on_split(embedder, bank, test, cfg, cfg.run.knn_bn_recalibrate)
    return top1, top5
