"""Speed of the multi-crop implementations: per-image torchvision.transforms.v2 (``MultiCrop``), openseer's
hand-written batched multi-crop (``batched_multicrop``) and the same augmentation with kornia.augmentation.

1. Per-image against batched, images/s: 224-px images with SEER's 2x224 + 4x96 crops (batch 16), then 32-px
   images with 2x32 + 4x16 (batch 256), with ``--threads`` (default 1: what a DataLoader worker has).
2. Hand-written against kornia, crops/s, on the cpu preset's batch (256 x 2 crops of 32 px from 32x32 uint8,
   colour strength 0.5, no blur) and on a GPU-sized one (64 x (2x224 + 6x96) from 256-px images, SwAV's
   default augmentation with blur); the two alternate for ``--rounds`` rounds, medians reported. Kornia gets
   the same parameters: RandomResizedCrop (scale, ratio 3/4..4/3), flip p, ColorJitter (0.8s, 0.8s, 0.8s, 0.2s,
   one random op order per call, torchvision's formulas) with p, grayscale p, Gaussian blur (kernel as
   ``blur_kernel_size``, sigma range, reflect border) with p, normalisation.
3. The cpu preset's training step fed by each (augment, then step), images/s; with ``--device cuda`` also the
   swav-rn50 step on the GPU-sized batch.
4. The photos preset's crops as its run makes them (the batch of 64 from the decoded-image cache's side, 2x96,
   its colour strength), crops/s with the step's threads, median of ``--rounds``; ``--photos-only`` runs this
   part alone (to compare two versions of the code on one machine, alternating).

    python benchmarks/augment_speed.py [--device cuda] [--seconds 3] [--threads 1] [--step-threads 1]
        [--rounds 3] [--no-step] [--photos-only]

Last line: ``multicrop_v2_imgs_per_s=<x> batched_imgs_per_s=<x> batched_crops_per_s_32=<x>
kornia_crops_per_s_32=<x> batched_crops_per_s_224=<x> kornia_crops_per_s_224=<x> step_imgs_per_s_batched=<x>
step_imgs_per_s_kornia=<x> batched_crops_per_s_photos=<x>`` (the first two for 32 px; the step figures for the
cpu preset's batch); with ``--photos-only``: ``cpu="<model>" batched_crops_per_s_photos=<x>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch
from _common import machine, swav_step_fn  # the sibling module (its folder is on sys.path when run)

from openseer.config import load_config
from openseer.data.batched_crops import batched_multicrop
from openseer.data.multicrop import SEER_CROPS, AugmentSpec, CropSpec, MultiCrop, blur_kernel_size
from openseer.train.config import PretrainConfig

SMALL_CROPS = (CropSpec(32, 2, (0.14, 1.0)), CropSpec(16, 4, (0.05, 0.14)))
GPU_CROPS = (CropSpec(224, 2, (0.14, 1.0)), CropSpec(96, 6, (0.05, 0.14)))


def _rate(step: Callable[[], int], seconds: float, sync: Callable[[], None]) -> float:
    """Items per second of ``step`` (which returns how many items it processed)."""
    step()
    sync()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    sync()
    return done / (time.perf_counter() - start)


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def measure(side: int, crops, batch: int, device: torch.device, seconds: float) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    pil = [PIL.Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(8)]
    mc = MultiCrop(crops)

    def per_image() -> int:
        for img in pil:
            mc(img)
        return len(pil)

    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    aug = AugmentSpec()

    def batched() -> int:
        batched_multicrop(images, crops, aug, gen)
        return batch

    return _rate(per_image, seconds, lambda: None), _rate(batched, seconds, _sync_for(device))


def kornia_multicrop(
    crops: Sequence[CropSpec], aug: AugmentSpec, channels_last: bool = True
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The same multi-crop with kornia.augmentation: one pipeline per crop, per-sample parameters."""
    import kornia.augmentation as K

    s = aug.color_strength
    pipes = []
    for c in crops:
        ops = [
            K.RandomResizedCrop((c.size, c.size), scale=c.scale, ratio=(3 / 4, 4 / 3)),
            K.RandomHorizontalFlip(p=aug.flip_p),
            K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=aug.color_p),
            K.RandomGrayscale(p=aug.grayscale_p),
        ]
        if aug.blur_p > 0:
            k = blur_kernel_size(c.size)
            ops.append(K.RandomGaussianBlur((k, k), aug.blur_sigma, p=aug.blur_p))
        ops.append(K.Normalize(torch.tensor(aug.mean), torch.tensor(aug.std)))
        pipes += [K.AugmentationSequential(*ops)] * c.count

    def run(images: torch.Tensor) -> list[torch.Tensor]:
        x = images.to(torch.float32).div_(255)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return [p(x).contiguous(memory_format=fmt) for p in pipes]

    return run


def compare(
    side: int,
    crops: Sequence[CropSpec],
    aug: AugmentSpec,
    batch: int,
    device: torch.device,
    seconds: float,
    rounds: int,
) -> tuple[float, float]:
    """Crops/s of the hand-written batched multi-crop and of kornia's, alternating rounds; medians."""
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    per_batch = batch * sum(c.count for c in crops)
    kornia = kornia_multicrop(crops, aug)

    def ours() -> int:
        batched_multicrop(images, crops, aug, gen)
        return per_batch

    def theirs() -> int:
        kornia(images)
        return per_batch

    sync = _sync_for(device)
    mine, other = [], []
    for _ in range(rounds):
        mine.append(_rate(ours, seconds, sync))
        other.append(_rate(theirs, seconds, sync))
    return statistics.median(mine), statistics.median(other)


