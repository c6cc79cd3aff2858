"""The padded single pass over all crops (VISSL's create_multidimensional_tensor, SEER 10B): crops in the corner
of a zero canvas, one trunk pass, each crop's map cut to its own extent before the average pool."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from openseer.config import ConfigError, load_config
from openseer.models import SwAVHead, SwAVModel, build_backbone, build_model, feature_dim
from openseer.models.padded_crops import pad_to_canvas, padded_trunk_features, unpadded_extent
from openseer.train.config import PretrainConfig


def _crops(sizes=(32, 32, 16, 16, 16, 16), b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, s, s, generator=g) for s in sizes]


def test_crops_sit_in_the_top_left_corner_of_a_zero_canvas_crop_major():
    crops = _crops((32, 16), b=2)
    canvas = pad_to_canvas(crops)
    assert canvas.shape == (4, 3, 32, 32)
    torch.testing.assert_close(canvas[:2], crops[0], rtol=0, atol=0)
    torch.testing.assert_close(canvas[2:, :, :16, :16], crops[1], rtol=0, atol=0)
    assert not canvas[2:, :, 16:, :].any() and not canvas[2:, :, :, 16:].any()  # bottom and right: zeros
    last = [c.contiguous(memory_format=torch.channels_last) for c in crops]
    assert pad_to_canvas(last).is_contiguous(memory_format=torch.channels_last)


def test_the_extent_kept_is_the_crops_own_map():
    # SEER 10B: 96-px crops on 160-px canvases, a stride-32 trunk: 3 of the 5 rows and columns
    assert unpadded_extent(96, 160, 5) == 3 and unpadded_extent(160, 160, 5) == 5
    # and in general the rows the resized mask keeps are those of the crop's own feature map, for the trunks and
    # sizes the presets and their rehearsals use
    for stem, sides, canvas in (("imagenet", (96, 64, 33), 160), ("small", (19, 16, 9), 32)):
        with torch.device("meta"):  # shapes only
            trunk = build_backbone("regnety_200mf", stem=stem).eval()
            canvas_side = trunk.forward_features(torch.empty(1, 3, canvas, canvas)).shape[-1]
            own = [trunk.forward_features(torch.empty(1, 3, side, side)).shape[-1] for side in sides]
        assert [unpadded_extent(side, canvas, canvas_side) for side in sides] == own, stem


class _Identity(nn.Module):
    """A stand-in trunk whose last map is its input: pooling then averages pixels, so padding would show."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_the_padding_is_cut_before_the_average_pool():
    crops = [c + 5 for c in _crops((8, 5, 5), b=2)]  # far from the padding's 0
    features = padded_trunk_features(_Identity(), crops)
    torch.testing.assert_close(features, torch.cat([c.mean(dim=(2, 3)) for c in crops]))


@pytest.fixture(scope="module")
def trunk() -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("regnety_200mf", stem="small", zero_init_last_bn=False).eval()


def test_unpadded_crops_keep_their_own_features_where_the_reference_says(trunk):
    """BatchNorm on running statistics (per image): the largest crops, which get no padding, come out of the
    padded pass as from their own pass; the padded small crops do not (the trunk sees the padding at their lower
    and right edges, and squeeze-excitation averages the whole canvas), as in VISSL."""
    crops = _crops()
    with torch.no_grad():
        padded = padded_trunk_features(trunk, crops)
        large = trunk(torch.cat(crops[:2]))
        small = trunk(torch.cat(crops[2:]))
    b = crops[0].shape[0]
    torch.testing.assert_close(padded[: 2 * b], large, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(padded[2 * b :], small, atol=1e-3)


def test_crops_of_one_size_give_the_pass_by_size(trunk):
    crops = _crops((16, 16, 16))
    head = SwAVHead(feature_dim(trunk), [32], 16, 10, use_bn=False).eval()
    with torch.no_grad():
        z_padded, s_padded = SwAVModel(trunk, head, "padded")(crops)
        z_sized, s_sized = SwAVModel(trunk, head, "by_size")(crops)
    torch.testing.assert_close(z_padded, z_sized, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s_padded, s_sized, atol=1e-5, rtol=1e-4)


def test_the_padded_model_is_crop_major_and_trains_every_part():
    cfg = load_config(
        PretrainConfig, [], ["model.arch=regnety_200mf", "model.stem=small", "model.crop_pass=padded"]
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    assert model.crop_pass == "padded"
    crops = _crops((24, 24, 12, 12), b=4)
    z, scores = model(crops)
    assert z.shape == (16, cfg.model.out_dim) and scores.shape == (16, cfg.model.prototypes)
    # crop-major: crop i's images are rows 4i .. 4i + 3; the second of two identical crops repeats the first's
    same = [crops[0], crops[0].clone(), crops[2], crops[2].clone()]
    model.eval()
    with torch.no_grad():
        z_same, _ = model(same)
    torch.testing.assert_close(z_same[:4], z_same[4:8])
    torch.testing.assert_close(z_same[8:12], z_same[12:])
    model.train()
    scores.square().mean().backward()
    stem = next(p for p in model.backbone.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert model.head.prototypes.weight.grad.abs().sum() > 0


def test_an_unknown_pass_and_a_trunk_without_a_map_are_refused():
    with pytest.raises(ConfigError, match="model.crop_pass"):
        load_config(PretrainConfig, [], ["model.crop_pass=stacked"])
    with pytest.raises(ValueError, match="crop pass"):
        SwAVModel(nn.Identity(), SwAVHead(8, [8], 4, 5, use_bn=False), "stacked")
    flat = SwAVModel(nn.Flatten(), SwAVHead(12, [8], 4, 5, use_bn=False), "padded")
    with pytest.raises(TypeError, match="forward_features"):
        flat([torch.randn(2, 3, 2, 2)])
