"""What the test suite and the benchmarks share: a pretraining small enough to finish in seconds on a CPU, a
tiny classifier config, BatchNorm randomisation, the environment of a local multi-process run, and the record of
one kind of weights file (:class:`WeightSource`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from openseer.data.multicrop import AugmentSpec, CropSpec
from openseer.data.preprocess import Resize

TINY_PRETRAIN: dict[str, object] = {
    "data.cache_size": 16,
    "data.holdout": 0.25,
    "data.workers": 0,
    "crops": "[{size: 16, count: 2, scale: [0.3, 1.0]}, {size: 8, count: 2, scale: [0.1, 0.3]}]",
    "model.arch": "regnety_200mf",
    "model.stem": "small",
    "model.head_hidden": "[32]",
    "model.out_dim": 16,
    "model.prototypes": 10,
    # timm's zero-initialised residual branches (every block starts as the identity): the few-step tests on
    # top of this run learn within their handful of steps; the presets keep the references' initialisation
    "model.zero_init_last_bn": True,
    "optim.batch_size": 8,
    "optim.epochs": 1,
    "optim.warmup_epochs": 0.5,
    "swav.freeze_prototypes_iters": 0,
    "swav.queue_length": 0,
    "run.device": "cpu",
    "run.progress": False,
    "run.tensorboard": False,
    "run.log_every": 1,
    "run.knn_k": 5,
}


# keeps evaluation commands quick in tests: no worker processes, no progress bars (config keys of every command
# that computes features: embed, knn, linear, lowshot, neighbors, clusters)
FAST_EVAL = ["features.workers=0", "features.progress=false"]


@dataclass(frozen=True)
class WeightSource:
    """One kind of weights file a command takes, as the tests build it (tests/conftest.py ``source_*``).

    ``path``: what a command is given; ``backbone``: the backbone tensors (timm names) it must yield, read without
    openseer's loader; ``has_head``: holds the SwAV projection and prototypes (``clusters`` needs them);
    ``classifier``: a file or folder of the same kind holding a classifier (``predict``), None where this kind
    never holds one; ``classes``: that classifier's class names.
    """

    kind: str
    path: Path
    backbone: dict[str, torch.Tensor]
    has_head: bool
    classifier: Path | None
    classes: list[str] | None


@contextlib.contextmanager
def cache_env(folder: Path) -> Iterator[None]:
    """OPENSEER_CACHE set to ``folder`` inside the block and put back after it (for fixtures wider than one
    test, which the per-test cache fixture does not cover)."""
    old = os.environ.get("OPENSEER_CACHE")
    os.environ["OPENSEER_CACHE"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OPENSEER_CACHE", None)
        else:
            os.environ["OPENSEER_CACHE"] = old


def make_image_folder(
    root: Path, classes: int = 3, per_class: int = 12, size: int = 20, formats: Sequence[str] = ("png",)
) -> Path:
    """Class-coloured noisy squares in an ImageFolder tree: class c is mostly channel c; image i of a class is
    saved in ``formats[i % len(formats)]`` (``("jpg", "png")`` mixes lossy and lossless files)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        base = torch.zeros(3, size, size)
        base[c % 3] = 0.8
        for i in range(per_class):
            img = (base + 0.3 * torch.rand(3, size, size, generator=gen)).clamp(0, 1)
            Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(
                root / f"class{c}" / f"{i}.{formats[i % len(formats)]}"
            )
    return root


# Index-coded images: flat colours whose red and green channels encode the image's index (uint8 tensors and PNG
# keep them exact), augmented with crops and flips only, so the index behind every crop reads back from its pixels.
INDEX_CROPS = [CropSpec(6, 2, (0.5, 1.0)), CropSpec(4, 1, (0.2, 0.5))]
INDEX_AUGMENT = AugmentSpec(
    color_p=0.0, grayscale_p=0.0, blur_p=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
)


