"""SwAV multi-crop vectorised over a batch of equally sized uint8 images.

Same augmentation as ``openseer.data.multicrop.MultiCrop`` (Caron et al. 2020, Sec. 3.2 and
the SimCLR colour/blur recipe SwAV reuses), but every sample of every crop gets its own random
parameters in one set of batched tensor ops. torchvision.transforms.v2 draws ONE parameter set
per call, so per-sample parameters over a batch have to be written by hand; that is why the
ops below re-implement resized crop, flip, colour jitter, grayscale and blur. Each op follows
the maths of the matching ``torchvision.transforms.v2.functional`` kernel, which the tests
check sample by sample.

Intended for small images held decoded in a uint8 cache (CPU or GPU); large or ragged images
go through the per-image ``MultiCrop`` in DataLoader workers instead.

Why not kornia.augmentation, which also draws per-sample parameters over a batch: with the same
parameters it was slower on both batches measured, the cpu preset's and a GPU-sized multi-crop batch, on
two CPUs (``benchmarks/augment_speed.py``; figures in docs/benchmarks.md#compiling-and-batched-crops-on-this-cpu
and the AMX machine's speed section). So the ops stay hand-written and kornia is not a dependency. Not measured: a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from openseer.data.multicrop import AugmentSpec, CropSpec, blur_kernel_size

# torchvision's tensor kernel uses 0.2989 (not 0.299) for red; we match it so parity is exact.
_LUMA = (0.2989, 0.587, 0.114)
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # RandomResizedCrop's default aspect range
_TRIES = 10  # as in torchvision's RandomResizedCrop before it falls back to a central crop
# Jitter op ids in AugParams.order, matching torchvision's ColorJitter fn_idx.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
# The default spec has every probability > 0, so _apply runs every stage and only the
# per-sample masks in AugParams decide.
_ALL_STAGES = AugmentSpec()


@dataclass
class AugParams:
    """Per-sample parameters of one crop for a batch of B images.

    ``boxes`` (B,4) float x0,y0,x1,y1 in pixels (x1/y1 exclusive); ``flip``, ``jitter_on``,
    ``gray``, ``blur_on`` (B,) bool; ``brightness``, ``contrast``, ``saturation``, ``hue``,
    ``sigma`` (B,) float; ``order`` (4,) long permutation of the jitter ops, shared by the batch.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter_on: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur_on: torch.Tensor
    sigma: torch.Tensor


def sample_params(
    batch_size: int,
    height: int,
    width: int,
    crop: CropSpec,
    aug: AugmentSpec,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugParams:
    """Draws independent crop/flip/colour/blur parameters for each of ``batch_size`` samples.

    Tensors live on ``device`` (default: the generator's device, else CPU); a ``None``
    generator means that device's default generator.
    """
    dev = (
        torch.device(device) if device is not None else (generator.device if generator is not None else "cpu")
    )

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape or (batch_size,), generator=generator, device=dev)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return rand(*shape) * (hi - lo) + lo

    boxes = _sample_boxes(batch_size, height, width, crop.scale, rand, uniform)
    s = aug.color_strength
    return AugParams(
        boxes=boxes,
        flip=rand() < aug.flip_p,
        jitter_on=rand() < aug.color_p,
        brightness=uniform(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s),
        contrast=uniform(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s),
        saturation=uniform(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s),
        hue=uniform(-0.2 * s, 0.2 * s),
        order=torch.randperm(4, generator=generator, device=dev),
        gray=rand() < aug.grayscale_p,
        blur_on=rand() < aug.blur_p,
        sigma=uniform(*aug.blur_sigma),
    )


