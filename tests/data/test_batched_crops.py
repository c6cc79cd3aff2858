import math

import pytest
import torch
import torch.nn.functional as nnf
import torchvision.transforms as tv1
import torchvision.transforms.v2.functional as TF

from openseer.data import batched_crops as bc
from openseer.data.multicrop import AugmentSpec, CropSpec, blur_kernel_size, crop_sizes

SMALL = (CropSpec(32, 2, (0.14, 1.0)), CropSpec(16, 4, (0.05, 0.14)))
NO_AUG = AugmentSpec(flip_p=0, color_p=0, grayscale_p=0, blur_p=0)


def _images(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)


def _float(b: int = 4, h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _params(x: torch.Tensor, **kw) -> bc.AugParams:
    """Identity parameters (full-image box, every op off), overridden by ``kw``."""
    b, _, h, w = x.shape
    off, ones = torch.zeros(b, dtype=torch.bool), torch.ones(b)
    p = dict(
        boxes=torch.tensor([[0.0, 0.0, w, h]]).repeat(b, 1),
        flip=off,
        jitter_on=off,
        brightness=ones,
        contrast=ones,
        saturation=ones,
        hue=torch.zeros(b),
        order=torch.arange(4),
        gray=off,
        blur_on=off,
        sigma=ones,
    )
    p.update(kw)
    return bc.AugParams(**p)


def test_shapes_dtype_channels_last():
    out = bc.batched_multicrop(_images(), SMALL, AugmentSpec(), torch.Generator().manual_seed(0))
    assert [tuple(x.shape) for x in out] == [(8, 3, s, s) for s in crop_sizes(SMALL)]
    for x in out:
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        assert x.is_contiguous(memory_format=torch.channels_last)
    out = bc.batched_multicrop(_images(), SMALL, AugmentSpec(), channels_last=False)
    assert all(x.is_contiguous() for x in out)


def test_rejects_float_images():
    with pytest.raises(ValueError):
        bc.batched_multicrop(torch.rand(2, 3, 8, 8), SMALL, AugmentSpec())


def test_deterministic_per_seed():
    imgs = _images()

    def run(seed: int) -> list[torch.Tensor]:
        return bc.batched_multicrop(imgs, SMALL, AugmentSpec(), torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_samples_get_independent_params():
    same = _images(b=1).expand(16, -1, -1, -1).contiguous()
    out = bc.batched_multicrop(same, SMALL, AugmentSpec(), torch.Generator().manual_seed(0))
    for x in out:
        flat = x.flatten(1)
        assert not torch.allclose(flat[0], flat[1])
        assert torch.unique(flat, dim=0).shape[0] == 16
    p = bc.sample_params(64, 32, 32, SMALL[0], AugmentSpec(), torch.Generator().manual_seed(0))
    assert torch.unique(p.boxes, dim=0).shape[0] > 32
    assert 0 < p.flip.sum() < 64 and 0 < p.gray.sum() < 64 and p.brightness.std() > 0


@pytest.mark.parametrize("scale", [(0.14, 1.0), (0.05, 0.14)])
def test_box_statistics_match_torchvision(scale):
    n, h, w = 4000, 224, 224
    p = bc.sample_params(n, h, w, CropSpec(96, 1, scale), AugmentSpec(), torch.Generator().manual_seed(0))
    x0, y0, x1, y1 = p.boxes.unbind(1)
    assert torch.equal(p.boxes, p.boxes.round())
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    frac = (x1 - x0) * (y1 - y0) / (h * w)
    # Rounding the sides to whole pixels may move the area slightly past the range.
    assert frac.min() >= scale[0] * 0.97 and frac.max() <= scale[1] * 1.03
    torch.manual_seed(0)
    ref = torch.tensor(
        [
            float(bh * bw) / (h * w)
            for _, _, bh, bw in (
                tv1.RandomResizedCrop.get_params(torch.empty(3, h, w), list(scale), [3 / 4, 4 / 3])
                for _ in range(n)
            )
        ]
    )
    assert abs(frac.mean() - ref.mean()) < 0.03 * (scale[1] - scale[0])
    aspect = ((x1 - x0) / (y1 - y0)).log()
    assert aspect.abs().max() <= math.log(4 / 3) + 0.1 and abs(aspect.mean()) < 0.02


def test_central_fallback_matches_torchvision():
    # No 3/4..4/3 box of >= 90% area fits a 20x100 image, so every sample falls back.
    p = bc.sample_params(8, 20, 100, CropSpec(16, 1, (0.9, 1.0)), AugmentSpec())
    i, j, h, w = tv1.RandomResizedCrop.get_params(torch.empty(3, 20, 100), [0.9, 1.0], [3 / 4, 4 / 3])
    assert torch.equal(p.boxes, torch.tensor([[j, i, j + w, i + h]], dtype=torch.float32).repeat(8, 1))


def test_no_augmentation_equals_normalisation():
    imgs = _images(b=4, h=32, w=32)
    (out,) = bc.batched_multicrop(imgs, [CropSpec(32, 1, (1.0, 1.0))], NO_AUG, channels_last=False)
    mean, std = torch.tensor(NO_AUG.mean).view(1, 3, 1, 1), torch.tensor(NO_AUG.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (imgs / 255 - mean) / std, atol=1e-5, rtol=0)


# Parity with torchvision.transforms.v2.functional, one sample at a time.


def test_crop_resize_parity():
    x = _float(b=3, h=20, w=24)
    # Whole-image upscale: identical sampling grid to bilinear interpolate.
    out = bc.crop_resize(x, torch.tensor([[0.0, 0.0, 24, 20]]).repeat(3, 1), 32)
    for i in range(3):
        ref = TF.resized_crop(x[i], 0, 0, 20, 24, [32, 32], antialias=True)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    # Interior integer boxes, same size: pixel centres hit exactly.
    boxes = torch.tensor([[2.0, 3, 14, 15], [5, 0, 17, 12], [12, 8, 24, 20]])
    out = bc.crop_resize(x, boxes, 12)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(x[i], y0, x0, y1 - y0, x1 - x0, [12, 12], antialias=True)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    # Interior upscale: only the outermost samples differ (roi_align may read the pixel just
    # outside the box where crop-then-resize clamps to the edge).
    out = bc.crop_resize(x, boxes, 30)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(x[i], y0, x0, y1 - y0, x1 - x0, [30, 30], antialias=True)
        torch.testing.assert_close(out[i, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5, rtol=0)
        assert (out[i] - ref).abs().mean() < 0.02


def test_crop_resize_downscale_close_to_antialiased_resize():
    # Smooth content so antialiasing filters of different shapes agree closely.
    x = nnf.interpolate(_float(b=2, h=8, w=8), size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    out = bc.crop_resize(x, torch.tensor([[0.0, 0.0, 64, 64], [8, 4, 56, 52]]), 16)
    refs = [TF.resized_crop(x[0], 0, 0, 64, 64, [16, 16]), TF.resized_crop(x[1], 4, 8, 48, 48, [16, 16])]
    for o, r in zip(out, refs, strict=True):
        assert (o - r).abs().mean() < 0.02


def test_flip_parity():
    x = _float()
    mask = torch.tensor([True, False, True, False])
    out = bc.hflip(x, mask)
    for i in range(4):
        assert torch.equal(out[i], TF.horizontal_flip(x[i]) if mask[i] else x[i])


@pytest.mark.parametrize(
    ("fn", "ref"),
    [
        (bc.adjust_brightness, TF.adjust_brightness),
        (bc.adjust_contrast, TF.adjust_contrast),
        (bc.adjust_saturation, TF.adjust_saturation),
    ],
)
def test_blend_ops_parity(fn, ref):
    x = _float()
    factors = torch.tensor([0.2, 0.9, 1.3, 1.8])
    out = fn(x, factors)
    for i in range(4):
        torch.testing.assert_close(out[i], ref(x[i], float(factors[i])), atol=1e-5, rtol=0)


def test_hue_parity():
    x = _float()
    x[0, :, :4] = 0.5  # grey pixels: zero saturation branch
    x[1, 1] = x[1, 0]  # ties between max channels
    shifts = torch.tensor([-0.2, -0.05, 0.1, 0.2])
    out = bc.adjust_hue(x, shifts)
    for i in range(4):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], float(shifts[i])), atol=1e-5, rtol=0)


def test_grayscale_parity():
    x = _float()
    mask = torch.tensor([True, False, False, True])
    out = bc.random_grayscale(x, mask)
    for i in range(4):
        ref = TF.rgb_to_grayscale(x[i], num_output_channels=3) if mask[i] else x[i]
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [16, 96])
def test_blur_parity(size):
    x = _float(h=size, w=size)
    k = blur_kernel_size(size)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    mask = torch.tensor([True, True, False, True])
    out = bc.gaussian_blur(x, sigma, mask, k)
    for i in range(4):
        ref = TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) if mask[i] else x[i]
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_normalize_parity():
    x = _float()
    aug = AugmentSpec()
    out = bc.normalize(x.clone(), aug.mean, aug.std)
    for i in range(4):
        torch.testing.assert_close(
            out[i], TF.normalize(x[i], list(aug.mean), list(aug.std)), atol=1e-6, rtol=0
        )