def index_images(n: int, side: int = 8) -> torch.Tensor:
    """uint8 (n, 3, side, side): image i is the flat colour (i % 256, i // 256, 7)."""
    ids = torch.arange(n)
    rgb = torch.stack([ids % 256, ids // 256, torch.full_like(ids, 7)], dim=1).to(torch.uint8)
    return rgb[:, :, None, None].expand(n, 3, side, side).contiguous()


def crop_indices(crops: torch.Tensor) -> list[int]:
    """The image index behind each crop of a batch (B, 3, H, W) of index-coded images (see index_images)."""
    rgb = (crops.float() * 255).round().long()
    assert (rgb == rgb[:, :, :1, :1]).all(), "not flat crops of index-coded images"
    return (rgb[:, 0, 0, 0] + 256 * rgb[:, 1, 0, 0]).tolist()


def random_inputs(n: int = 1, size: int = 64, seed: int = 7) -> torch.Tensor:
    """Normalised-looking float inputs (n, 3, size, size) drawn from N(0, 1) with ``seed``."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same_features(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-3) -> None:
    """Outputs of one network computed by two module instances (or two processes): equal up to float32
    rounding, which oneDNN makes depend on the kernels it picks for the CPU at hand; so the tolerance is relative
    to the outputs' scale, never bit-exact. Weights are compared exactly elsewhere."""
    scale = float(expected.detach().abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


def _yaml(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tiny_overrides(source: str | Path, out: str | Path, **changes: object) -> list[str]:
    """``key=value`` overrides for a tiny pretraining of ``source`` into ``out``; ``changes`` name keys with
    ``__`` for the dots (``run__max_steps=2``) and replace or add to ``TINY_PRETRAIN``."""
    values = {"data.source": source, **TINY_PRETRAIN, "run.out_dir": out}
    values.update({key.replace("__", "."): value for key, value in changes.items()})
    return [f"{key}={_yaml(value)}" for key, value in values.items()]


def tiny_classifier_config():  # noqa: ANN201 - PretrainConfig, imported lazily
    """The pretraining config a tiny classifier checkpoint records (a RegNetY-200MF on 16-px crops)."""
    from openseer.config import from_dict
    from openseer.train.config import PretrainConfig

    return from_dict(
        PretrainConfig,
        {
            "model": {"arch": "regnety_200mf", "stem": "small", "head_hidden": [8], "prototypes": 4},
            "crops": [{"size": 16, "count": 2, "scale": [0.3, 1.0]}],
        },
    )


def tiny_classifier(
    classes: Sequence[str], resize: Resize = "center_crop", head_bn: bool = True, seed: int = 0
):  # noqa: ANN201 - openseer.eval.classifier.Classifier, imported lazily
    """A classifier of 16-px images (RegNetY-200MF, small stem, :func:`tiny_classifier_config`) drawn with
    ``seed``, its head's weights spread (std 0.5) so that the classes get distinct probabilities; eval mode."""
    from openseer.config import to_dict
    from openseer.eval.classifier import Classifier, build_head
    from openseer.models import build_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone("regnety_200mf", stem="small")
        head = build_head(backbone.num_features, len(classes), bn=head_bn)
        nn.init.normal_(head[1].weight, std=0.5)
    cfg = tiny_classifier_config()
    return Classifier(
        backbone, head, list(classes), cfg.model.network(), cfg.preprocess(resize), to_dict(cfg)
    ).eval()


def randomize_batchnorm(module: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics, affine terms and batch counters, as a trained network has, so that a
    misplaced buffer changes the outputs; returns ``module`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.num_batches_tracked.fill_(seed)
    return module.eval()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a local process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int | str, threads: int = 1) -> dict[str, str]:
    """This process's environment plus what torchrun would set for ``rank`` of ``world`` on one machine."""
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": str(threads),
    }


def run_ranks(script: str | Path, args: Sequence[str], world: int = 2, timeout: float = 300) -> list[str]:
    """``python script *args`` as ``world`` local processes with torchrun's variables (gloo's rendezvous on a
    free port); each one's output, once all have ended. A process that fails raises AssertionError with the end
    of its output."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env=rank_env(rank, world, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    logs = []
    for proc in procs:
        log, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, log[-3000:]
        logs.append(log)
    return logs


def vissl_file(
    path: Path,
    arch: str = "regnety_200mf",
    head: dict[str, torch.Tensor] | None = None,
    classifier: dict[str, torch.Tensor] | None = None,
    trunk: bool = True,
    seed: int = 0,
) -> Path:
    """A checkpoint laid out as VISSL writes SEER's (``openseer.weights.vissl.to_vissl_checkpoint``) of an
    ``arch`` trunk drawn with ``seed``, its BatchNorm statistics randomised, with an optional SwAV ``head`` or
    ``classifier`` (openseer's keys); ``trunk`` False leaves the trunk out (heads only)."""
    from openseer.models import build_backbone
    from openseer.weights.vissl import to_vissl_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = randomize_batchnorm(build_backbone(arch), seed).state_dict()
    state = to_vissl_checkpoint(backbone, head, classifier)
    if not trunk:
        state["classy_state_dict"]["base_model"]["model"]["trunk"] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
