"""openseer against lightly (the most used SSL library) on this machine, in two comparisons.

(a) Identical work, ``throughput_ratio``: the same backbone module (the cpu preset's RegNetY), the same crops,
    batch, prototypes, temperature, Sinkhorn settings and optimiser (openseer's LARS, so the optimiser is not
    what is compared); lightly's own per-image PIL transforms (``SwaVTransform``) in 2 DataLoader workers
    decoding the JPEG files, its projection head, prototypes and ``SwaVLoss``, against openseer's decoded
    uint8 cache, batched multi-crop, head and loss. The two alternate in rounds of ``--steps`` steps; the ratio
    is openseer's images/s over lightly's (medians of the rounds).
(b) Each library's recipe for a fixed CPU budget, ``knn_top1_*``: ``--minutes`` of pretraining on the
    CIFAR-10 folder of ``../shared/data`` with 10% of each class held out (seed 0, as ``pretrain_knn.py``),
    then weighted kNN top-1 on the held-out images with the same scorer for both (k=200, T=0.1, BatchNorm
    statistics re-estimated on un-augmented training images). lightly runs its published CIFAR-10 SwAV
    recipe: CIFAR ResNet-18 (``ResNetGenerator('resnet-18')``), 2x32 crops (min scale 0.14, colour strength
    0.5, no blur), ``SwaVProjectionHead(512, 512, 128)``, 512 prototypes, ``SwaVLoss()`` (temperature 0.1),
    Adam lr 1e-3 x batch/128, weight decay 1e-6, batch 128, cosine decay (here over the time budget).
    openseer runs its cpu preset (``pretrain_knn.py``); ``--openseer-run DIR`` reuses a finished run of
    ``pretrain_knn.py --data cifar10 --minutes M`` instead of training again, and ``--reuse-lightly`` takes
    lightly's figure from the record (``runs/vs-lightly/lightly.json``) its last run of this script wrote.

    pip install -e ".[bench]"          # lightly 1.6.0, a benchmark-only dependency
    python benchmarks/vs_lightly.py --minutes 20
    python benchmarks/vs_lightly.py --skip-knn                       # (a) only, ~3 minutes

Last line: ``throughput_ratio=<x> knn_top1_openseer=<x> knn_top1_lightly=<x>``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import PIL.Image
import torch
from _common import cifar10_folder, knn_score, swav_step_fn  # the sibling module (on sys.path when run)
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from openseer.api import pretrain  # trains, then the one end-of-run evaluation
from openseer.config import load_config
from openseer.models.backbone import build_backbone, feature_dim
from openseer.train.config import PretrainConfig
from openseer.train.data import PretrainData, TensorBatches, prepare_data
from openseer.train.step import build_optimizer, learning_rates

try:
    from lightly.loss import SwaVLoss
    from lightly.models import ResNetGenerator
    from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
    from lightly.transforms import SwaVTransform
except ImportError as err:  # a benchmark-only dependency
    raise SystemExit(f"{err}: pip install lightly==1.6.0 torch==2.14.1 torchvision==0.29.1") from err


class FilesWithTransform(Dataset):
    """Image files decoded with PIL and passed through a lightly transform, as lightly's datasets do."""

    def __init__(self, paths: list[Path], transform) -> None:  # noqa: ANN001 - any lightly transform
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        with PIL.Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


