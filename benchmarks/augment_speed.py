"""Images/s of the per-image MultiCrop (torchvision.transforms.v2) and the batched multi-crop.

Two settings: 224-px images with SEER's 2x224 + 4x96 crops, then 32-px images with 2x32 + 4x16
crops. The last line is ``multicrop_v2_imgs_per_s=<x> batched_imgs_per_s=<x>`` for 32 px.
Each measurement runs for about ``--seconds`` after one warm-up call, so the whole script stays
well under a minute on CPU.

    python benchmarks/augment_speed.py [--device cuda] [--seconds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import PIL.Image
import torch

from openseer.data.batched_crops import batched_multicrop
from openseer.data.multicrop import SEER_CROPS, AugmentSpec, CropSpec, MultiCrop

SMALL_CROPS = (CropSpec(32, 2, (0.14, 1.0)), CropSpec(16, 4, (0.05, 0.14)))


def _rate(step: Callable[[], int], seconds: float, sync: Callable[[], None]) -> float:
    """Images per second of ``step`` (which returns how many images it processed)."""
    step()
    sync()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    sync()
    return done / (time.perf_counter() - start)


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

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return _rate(per_image, seconds, lambda: None), _rate(batched, seconds, sync)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="device of the batched path (per-image is always CPU)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    # One thread by default: DataLoader workers run torch single-threaded, and it gives a
    # per-core comparison that holds up on a shared machine.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both paths")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch threads={torch.get_num_threads()} batched device={device}")
    mc, bt = measure(224, SEER_CROPS, 16, device, args.seconds)
    print(f"224px 2x224+4x96: multicrop_v2_imgs_per_s={mc:.1f} batched_imgs_per_s={bt:.1f}")
    mc, bt = measure(32, SMALL_CROPS, 256, device, args.seconds)
    print("32px 2x32+4x16:")
    print(f"multicrop_v2_imgs_per_s={mc:.1f} batched_imgs_per_s={bt:.1f}")


if __name__ == "__main__":
    main()
