"""RegNetY trunks (Radosavovic et al. 2020 design space, pycls tables) at SEER sizes (Goyal et al. 2021)."""

import math

import pytest
import torch

from openseer.models.backbone import ARCHS, build_backbone, build_on_meta, feature_dim
from openseer.models.regnet import REGNETY, SEER_TRUNK_PARAMS, build_regnety, trunk_parameter_count

# Trunk parameter counts published with SEER (no classifier).
SEER_PUBLISHED = {
    "regnety_32gf": 141.3e6,
    "regnety_64gf": 276.5e6,
    "regnety_128gf": 637.4e6,
    "regnety_256gf": 1.27e9,
    "regnety_10b": 9.3e9,
}

# pycls MODEL_ZOO.md (facebookresearch/pycls), RegNetY table: parameters in millions of the ImageNet model, i.e.
# trunk plus a 1000-way linear classifier, rounded to 0.1M.
PYCLS_PARAMS_M = {
    "regnety_200mf": 3.2,
    "regnety_400mf": 4.3,
    "regnety_800mf": 6.3,
    "regnety_1.6gf": 11.2,
    "regnety_3.2gf": 19.4,
    "regnety_16gf": 83.6,
    "regnety_32gf": 145.0,
}

# pycls model zoo: stage widths and depths.
PYCLS_STAGES = {
    "regnety_200mf": ([24, 56, 152, 368], [1, 1, 4, 7]),
    "regnety_400mf": ([48, 104, 208, 440], [1, 3, 6, 6]),
    "regnety_800mf": ([64, 128, 320, 768], [1, 3, 8, 2]),
}