def step_rates(
    cfg: PretrainConfig, side: int, device: torch.device, seconds: float, rounds: int
) -> tuple[float, float]:
    """Images/s of the training step fed by each multi-crop (augment the batch, then one step), alternating."""
    batch = cfg.optim.batch_size
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    step = swav_step_fn(cfg, device)
    kornia = kornia_multicrop(cfg.crops, cfg.augment, cfg.model.channels_last)

    def ours() -> int:
        return step(batched_multicrop(images, cfg.crops, cfg.augment, gen, cfg.model.channels_last))

    def theirs() -> int:
        return step(kornia(images))

    sync = _sync_for(device)
    mine, other = [], []
    for _ in range(rounds):
        mine.append(_rate(ours, seconds, sync))
        other.append(_rate(theirs, seconds, sync))
    return statistics.median(mine), statistics.median(other)


def photos_rate(device: torch.device, seconds: float, rounds: int) -> float:
    """Crops/s of the photos preset's multi-crop on a batch of its size from its cache's side (part 4)."""
    cfg = load_config(PretrainConfig, ["photos"], [f"run.device={device}"])
    side, batch = cfg.data.cache_size, cfg.optim.max_batch_size
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    per_batch = batch * sum(c.count for c in cfg.crops)

    def ours() -> int:
        batched_multicrop(images, cfg.crops, cfg.augment, gen, cfg.model.channels_last)
        return per_batch

    return statistics.median(_rate(ours, seconds, _sync_for(device)) for _ in range(rounds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="device of the batched paths (per-image is always CPU)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    # One thread by default for part 1: DataLoader workers run torch single-threaded, and it gives a
    # per-core comparison that holds up on a shared machine.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for part 1")
    ap.add_argument(
        "--step-threads", type=int, default=None, help="torch CPU threads for parts 2 and 3 (default: all)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds in parts 2 and 3")
    ap.add_argument("--no-step", action="store_true", help="skip part 3")
    ap.add_argument("--photos-only", action="store_true", help="part 4 alone")
    args = ap.parse_args()
    device = torch.device(args.device)
    hardware, cores = machine(device)
    if args.photos_only:
        torch.set_num_threads(args.step_threads or torch.get_num_threads())
        rate = photos_rate(device, args.seconds, args.rounds)
        print(f'cpu="{hardware}" batched_crops_per_s_photos={rate:.1f}')
        return
    all_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    print(f"cpu={hardware} cores={cores} torch threads={torch.get_num_threads()} batched device={device}")
    mc, bt = measure(224, SEER_CROPS, 16, device, args.seconds)
    print(f"224px 2x224+4x96: multicrop_v2_imgs_per_s={mc:.1f} batched_imgs_per_s={bt:.1f}")
    mc, bt = measure(32, SMALL_CROPS, 256, device, args.seconds)
    print(f"32px 2x32+4x16: multicrop_v2_imgs_per_s={mc:.1f} batched_imgs_per_s={bt:.1f}")

    torch.set_num_threads(
        args.step_threads or all_threads
    )  # parts 2 and 3: as the training process runs them
    cpu_cfg = load_config(PretrainConfig, ["cpu"], [f"run.device={args.device}"])
    print(
        f"hand-written vs kornia, {torch.get_num_threads()} threads, {args.rounds} rounds of {args.seconds} s:"
    )
    b32, k32 = compare(32, cpu_cfg.crops, cpu_cfg.augment, 256, device, args.seconds, args.rounds)
    print(f"cpu preset, 256 x 2x32 from 32 px: batched {b32:.0f} crops/s, kornia {k32:.0f} crops/s")
    b224, k224 = compare(256, GPU_CROPS, AugmentSpec(), 64, device, args.seconds, args.rounds)
    print(f"64 x (2x224 + 6x96) from 256 px: batched {b224:.1f} crops/s, kornia {k224:.1f} crops/s")
    sb = sk = float("nan")
    if not args.no_step:
        sb, sk = step_rates(cpu_cfg, 32, device, args.seconds * 2, args.rounds)
        print(f"cpu preset step fed by each: batched {sb:.1f} img/s, kornia {sk:.1f} img/s")
        if device.type == "cuda":
            # swav-rn50 keeps SwAV's default crops, 2x224 + 6x96
            gpu_cfg = load_config(PretrainConfig, ["swav-rn50"], ["optim.batch_size=64", "run.device=cuda"])
            gb, gk = step_rates(gpu_cfg, 256, device, args.seconds * 2, args.rounds)
            print(f"swav-rn50 step, 64 x (2x224 + 6x96): batched {gb:.1f} img/s, kornia {gk:.1f} img/s")
    photos = photos_rate(device, args.seconds, args.rounds)
    print(f"photos preset, 64 x 2x96 from 160 px: batched {photos:.1f} crops/s")
    print(
        f"multicrop_v2_imgs_per_s={mc:.1f} batched_imgs_per_s={bt:.1f} batched_crops_per_s_32={b32:.0f} "
        f"kornia_crops_per_s_32={k32:.0f} batched_crops_per_s_224={b224:.1f} kornia_crops_per_s_224={k224:.1f} "
        f"step_imgs_per_s_batched={sb:.1f} step_imgs_per_s_kornia={sk:.1f} batched_crops_per_s_photos={photos:.1f}"
    )


if __name__ == "__main__":
    main()
