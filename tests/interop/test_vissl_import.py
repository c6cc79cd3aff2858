"""VISSL/ClassyVision checkpoints built here with random weights (no download) import exactly.

The RegNetY-32GF round trip is the acceptance check. Two independent references check the VISSL names
themselves: a module laid out like ClassyVision's RegNet (written here from its structure) must accept the keys
and compute the same features, and timm's own converter for released SEER files must read them back.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from support import assert_same_features, random_inputs, randomize_batchnorm
from torch import nn

from openseer.cli import main as cli_main
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.backbone import build_backbone
from openseer.models.head import SwAVHead
from openseer.weights import load_weights
from openseer.weights.description import IMPORTED_PREPROCESS
from openseer.weights.vissl import to_vissl_checkpoint

# ---------------------------------------------------------------- RegNetY-32GF, the acceptance check


@pytest.fixture(scope="module")
def seer32(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A RegNetY-32GF (141M parameters) with a small SwAV head, saved once in VISSL's layout."""
    torch.manual_seed(0)
    backbone = randomize_batchnorm(build_backbone("regnety_32gf"), seed=1)
    head = randomize_batchnorm(SwAVHead(backbone.num_features, [256], 32, 50, use_bn=True), seed=2)
    folder = tmp_path_factory.mktemp("seer32")
    src = folder / "model_final_checkpoint_phase0.torch"
    torch.save(to_vissl_checkpoint(backbone.state_dict(), head.state_dict()), src)
    with torch.no_grad():
        x = random_inputs()
        expected = {"features": backbone(x), "z": head(backbone(x))[0]}
    return {"backbone": backbone, "head": head, "src": src, "folder": folder, "x": x, **expected}