def _stages(model):
    """(width, depth, group width) of each of the 4 stages as built."""
    out = []
    for stage in (model.s1, model.s2, model.s3, model.s4):
        blocks = list(stage.children())
        conv = blocks[0].conv2.conv
        widths = {b.conv3.conv.out_channels for b in blocks}
        assert len(widths) == 1  # one width per stage
        out.append((widths.pop(), len(blocks), conv.in_channels // conv.groups))
    return out


def _hand_stages(p):
    """Quantised linear widths: u_j = w0 + wa*j; s_j = round(log(u_j/w0)/log(wm)); w_j = round(w0*wm^s_j/8)*8;
    runs of equal widths form the stages; widths are then made multiples of the group width (pycls)."""
    widths = []
    for j in range(p.depth):
        u = p.w0 + p.wa * j
        s = round(math.log(u / p.w0) / math.log(p.wm))
        widths.append(int(round(p.w0 * p.wm**s / 8) * 8))
    runs: list[list[int]] = []
    for w in widths:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    stages = []
    for w, d in runs:
        g = min(p.group_width, w)
        stages.append((int(round(w / g) * g), d, g))
    return stages


@pytest.mark.parametrize("name", list(SEER_PUBLISHED))
def test_seer_trunk_parameter_counts(name):
    count = trunk_parameter_count(name)  # meta device: the 10B model costs no memory
    assert abs(count / SEER_PUBLISHED[name] - 1) < 0.005, (name, count)
    # the module's own table (quoted in its docstring) must be true of the trunks it builds
    assert abs(count / SEER_TRUNK_PARAMS[name] - 1) < 0.005, (name, count)


@pytest.mark.parametrize("name", list(PYCLS_PARAMS_M))
def test_parameter_counts_match_the_pycls_model_zoo(name):
    """The REGNETY table's (depth, w0, wa, wm, group width) generate networks of the published sizes: trunk plus
    a 1000-way classifier on its D features, within the table's rounding."""
    with torch.device("meta"):
        trunk = build_regnety(name)
    total = trunk_parameter_count(name) + trunk.num_features * 1000 + 1000
    assert abs(total / 1e6 - PYCLS_PARAMS_M[name]) <= 0.05 + 1e-9, (name, total)


def test_regnety_200mf_matches_pycls():
    with torch.device("meta"):
        model = build_regnety("regnety_200mf")
    widths, depths = PYCLS_STAGES["regnety_200mf"]
    assert _stages(model) == [(w, d, 8) for w, d in zip(widths, depths, strict=True)]
    assert model.num_features == 368
    assert model.stem.conv.out_channels == 32


@pytest.mark.parametrize("name", list(PYCLS_STAGES))
def test_small_sizes_match_pycls_tables(name):
    with torch.device("meta"):
        model = build_regnety(name)
    widths, depths = PYCLS_STAGES[name]
    assert [s[:2] for s in _stages(model)] == list(zip(widths, depths, strict=True))


@pytest.mark.parametrize(
    "name",
    ["regnety_200mf", "regnety_800mf", "regnety_3.2gf", "regnety_32gf", "regnety_256gf", "regnety_10b"],
)
def test_hand_quantised_widths_agree_with_built_trunk(name):
    with torch.device("meta"):
        model = build_regnety(name)
    assert _stages(model) == _hand_stages(REGNETY[name])


def test_seer_256gf_feature_dim_is_the_head_input():
    with torch.device("meta"):
        model = build_regnety("regnety_256gf")
    assert model.num_features == 10444  # SEER head: 10444-8192-8192-256


def _stage_sides(model: torch.nn.Module, side: int) -> list[int]:
    with torch.no_grad():
        h = model.stem(torch.randn(2, 3, side, side))
        sides = [h.shape[-1]]
        for stage in (model.s1, model.s2, model.s3, model.s4):
            h = stage(h)
            sides.append(h.shape[-1])
    return sides


def test_small_stem_gives_total_stride_16():
    """32-px inputs reach the last stage as 2x2 (stride 16), not 1x1 as with the ImageNet layout."""
    torch.manual_seed(0)
    model = build_regnety("regnety_200mf", stem="small").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert _stage_sides(model, 32) == [16, 16, 8, 4, 2]
    assert out.shape == (2, model.num_features) == (2, 368)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("stem", "output_stride", "sides"),
    [
        ("small", 8, [16, 16, 8, 4, 4]),  # the last stage's stride goes first
        ("small", 4, [16, 16, 8, 8, 8]),
        ("imagenet", 16, [16, 8, 4, 2, 2]),
        ("imagenet", 32, [16, 8, 4, 2, 1]),  # its own stride: nothing changes
    ],
)
def test_output_stride_takes_the_stride_out_of_the_last_stages(stem, output_stride, sides):
    model = build_regnety("regnety_200mf", stem=stem, output_stride=output_stride).eval()
    assert _stage_sides(model, 32) == sides
    assert 32 // sides[-1] == output_stride


def test_output_stride_keeps_every_weight_shape():
    def shapes(m):
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    with torch.device("meta"):
        assert shapes(build_regnety("regnety_200mf", "small", output_stride=8)) == shapes(
            build_regnety("regnety_200mf", "small")
        )


@pytest.mark.parametrize(
    ("stem", "output_stride"), [("small", 32), ("small", 12), ("imagenet", 64), ("imagenet", 1)]
)
def test_output_stride_above_the_stems_or_not_a_power_of_two_is_rejected(stem, output_stride):
    with pytest.raises(ValueError, match=f"output stride {output_stride} "):
        build_regnety("regnety_200mf", stem=stem, output_stride=output_stride)


def test_small_stem_keeps_the_parameters():
    assert sum(p.numel() for p in build_regnety("regnety_200mf", stem="small").parameters()) == sum(
        p.numel() for p in build_regnety("regnety_200mf").parameters()
    )


def test_imagenet_stem_halves_resolution():
    with torch.device("meta"):
        model = build_regnety("regnety_200mf")
    assert model.stem.conv.stride == (2, 2)


def test_unknown_stem_is_rejected():
    with pytest.raises(ValueError, match="unknown stem 'tiny'"):
        build_regnety("regnety_200mf", stem="tiny")


def test_resnet50_feature_dim():
    model = build_on_meta("resnet50")
    assert feature_dim(model) == 2048
    small = build_on_meta("resnet50", stem="small")
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)


def test_build_backbone_regnet_is_trunk_without_classifier():
    with torch.device("meta"):
        model = build_backbone("regnety_400mf")
    assert feature_dim(model) == 440
    assert model.get_classifier() is None or isinstance(model.get_classifier(), torch.nn.Identity)


def test_unknown_arch_lists_the_names():
    with pytest.raises(ValueError) as info:
        build_backbone("regnety_9000gf")
    message = str(info.value)
    assert "regnety_9000gf" in message
    for name in ("regnety_200mf", "regnety_256gf", "regnety_10b", "resnet50"):
        assert name in message
    assert set(ARCHS) >= set(REGNETY) | {"resnet50"}
    with pytest.raises(ValueError, match="available: regnety_200mf"):
        build_regnety("resnet50")


def test_regnety_8gf_is_timms_regnety_080():
    """RegNetY-8GF (pycls RegNetY-8.0GF), the smaller trunk the GPU check times: timm's regnety_080 layout."""
    import timm

    with torch.device("meta"):
        ours = build_regnety("regnety_8gf")
        theirs = timm.create_model("regnety_080", pretrained=False, num_classes=0)
    assert _stages(ours) == _stages(theirs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert ours.num_features == 2016