def test_apply_params_matches_torchvision_composition():
    x = _float(b=4, h=24, w=24)
    size, k = 24, blur_kernel_size(24)
    order = torch.tensor([3, 0, 2, 1])  # hue, brightness, saturation, contrast
    p = _params(
        x,
        flip=torch.tensor([True, False, True, False]),
        jitter_on=torch.tensor([True, True, False, True]),
        brightness=torch.tensor([0.5, 1.2, 1.5, 0.9]),
        contrast=torch.tensor([1.4, 0.6, 0.3, 1.0]),
        saturation=torch.tensor([0.2, 1.7, 1.1, 0.8]),
        hue=torch.tensor([0.1, -0.15, 0.05, 0.2]),
        order=order,
        gray=torch.tensor([False, True, False, False]),
        blur_on=torch.tensor([True, False, False, True]),
        sigma=torch.tensor([0.5, 1.0, 1.5, 1.9]),
    )
    out = bc.apply_params(x, p, size)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(4):
        y = x[i]
        y = TF.horizontal_flip(y) if p.flip[i] else y
        if p.jitter_on[i]:
            factors = [p.brightness[i], p.contrast[i], p.saturation[i], p.hue[i]]
            for op in order.tolist():
                y = ops[op](y, float(factors[op]))
        y = TF.rgb_to_grayscale(y, num_output_channels=3) if p.gray[i] else y
        y = TF.gaussian_blur(y, [k, k], [float(p.sigma[i])] * 2) if p.blur_on[i] else y
        torch.testing.assert_close(out[i], y, atol=1e-4, rtol=0)