def _sample_boxes(b: int, h: int, w: int, scale: tuple[float, float], rand, uniform) -> torch.Tensor:
    # torchvision's RandomResizedCrop.get_params loops over up to 10 tries per image; here all
    # tries of all samples are drawn at once and each sample keeps its first valid one.
    target = (h * w) * uniform(scale[0], scale[1], b, _TRIES)
    ratio = torch.exp(uniform(*_LOG_RATIO, b, _TRIES))
    cw = torch.round(torch.sqrt(target * ratio))
    ch = torch.round(torch.sqrt(target / ratio))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    found = ok.any(dim=1)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    # Offsets are uniform integers like torch.randint(0, side - crop + 1).
    x0 = torch.floor(rand() * (w - cw + 1))
    y0 = torch.floor(rand() * (h - ch + 1))
    fw, fh = _central_fallback(h, w)
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    x0 = torch.where(found, x0, float((w - fw) // 2))
    y0 = torch.where(found, y0, float((h - fh) // 2))
    return torch.stack((x0, y0, x0 + cw, y0 + ch), dim=1)


def _central_fallback(h: int, w: int) -> tuple[int, int]:
    in_ratio = w / h
    if in_ratio < 3 / 4:
        return w, int(round(w / (3 / 4)))
    if in_ratio > 4 / 3:
        return int(round(h * (4 / 3))), h
    return w, h


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crops box k of image k and resizes it to (size, size): (B,3,H,W) float -> (B,3,size,size).

    roi_align is a batched bilinear crop-and-resize: with ``aligned=True`` a box [x0, x1) maps
    its output pixel centres exactly like ``interpolate(align_corners=False)`` on the crop.
    Each output pixel averages a grid of bilinear samples; sampling_ratio=-1 sizes that grid
    per box as ceil(box side / size), so up-scaling and same-size crops take one sample (plain
    bilinear, as torchvision) while down-scaling averages over the footprint, a light
    antialiasing. A fixed sampling_ratio=2 would also blur same-size crops and cost ~3x.
    Unlike crop-then-resize, samples at the box edge may blend in the pixel just outside it.
    """
    idx = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)
    rois = torch.cat((idx[:, None], boxes), dim=1).to(images.dtype)
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirrors the samples where ``mask`` (B,) is set."""
    return torch.where(_col(mask), x.flip(-1), x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma (B,3,H,W) -> (B,1,H,W), as torchvision's rgb_to_grayscale."""
    r, g, b = x.unbind(1)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(1)


def random_grayscale(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replaces the masked samples by their luma replicated to 3 channels."""
    return torch.where(_col(mask), grayscale(x).expand_as(x), x)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample ``x * factor`` clamped to [0, 1]."""
    return (x * _col(factor)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample blend with the mean luma of each image, clamped to [0, 1]."""
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, _col(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample blend with each pixel's luma, clamped to [0, 1]."""
    return _blend(x, grayscale(x), _col(factor))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates hue by ``shift`` (B,) turns in HSV space; x in [0, 1]."""
    h, s, v = _rgb_to_hsv(x)
    h = torch.remainder(h + _col(shift), 1.0)
    return _hsv_to_rgb(h, s, v)


def color_jitter(x: torch.Tensor, p: AugParams) -> torch.Tensor:
    """ColorJitter with per-sample factors on the samples where ``p.jitter_on`` is set.

    torchvision draws a new op order per call; here one order (``p.order``) is shared by the
    batch, since a per-sample order would mean running every op in every slot (4x the work,
    hue being the costly one). Across batches each order is equally likely.
    """
    y = x
    ops = {
        BRIGHTNESS: (adjust_brightness, p.brightness),
        CONTRAST: (adjust_contrast, p.contrast),
        SATURATION: (adjust_saturation, p.saturation),
        HUE: (adjust_hue, p.hue),
    }
    for i in p.order.tolist():
        fn, factor = ops[i]
        y = fn(y, factor)
    return torch.where(_col(p.jitter_on), y, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with per-sample ``sigma`` (B,) where ``mask`` is set, reflect padding.

    The kernel matches torchvision's gaussian_blur (weights exp(-t^2 / 2 sigma^2), normalised);
    unmasked samples get a unit impulse so the whole batch is one grouped conv per axis.
    """
    b, c, h, w = x.shape
    t = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - kernel_size // 2
    kern = torch.softmax(-(t**2) / (2 * sigma[:, None].to(x.dtype) ** 2), dim=1)
    impulse = (t == 0).to(x.dtype)
    kern = torch.where(mask[:, None], kern, impulse).repeat_interleave(c, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kern[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kern[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel, in place."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def apply_params(images_float01: torch.Tensor, params: AugParams, size: int) -> torch.Tensor:
    """Applies one crop's parameters: (B,3,H,W) float in [0,1] -> (B,3,size,size) in [0,1].

    Order as SwAV's pipeline: resized crop, flip, colour jitter, grayscale, blur. Normalisation
    is left to the caller (``normalize``) so each stage can be compared with torchvision.
    """
    return _apply(images_float01, params, size, _ALL_STAGES)


def _apply(images: torch.Tensor, p: AugParams, size: int, aug: AugmentSpec) -> torch.Tensor:
    # Stages whose probability is 0 are skipped outright (checked on the spec, not the
    # sampled masks, so no device sync is needed to decide).
    x = crop_resize(images, p.boxes, size)
    if aug.flip_p > 0:
        x = hflip(x, p.flip)
    if aug.color_p > 0 and aug.color_strength > 0:
        x = color_jitter(x, p)
    if aug.grayscale_p > 0:
        x = random_grayscale(x, p.gray)
    if aug.blur_p > 0:
        x = gaussian_blur(x, p.sigma, p.blur_on, blur_kernel_size(size))
    return x


def batched_multicrop(
    images: torch.Tensor,
    crops: Sequence[CropSpec],
    aug: AugmentSpec,
    generator: torch.Generator | None = None,
    channels_last: bool = True,
) -> list[torch.Tensor]:
    """SwAV multi-crop of a uint8 batch (B,3,H,W) with independent parameters per sample.

    Returns ``n_crops(crops)`` normalised float32 tensors (B,3,size,size), all crops of the
    first spec first. All randomness comes from ``generator``, which must live on the images'
    device (``None``: that device's default generator).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 (B,3,H,W), got {images.dtype} {tuple(images.shape)}")
    if generator is not None and generator.device.type != images.device.type:
        raise ValueError(f"generator is on {generator.device}, images on {images.device}")
    b, _, h, w = images.shape
    x = images.to(torch.float32).div_(255)
    plan = [
        (c.size, sample_params(b, h, w, c, aug, generator, images.device))
        for c in crops
        for _ in range(c.count)
    ]
    # One host copy for all jitter orders (they steer Python control flow) instead of a
    # device sync per crop.
    orders = torch.stack([p.order for _, p in plan]).cpu()
    out = []
    for (size, p), order in zip(plan, orders, strict=True):
        y = normalize(_apply(x, replace(p, order=order), size, aug), aug.mean, aug.std)
        out.append(y.contiguous(memory_format=torch.channels_last) if channels_last else y)
    return out


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # Same expression as torchvision's _blend: x * f + other * (1 - f), then clamp.
    return (x * factor + other * (1 - factor)).clamp_(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(1)
    # Elementwise min/max: a reduction over the strided channel dim (aminmax) is ~10x slower on CPU.
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    flat = delta == 0  # grey pixels: hue and saturation are 0, avoid dividing by 0
    s = delta / torch.where(flat, 1.0, maxc)
    d = torch.where(flat, 1.0, delta)
    h = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2 + (b - r) / d, 4 + (r - g) / d))
    return (h / 6).unsqueeze(1), s.unsqueeze(1), maxc.unsqueeze(1)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Closed form per channel, f(n) = v - v s clamp(min(k, 4 - k), 0, 1) with
    # k = (n + 6h) mod 6 and n = 5, 3, 1 for R, G, B: no sector gather needed.
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device, dtype=h.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6 * h, 6)
    return v - v * s * torch.minimum(k, 4 - k).clamp_(0, 1)
