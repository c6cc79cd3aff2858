"""``PretrainedModel.features``: the trunk's maps at strides 4 to 32 for any weights file, in the standard layout
whatever layout the trunk was pretrained in."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from support import WeightSource, assert_same_features
from support.dense import random_weights_file

import openseer
from openseer.config import load_config
from openseer.data.images import load_rgb
from openseer.models import build_backbone
from openseer.models.dense import FeatureMaps
from openseer.train.config import PretrainConfig

CROP_64 = ["crops=[{size: 64, count: 2, scale: [0.2, 1.0]}]"]


def _images(n: int = 3, side: int = 64) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_levels_two_to_five_are_the_maps_at_strides_four_to_thirty_two(tmp_path: Path) -> None:
    config = load_config(PretrainConfig, [], ["model.arch=regnety_200mf", *CROP_64])
    model = openseer.load(random_weights_file(tmp_path / "w.safetensors", config), device="cpu")
    maps = model.features(_images())
    assert list(maps) == [2, 3, 4, 5]
    assert {level: tuple(m.shape[-2:]) for level, m in maps.items()} == {
        2: (16, 16),
        3: (8, 8),
        4: (4, 4),
        5: (2, 2),
    }
    assert all(m.dtype == torch.float32 and m.shape[0] == 3 for m in maps.values())
    assert model.features(_images(), levels=[1])[1].shape[-1] == 32
    # the last stage, pooled, is what embed() returns: the same trunk, the same preprocessing
    assert_same_features(maps[5].mean(dim=(2, 3)), model.embed(_images()))


def test_the_cpu_presets_trunk_gives_standard_strides_from_its_own_weights(tmp_path: Path) -> None:
    """The cpu preset pretrains at total stride 8 (small stem, last stage unstrided); features() runs the same
    tensors with the stem and every stage strided."""
    config = load_config(PretrainConfig, ["cpu"], CROP_64)
    assert (config.model.stem, config.model.output_stride) == ("small", 8)
    model = openseer.load(random_weights_file(tmp_path / "w.safetensors", config), device="cpu")
    maps = model.features(_images(2), levels=[2, 3, 4, 5])
    assert {level: m.shape[-1] for level, m in maps.items()} == {2: 16, 3: 8, 4: 4, 5: 2}
    dense = model._dense_trunk.state_dict()
    assert all(torch.equal(dense[k], v) for k, v in model.backbone.state_dict().items())
    # the pooled last stage is not embed()'s: embed() runs the layout the trunk was trained in
    assert not torch.allclose(maps[5].mean(dim=(2, 3)), model.embed(_images(2)), rtol=1e-2, atol=1e-3)


def test_bad_levels_and_no_images(tmp_path: Path) -> None:
    model = openseer.load(random_weights_file(tmp_path / "w.safetensors"), device="cpu")
    with pytest.raises(ValueError, match=r"levels \[6\]: expected some of \[1, 2, 3, 4, 5\]"):
        model.features(_images(1), levels=[6])
    empty = model.features([], levels=[3])
    assert empty[3].shape == (0, 56, 0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("weight_source", ["run", "imported", "timm"], indirect=True)
def test_a_run_an_imported_seer_file_and_a_timm_file(
    weight_source: WeightSource, tiny_run: tuple[Path, Path]
) -> None:
    """Each file holds the tiny run's trunk (in openseer's, VISSL's and timm's layouts; pretrained with the small
    stem): its maps are those of the run's tensors, read without openseer's loader, in the standard layout."""
    images = sorted(tiny_run[1].rglob("*.png"))[:4]
    model = openseer.load(weight_source.path, device="cpu")
    maps = model.features(images, levels=[2, 3, 4, 5])
    size = model.preprocess.size  # the run's 16-px crops; imported files, which do not say, 224
    assert {level: m.shape[-1] for level, m in maps.items()} == {
        lv: math.ceil(size / 2**lv) for lv in (2, 3, 4, 5)
    }
    trunk = build_backbone("regnety_200mf", "imagenet")
    trunk.load_state_dict(weight_source.backbone)
    with torch.no_grad():
        expected = FeatureMaps(trunk, [2, 3, 4, 5]).eval()(
            torch.stack([model.preprocess.image(load_rgb(p)) for p in images])
        )
    for level in maps:
        assert_same_features(maps[level], expected[level])
