import numpy as np
import PIL.Image
import pytest
import torch

from openseer.data.multicrop import (
    SEER_CROPS,
    SWAV_CROPS,
    AugmentSpec,
    CropSpec,
    MultiCrop,
    blur_kernel_size,
    collate_multicrop,
    crop_sizes,
    group_by_size,
    n_crops,
)

SMALL = (CropSpec(32, 2, (0.14, 1.0)), CropSpec(16, 4, (0.05, 0.14)))
# Normalised bounds of [0, 1] pixels under the ImageNet mean/std.
LO = min((0 - m) / s for m, s in zip(AugmentSpec().mean, AugmentSpec().std, strict=True))
HI = max((1 - m) / s for m, s in zip(AugmentSpec().mean, AugmentSpec().std, strict=True))


def _pil(h: int, w: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _check(out: list[torch.Tensor], sizes: list[int]) -> None:
    assert [tuple(x.shape) for x in out] == [(3, s, s) for s in sizes]
    for x in out:
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()
        assert LO - 1e-4 <= x.min() and x.max() <= HI + 1e-4


def test_counts_and_sizes():
    assert n_crops(SMALL) == 6 and n_crops(SEER_CROPS) == 6 and n_crops(SWAV_CROPS) == 8
    assert crop_sizes(SMALL) == [32, 32, 16, 16, 16, 16]
    assert crop_sizes(SEER_CROPS)[:2] == [224, 224]
    assert [blur_kernel_size(s) for s in (16, 32, 96, 224)] == [3, 3, 9, 23]


def test_pil_and_tensor_inputs():
    mc = MultiCrop(SMALL)
    img = _pil(40, 50)
    _check(mc(img), crop_sizes(SMALL))
    tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    _check(mc(tensor), crop_sizes(SMALL))


def test_seer_crops_on_large_image():
    _check(MultiCrop(SEER_CROPS)(_pil(300, 260)), crop_sizes(SEER_CROPS))


def test_deterministic_under_manual_seed():
    mc = MultiCrop(SMALL)
    img = _pil(40, 50)
    torch.manual_seed(3)
    a = mc(img)
    torch.manual_seed(3)
    b = mc(img)
    torch.manual_seed(4)
    c = mc(img)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_grayscale_inputs_give_three_channels():
    mc = MultiCrop(SMALL)
    gray = _pil(40, 50).convert("L")
    _check(mc(gray), crop_sizes(SMALL))
    _check(mc(torch.randint(0, 256, (1, 40, 50), dtype=torch.uint8)), crop_sizes(SMALL))


def test_no_augmentation_is_plain_normalisation():
    aug = AugmentSpec(flip_p=0, color_p=0, grayscale_p=0, blur_p=0)
    img = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    (out,) = MultiCrop([CropSpec(24, 1, (1.0, 1.0))], aug)(img)
    mean, std = torch.tensor(aug.mean).view(3, 1, 1), torch.tensor(aug.std).view(3, 1, 1)
    torch.testing.assert_close(out, (img / 255 - mean) / std)


def test_rejects_bad_tensors():
    with pytest.raises(TypeError):
        MultiCrop(SMALL)(torch.rand(3, 8, 8))
    with pytest.raises(ValueError):
        MultiCrop(SMALL)(torch.zeros(4, 8, 8, dtype=torch.uint8))


def test_collate_with_skipped_items():
    mc = MultiCrop(SMALL)
    batch = [(mc(_pil(40, 50, i)), i) for i in range(3)]
    batch.insert(1, None)
    crops, index, skipped = collate_multicrop(batch)
    assert [tuple(c.shape) for c in crops] == [(3, 3, s, s) for s in crop_sizes(SMALL)]
    assert index.dtype == torch.long and index.tolist() == [0, 1, 2]
    assert skipped == [None]
    assert torch.equal(crops[2][1], batch[2][0][2])

    crops, index, skipped = collate_multicrop([None, "bad"])
    assert crops == [] and index.numel() == 0 and len(skipped) == 2


def test_group_by_size_keeps_order():
    crops = [torch.full((2, 3, s, s), float(i)) for i, s in enumerate([32, 32, 16, 16, 16, 32])]
    groups = group_by_size(crops)
    assert [tuple(g.shape) for g in groups] == [(4, 3, 32, 32), (6, 3, 16, 16), (2, 3, 32, 32)]
    assert groups[0][:, 0, 0, 0].tolist() == [0, 0, 1, 1]
    assert groups[1][:, 0, 0, 0].tolist() == [2, 2, 3, 3, 4, 4]