@pytest.mark.slow
def test_seer32gf_vissl_checkpoint_imports_with_identical_weights_and_same_features(
    seer32: dict, capsys: pytest.CaptureFixture
) -> None:
    dst = seer32["folder"] / "seer32.safetensors"
    assert cli_main(["import-weights", str(seer32["src"]), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "regnety_32gf backbone" in out and "50 prototypes" in out and "seer32.yaml" in out
    assert (seer32["folder"] / "seer32.yaml").read_text().count("arch: regnety_32gf") == 1

    weights = load_weights(dst)
    assert weights.model.arch == "regnety_32gf"
    assert (weights.model.head_hidden, weights.model.out_dim) == ([256], 32)
    assert weights.preprocess == IMPORTED_PREPROCESS and weights.recipe is None  # no run's recipe
    original = seer32["backbone"].state_dict()
    assert weights.backbone.keys() == original.keys()
    assert all(torch.equal(weights.backbone[k], v) for k, v in original.items())
    del original

    model = weights.build_swav()
    with torch.no_grad():
        features = model.backbone(seer32["x"])
        z, _ = model.head(features)
    assert_same_features(features, seer32["features"])
    assert_same_features(z, seer32["z"])


@pytest.mark.slow
def test_seer32gf_import_refuses_the_wrong_architecture(seer32: dict) -> None:
    with pytest.raises(CheckpointError, match="mismatched") as err:
        load_weights(seer32["src"], arch="regnety_64gf")
    assert "s1.b1.conv1.conv.weight" in str(err.value)


# ---------------------------------------------------------------- ClassyVision's layout, written independently


class _ClassyBlock(nn.Module):
    """ClassyVision's ResBottleneckBlock: proj/bn shortcut, f = a (1x1), b (3x3 grouped), se, c, final_bn."""

    def __init__(self, w_in: int, w_out: int, stride: int, groups: int, w_se: int, proj: bool) -> None:
        super().__init__()
        if proj:
            self.proj = nn.Conv2d(w_in, w_out, 1, stride=stride, bias=False)
            self.bn = nn.BatchNorm2d(w_out)
        self.f = nn.Module()
        self.f.a = nn.Sequential(nn.Conv2d(w_in, w_out, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU())
        self.f.b = nn.Sequential(
            nn.Conv2d(w_out, w_out, 3, stride=stride, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(w_out),
            nn.ReLU(),
        )
        self.f.se = nn.Module()
        self.f.se.excitation = nn.Sequential(
            nn.Conv2d(w_out, w_se, 1), nn.ReLU(), nn.Conv2d(w_se, w_out, 1), nn.Sigmoid()
        )
        self.f.c = nn.Conv2d(w_out, w_out, 1, bias=False)
        self.f.final_bn = nn.BatchNorm2d(w_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.bn(self.proj(x)) if hasattr(self, "proj") else x
        y = self.f.b(self.f.a(x))
        y = y * self.f.se.excitation(y.mean(dim=(2, 3), keepdim=True))
        return torch.relu(shortcut + self.f.final_bn(self.f.c(y)))


class ClassyRegNet(nn.Module):
    """VISSL's RegNet trunk: ``_feature_blocks`` = conv1 (stem), res2..res5 (stages), then average pooling."""

    def __init__(self, timm_model: nn.Module) -> None:
        super().__init__()
        stem = nn.Module()
        stem.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        blocks: list[tuple[str, nn.Module]] = [("conv1", stem)]
        for s in range(1, 5):  # widths, strides and groups read off the reference model's modules
            stage = []
            for j, b in enumerate(getattr(timm_model, f"s{s}").children()):
                conv1, conv2 = b.conv1.conv, b.conv2.conv
                block = _ClassyBlock(
                    conv1.in_channels,
                    conv1.out_channels,
                    conv2.stride[0],
                    conv2.groups,
                    b.se.fc1.out_channels,
                    proj=not isinstance(b.downsample, nn.Identity) and b.downsample is not None,
                )
                stage.append((f"block{s}-{j}", block))
            blocks.append((f"res{s + 1}", nn.Sequential(OrderedDict(stage))))
        self._feature_blocks = nn.ModuleDict(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._feature_blocks["conv1"].stem(x)
        for s in range(2, 6):
            x = self._feature_blocks[f"res{s}"](x)
        return x.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def small() -> dict:
    torch.manual_seed(0)
    backbone = randomize_batchnorm(build_backbone("regnety_200mf"), seed=3)
    head = randomize_batchnorm(SwAVHead(backbone.num_features, [64], 16, 20, use_bn=True), seed=4)
    return {"backbone": backbone, "head": head}


def test_vissl_names_fit_a_classyvision_layout_and_compute_the_same(small: dict) -> None:
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict(), small["head"].state_dict())
    trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    reference = ClassyRegNet(small["backbone"])
    reference.load_state_dict(trunk, strict=True)  # every name and shape must match ClassyVision's layout
    x = random_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(reference.eval()(x), small["backbone"](x), rtol=1e-5, atol=1e-5)
    assert "_feature_blocks.res2.block1-0.f.se.excitation.2.bias" in trunk
    assert "_feature_blocks.res5.block4-0.proj.weight" in trunk
    heads = ckpt["classy_state_dict"]["base_model"]["model"]["heads"]
    assert {"0.prototypes0.weight", "0.projection_head.0.weight", "0.projection_head.3.bias"} <= set(heads)


def test_timm_reads_our_vissl_layout_as_it_reads_released_seer_files(small: dict) -> None:
    """timm loads ``regnety_*.seer`` straight from VISSL's files with its own converter: fed a checkpoint built
    by our inverse mapping, that converter must give back exactly the original (timm-named) tensors."""
    from timm.models.regnet import _filter_fn  # timm's private VISSL -> timm converter, as a second opinion

    clf = nn.Linear(small["backbone"].num_features, 3)
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict(), classifier=clf.state_dict())
    converted = _filter_fn(ckpt)
    expected = small["backbone"].state_dict() | {f"head.fc.{k}": v for k, v in clf.state_dict().items()}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], v) for k, v in expected.items())


def _roundtrip(state: dict, tmp_path: Path, **kwargs: object):  # noqa: ANN202
    path = tmp_path / "ckpt.torch"
    torch.save(state, path)
    return load_weights(path, **kwargs)


def _same_backbone(weights, backbone: nn.Module) -> None:  # noqa: ANN001
    x = random_inputs(2)
    with torch.no_grad():
        assert_same_features(weights.build_backbone()(x), backbone(x))


def test_regnet_fsdp_layout_with_block_groups(small: dict, tmp_path: Path) -> None:
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict(), fsdp_groups=True)
    assert (
        "_feature_blocks.res3.block2-part0.block2-0.f.a.0.weight"
        in ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    )
    weights = _roundtrip(ckpt, tmp_path)
    assert weights.head is None and weights.model.arch == "regnety_200mf"
    _same_backbone(weights, small["backbone"])


