"""``openseer export ... format=torchvision``: every RegNetY size torchvision builds takes the file with no missing
or unexpected trunk key, and computes the same features as openseer's trunk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from support import assert_same_features, randomize_batchnorm
from torchvision.models import regnet as tv_regnet

from openseer.cli import main as cli_main
from openseer.config import ConfigError
from openseer.interop.config import ExportConfig
from openseer.interop.export import export
from openseer.interop.torchvision_export import DIFFERENT_WIDTHS, TORCHVISION_REGNETS, to_torchvision
from openseer.models import build_backbone
from openseer.weights import Weights, load_weights
from openseer.weights.core import expected_shapes, imported_model
from openseer.weights.description import IMPORTED_PREPROCESS


def _torchvision_on_meta(name: str, num_classes: int = 1000) -> torch.nn.Module:
    """torchvision's model ``name`` built without memory (its width generator computes on the CPU)."""
    make_params = tv_regnet.BlockParams.from_init_params

    def on_cpu(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - torchvision's own signature
        with torch.device("cpu"):
            return make_params(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, torch.device("meta"):
        patch.setattr(tv_regnet.BlockParams, "from_init_params", on_cpu)
        return getattr(torchvision.models, name)(num_classes=num_classes)


def _mismatches(arch: str, name: str) -> list[str]:
    """Keys of openseer's ``arch`` mapped to torchvision's names that torchvision's ``name`` lacks or shapes
    otherwise; its own keys that nothing maps to."""
    ours = {k: torch.empty(shape, device="meta") for k, shape in expected_shapes(arch).items()}
    theirs = {k: tuple(v.shape) for k, v in _torchvision_on_meta(name).state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in to_torchvision(ours).items()}
    unmatched = sorted(set(theirs) - set(mapped) - {"fc.weight", "fc.bias"})
    return unmatched + [k for k in mapped if theirs.get(k) != mapped[k]]


@pytest.mark.parametrize("arch", sorted(TORCHVISION_REGNETS))
def test_every_size_maps_key_for_key_and_shape_for_shape(arch: str) -> None:
    assert _mismatches(arch, TORCHVISION_REGNETS[arch]) == []


@pytest.mark.parametrize("arch", sorted(DIFFERENT_WIDTHS))
def test_sizes_torchvision_builds_wider_are_refused(arch: str, tmp_path: Path) -> None:
    assert _mismatches(arch, DIFFERENT_WIDTHS[arch])  # the reason they are not offered
    weights = Weights(imported_model(arch, "imagenet", None), IMPORTED_PREPROCESS, {})
    with pytest.raises(ConfigError, match=f"has other stage widths than {arch}"):
        export(weights, tmp_path / "x.pth", "torchvision")


@pytest.fixture(scope="module")
def trunk_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A RegNetY-400MF (the smallest torchvision has) with random weights and BatchNorm statistics, and a
    3-class classifier, as an openseer weights file."""
    from openseer.weights import save_weights

    torch.manual_seed(0)
    trunk = randomize_batchnorm(build_backbone("regnety_400mf"), seed=3)
    classifier = {"weight": torch.randn(3, trunk.num_features), "bias": torch.randn(3)}
    weights = Weights(
        imported_model("regnety_400mf", "imagenet", None),
        IMPORTED_PREPROCESS,
        trunk.state_dict(),
        classifier=classifier,
        classes=["a", "b", "c"],
        source="test",
    )
    (path, _) = save_weights(weights, tmp_path_factory.mktemp("w") / "trunk.safetensors")
    return path, trunk


def _features(model: torchvision.models.RegNet, x: torch.Tensor) -> torch.Tensor:
    return model.avgpool(model.trunk_output(model.stem(x))).flatten(1)


def test_the_file_loads_into_torchvision_and_gives_the_same_features(
    trunk_file: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, trunk = trunk_file
    dst = tmp_path / "regnet.pth"
    assert cli_main(["export", str(path), str(dst)]) == 0  # .pth: torchvision's format
    assert "torchvision.models.regnet_y_400mf().load_state_dict" in capsys.readouterr().out
    model = torchvision.models.regnet_y_400mf()
    missing, unexpected = model.load_state_dict(torch.load(dst, weights_only=True), strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and unexpected == []
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same_features(_features(model.eval(), x), trunk.eval()(x))


def test_with_head_the_classifier_is_fc(trunk_file: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, trunk = trunk_file
    (dst,) = export(load_weights(path), tmp_path / "clf.pth", "torchvision", with_head=True)
    model = torchvision.models.regnet_y_400mf(num_classes=3)
    model.load_state_dict(torch.load(dst, weights_only=True))  # strict: every key, fc included
    assert torch.equal(model.fc.weight, load_weights(path).classifier["weight"])


def test_sizes_torchvision_lacks_are_refused(tmp_path: Path) -> None:
    weights = Weights(
        imported_model("regnety_200mf", "small", None),
        IMPORTED_PREPROCESS,
        build_backbone("regnety_200mf", "small").state_dict(),
    )
    with pytest.raises(
        ConfigError, match="torchvision has no regnety_200mf; its RegNetY sizes are regnety_400mf"
    ):
        export(weights, tmp_path / "x.pth", "torchvision")
    cfg = ExportConfig(checkpoint="run", dst="b.pth")
    cfg.validate()
    assert cfg.format == "torchvision"