class LightlySwaV(nn.Module):
    """A backbone with lightly's SwAV head and prototypes, used as lightly's examples use them."""

    def __init__(
        self, backbone: nn.Module, dim: int, hidden: int, out: int, prototypes: int, frozen: int
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SwaVProjectionHead(dim, hidden, out)
        self.prototypes = SwaVPrototypes(out, prototypes, n_steps_frozen_prototypes=frozen)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        z = F.normalize(self.projection_head(self.backbone(x).flatten(start_dim=1)), dim=1, p=2)
        return self.prototypes(z, step)


def lightly_step_fn(model: LightlySwaV, criterion: SwaVLoss, optimizer: torch.optim.Optimizer, n_global: int):
    state = {"step": 0}

    def step(crops: list[torch.Tensor]) -> int:
        model.prototypes.normalize()
        outputs = [model(x, state["step"]) for x in crops]
        loss = criterion(outputs[:n_global], outputs[n_global:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        return crops[0].shape[0]

    return step


def lightly_loader(paths: list[Path], transform, batch: int, workers: int) -> DataLoader:  # noqa: ANN001
    return DataLoader(
        FilesWithTransform(paths, transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def endless(loader: DataLoader):
    while True:
        yield from loader


def timed(step, batches, steps: int) -> float:  # noqa: ANN001
    """Images/s of ``steps`` steps fed from ``batches``, after one untimed step."""
    step(next(batches))
    done, start = 0, time.perf_counter()
    for crops in itertools.islice(batches, steps):
        done += step(crops)
    return done / (time.perf_counter() - start)


def identical_work(
    cfg: PretrainConfig, data: PretrainData, paths: list[Path], steps: int, rounds: int
) -> float:
    """(a): openseer img/s / lightly img/s on the same model, crops, batch and optimiser."""
    device = torch.device("cpu")
    sizes = [c.size for c in cfg.crops]
    assert len(sizes) in (1, 2), "lightly's SwaVTransform takes global crops and at most one local size"
    transform = SwaVTransform(
        crop_sizes=tuple(sizes),
        crop_counts=tuple(c.count for c in cfg.crops),
        crop_min_scales=tuple(c.scale[0] for c in cfg.crops),
        crop_max_scales=tuple(c.scale[1] for c in cfg.crops),
        hf_prob=cfg.augment.flip_p,
        cj_prob=cfg.augment.color_p,
        cj_strength=cfg.augment.color_strength,
        random_gray_scale=cfg.augment.grayscale_p,
        gaussian_blur=cfg.augment.blur_p,
        normalize={"mean": list(cfg.augment.mean), "std": list(cfg.augment.std)},
    )
    backbone = build_backbone(cfg.model.arch, stem=cfg.model.stem)
    hidden = cfg.model.head_hidden[0] if cfg.model.head_hidden else feature_dim(backbone)
    model = LightlySwaV(
        backbone,
        feature_dim(backbone),
        hidden,
        cfg.model.out_dim,
        cfg.model.prototypes,
        cfg.swav.freeze_prototypes_iters,
    )
    optimizer = build_optimizer(
        cfg, model
    )  # the one openseer's side steps with (swav_step_fn), at its peak rate
    _, peak_lr, _ = learning_rates(cfg.optim, 1)
    for group in optimizer.param_groups:
        group["lr"] = peak_lr
    criterion = SwaVLoss(cfg.swav.temperature, cfg.swav.sinkhorn_iters, cfg.swav.epsilon)
    theirs = lightly_step_fn(model, criterion, optimizer, cfg.crops[0].count)
    their_batches = endless(lightly_loader(paths, transform, cfg.optim.batch_size, workers=2))

    ours = swav_step_fn(cfg, device)
    stream = TensorBatches(
        data.train_images,
        cfg.optim.batch_size,
        cfg.crops,
        cfg.augment,
        seed=0,
        channels_last=cfg.model.channels_last,
    )
    our_batches = itertools.chain.from_iterable(stream.epoch(e) for e in itertools.count())

    mine, other = [], []
    for r in range(rounds):
        mine.append(timed(ours, our_batches, steps))
        other.append(timed(theirs, their_batches, steps))
        print(f"round {r + 1}: openseer {mine[-1]:.1f} img/s, lightly {other[-1]:.1f} img/s")
    return statistics.median(mine) / statistics.median(other)


LIGHTLY_RECORD = Path("runs/vs-lightly/lightly.json")  # what (b)'s lightly run measured, for --reuse-lightly


def lightly_recipe_knn(
    data: PretrainData, paths: list[Path], minutes: float, knn_cfg: PretrainConfig, batch: int = 128
) -> float:
    """(b): lightly's CIFAR-10 SwAV recipe for ``minutes`` of training, then the shared kNN scorer."""
    torch.manual_seed(0)
    resnet = ResNetGenerator("resnet-18")
    backbone = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = LightlySwaV(backbone, 512, 512, 128, 512, frozen=0)
    criterion = SwaVLoss()
    lr = 1e-3 * batch / 128
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-6)
    transform = SwaVTransform(
        crop_sizes=(32,),
        crop_counts=(2,),
        crop_min_scales=(0.14,),
        crop_max_scales=(1.0,),
        cj_strength=0.5,
        gaussian_blur=0.0,
    )
    step = lightly_step_fn(model, criterion, optimizer, n_global=2)
    batches = endless(lightly_loader(paths, transform, batch, workers=2))
    budget, spent, steps = minutes * 60, 0.0, 0
    while spent < budget:
        for group in optimizer.param_groups:  # cosine decay over the time budget
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * spent / budget))
        start = time.perf_counter()
        step(next(batches))
        spent += time.perf_counter() - start
        steps += 1
    rate, epochs = steps * batch / spent, steps * batch / len(paths)
    print(f"lightly recipe: {steps} steps, {rate:.1f} img/s, {epochs:.2f} epochs")
    top1, top5 = knn_score(model.backbone, data.bank, data.test, knn_cfg, "cpu")
    record = dict(minutes=minutes, steps=steps, imgs_per_s=rate, epochs=epochs, knn_top1=top1, knn_top5=top5)
    LIGHTLY_RECORD.parent.mkdir(parents=True, exist_ok=True)
    LIGHTLY_RECORD.write_text(json.dumps(record, indent=2))
    return top1


def lightly_knn(
    args: argparse.Namespace, data: PretrainData, paths: list[Path], cfg: PretrainConfig
) -> float:
    """(b), lightly's side: train now, or reuse the record a previous run of this script left."""
    if args.reuse_lightly:
        if not LIGHTLY_RECORD.exists():
            raise SystemExit(f"--reuse-lightly: no {LIGHTLY_RECORD}; run once without it")
        record = json.loads(LIGHTLY_RECORD.read_text())
        if record["minutes"] != args.minutes:
            raise SystemExit(f"{LIGHTLY_RECORD} is a {record['minutes']}-minute run, not {args.minutes}")
        print(
            f"lightly recipe (from {LIGHTLY_RECORD}): {record['steps']} steps, {record['imgs_per_s']:.1f} img/s"
        )
        return record["knn_top1"]
    # lightly's images: its own ImageNet normalisation, contiguous tensors; the same kNN scorer
    knn_cfg = replace(cfg, model=replace(cfg.model, channels_last=False))
    return lightly_recipe_knn(data, paths, args.minutes, knn_cfg)


def openseer_knn(args: argparse.Namespace, source: str) -> float:
    """(b): the cpu preset for ``--minutes``, or the figure of a finished ``pretrain_knn.py`` run."""
    if args.openseer_run:
        run = Path(args.openseer_run)
        cfg = load_config(PretrainConfig, [str(run / "config.yaml")])
        same = (cfg.data.source, cfg.data.holdout, cfg.run.seed, cfg.run.budget_minutes)
        if same != (source, 0.1, 0, args.minutes):
            raise SystemExit(f"{run} was not a {args.minutes}-minute run on {source} (got {same})")
        return json.loads((run / "eval" / "pretraining-knn.json").read_text())["top1"]
    overrides = [
        f"data.source={source}",
        f"run.budget_minutes={args.minutes}",
        "run.out_dir=runs/vs-lightly",
        "run.evaluate=true",
        "run.progress=false",
        *args.overrides,
    ]
    return pretrain(load_config(PretrainConfig, ["cpu"], overrides)).evaluation["knn_top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="pretraining budget of each library in (b)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per library per round in (a)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-knn", action="store_true", help="only (a)")
    ap.add_argument(
        "--openseer-run", default=None, help="a finished pretrain_knn.py cifar10 run folder for (b)"
    )
    ap.add_argument(
        "--reuse-lightly",
        action="store_true",
        help=f"take (b)'s lightly figure from the {LIGHTLY_RECORD} an earlier run wrote (same --minutes)",
    )
    ap.add_argument("overrides", nargs="*", help="key=value overrides of openseer's cpu preset")
    args = ap.parse_args()
    source = str(cifar10_folder())
    cfg = load_config(PretrainConfig, ["cpu"], [f"data.source={source}", *args.overrides])
    cached = prepare_data(replace(cfg.data, labels="folder", holdout=0.1), seed=0)
    files = prepare_data(replace(cfg.data, labels="folder", holdout=0.1, cache_size=None), seed=0)

    ratio = identical_work(cfg, cached, list(files.train_paths), args.steps, args.rounds)
    print(f"(a) identical work: openseer / lightly = {ratio:.2f}x")
    knn_ours = knn_theirs = float("nan")
    if not args.skip_knn:
        knn_theirs = lightly_knn(args, cached, list(files.train_paths), cfg)
        print(f"(b) lightly, {args.minutes:g} min: kNN top-1 {knn_theirs:.4f}")
        knn_ours = openseer_knn(args, source)
        print(f"(b) openseer, {args.minutes:g} min: kNN top-1 {knn_ours:.4f}")
    print(f"throughput_ratio={ratio:.2f} knn_top1_openseer={knn_ours:.4f} knn_top1_lightly={knn_theirs:.4f}")


if __name__ == "__main__":
    main()