def test_flat_model_state_dict_and_plain_trunk_heads_dict(small: dict, tmp_path: Path) -> None:
    model = to_vissl_checkpoint(small["backbone"].state_dict(), small["head"].state_dict())
    inner = model["classy_state_dict"]["base_model"]["model"]
    flat = {f"trunk.{k}": v for k, v in inner["trunk"].items()} | {
        f"heads.{k}": v for k, v in inner["heads"].items()
    }
    for state in (flat, inner):
        weights = _roundtrip(state, tmp_path, fmt="vissl")
        assert torch.equal(weights.head["prototypes.weight"], small["head"].prototypes.weight)
        _same_backbone(weights, small["backbone"])


def test_finetuned_classifier_with_class_names(
    small: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clf = nn.Linear(small["backbone"].num_features, 3)
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict(), classifier=clf.state_dict())
    torch.save(ckpt, tmp_path / "ft.torch")
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    argv = [
        "import-weights",
        str(tmp_path / "ft.torch"),
        str(tmp_path / "ft.safetensors"),
        f"classes={tmp_path / 'classes.txt'}",
    ]
    assert cli_main(argv) == 0
    assert "classifier (3 classes)" in capsys.readouterr().out
    weights = load_weights(tmp_path / "ft.safetensors")
    assert weights.classes == ["cat", "dog", "bird"]
    assert torch.equal(weights.classifier["weight"], clf.weight)
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    assert cli_main([*argv[:-1], f"classes={tmp_path / 'two.txt'}"]) == 2
    assert "2 class names given for a classifier with 3 outputs" in capsys.readouterr().err


def test_unknown_keys_are_listed_never_dropped(
    small: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict(), small["head"].state_dict())
    ckpt["classy_state_dict"]["base_model"]["model"]["heads"]["0.prototypes1.weight"] = torch.zeros(5, 16)
    src, dst = tmp_path / "extra.torch", tmp_path / "extra.safetensors"
    torch.save(ckpt, src)
    assert cli_main(["import-weights", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openseer: error:") and "0.prototypes1.weight" in err and "skip_unknown=true" in err
    assert not dst.exists()
    assert cli_main(["import-weights", str(src), str(dst), "skip_unknown=true"]) == 0
    assert "skipped 1 head key(s): 0.prototypes1.weight" in capsys.readouterr().out
    assert any("0.prototypes1.weight" in n for n in load_weights(dst).notes)  # recorded in the file too


def test_missing_keys_are_listed(small: dict, tmp_path: Path) -> None:
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict())
    trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    del trunk["_feature_blocks.res4.block3-2.f.c.weight"]
    with pytest.raises(CheckpointError, match=r"missing \(1\): s3\.b3\.conv3\.conv\.weight"):
        _roundtrip(ckpt, tmp_path, arch="regnety_200mf")
    with pytest.raises(CheckpointError, match="match no known architecture"):
        _roundtrip(ckpt, tmp_path)


def test_batchnorm_counters_may_be_absent(small: dict, tmp_path: Path) -> None:
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict())
    trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    for key in [k for k in trunk if k.endswith("num_batches_tracked")]:
        del trunk[key]
    weights = _roundtrip(ckpt, tmp_path)
    assert any("num_batches_tracked" in n for n in weights.notes)
    _same_backbone(weights, small["backbone"])


def test_vissl_resnet_trunk_keeps_torchvision_names(tmp_path: Path) -> None:
    backbone = randomize_batchnorm(build_backbone("resnet18"), seed=5)
    ckpt = to_vissl_checkpoint(backbone.state_dict())
    assert (
        "_feature_blocks.layer1.0.conv1.weight" in ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    )
    weights = _roundtrip(ckpt, tmp_path)
    assert weights.model.arch == "resnet18"
    _same_backbone(weights, backbone)


def test_numpy_bookkeeping_is_accepted_but_pickled_objects_are_refused(small: dict, tmp_path: Path) -> None:
    ckpt = to_vissl_checkpoint(small["backbone"].state_dict())
    ckpt["loss"] = {"best": np.float64(0.5), "count": np.int64(3)}  # what real VISSL files carry
    _same_backbone(_roundtrip(ckpt, tmp_path), small["backbone"])
    ckpt["payload"] = Path("/etc/passwd")  # any non-allow-listed class
    with pytest.raises(CheckpointError, match="refused on purpose"):
        _roundtrip(ckpt, tmp_path)
