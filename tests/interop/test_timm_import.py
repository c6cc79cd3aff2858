"""timm state dicts (the layout of ``regnety_320.seer`` and friends) import key for key, built here from timm."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import timm.models.regnet as timm_regnet
import torch
from safetensors.torch import save_file
from support import assert_same_features, random_inputs, randomize_batchnorm

from openseer.api import PretrainedModel
from openseer.cli import main as cli_main
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.regnet import REGNETY
from openseer.weights import load_weights
from openseer.weights.description import IMPORTED_PREPROCESS
from openseer.weights.timm_weights import to_timm


@pytest.fixture(scope="module")
def regnety_320(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """timm's own ``regnety_320`` (the architecture of ``regnety_320.seer``), saved as a Hub-style safetensors."""
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model("regnety_320", pretrained=False, num_classes=0), seed=1)
    folder = tmp_path_factory.mktemp("timm320")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    with torch.no_grad():
        x = random_inputs()
        features = model(x)
    return {"model": model, "folder": folder, "x": x, "features": features}


@pytest.mark.slow
def test_timm_regnety_320_imports_with_identical_weights_and_same_features(regnety_320: dict) -> None:
    folder = regnety_320["folder"]
    assert (
        cli_main(["import-weights", str(folder / "model.safetensors"), str(folder / "seer.safetensors")]) == 0
    )
    weights = load_weights(folder / "seer.safetensors")
    assert weights.model.arch == "regnety_32gf" and weights.head is None and weights.classifier is None
    assert weights.preprocess == IMPORTED_PREPROCESS and weights.recipe is None
    original = regnety_320["model"].state_dict()
    assert weights.backbone.keys() == original.keys()
    assert all(torch.equal(weights.backbone[k], v) for k, v in original.items())
    del original
    with torch.no_grad():
        features = weights.build_backbone()(regnety_320["x"])
    assert_same_features(features, regnety_320["features"])


@pytest.mark.parametrize(
    ("timm_name", "arch"),
    [("regnety_640", "regnety_64gf"), ("regnety_1280", "regnety_128gf"), ("regnety_2560", "regnety_256gf")],
)
def test_other_seer_sizes_share_timm_architecture(timm_name: str, arch: str) -> None:
    """The remaining SEER sizes on timm (``regnety_640.seer``, ...) are built from the very same RegNetCfg, so
    their files map key for key like ``regnety_320``'s (comparing configs spares building 0.3-1.3B models)."""
    assert timm_regnet.model_cfgs[timm_name] == REGNETY[arch].to_timm()


def test_timm_classifier_becomes_openseer_classifier(tmp_path: Path) -> None:
    """A fine-tuned timm model (``head.fc``): predictions equal timm's own softmax."""
    model = randomize_batchnorm(timm.create_model("regnety_002", pretrained=False, num_classes=4), seed=2)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    weights = load_weights(tmp_path / "pytorch_model.bin", classes=["a", "b", "c", "d"])
    assert weights.model.arch == "regnety_200mf" and weights.classes == ["a", "b", "c", "d"]
    pretrained = PretrainedModel(weights)
    x = torch.rand(2, 3, 40, 40)
    top = pretrained.predict(x, topk=4)
    with torch.no_grad():
        expected = model(torch.stack([pretrained.preprocess.image(img) for img in x])).softmax(dim=1)
    for row, probs in zip(top, expected, strict=True):
        assert [label for label, _ in row] == [
            ["a", "b", "c", "d"][i] for i in probs.argsort(descending=True)
        ]
        torch.testing.assert_close(torch.tensor([p for _, p in row]), probs.sort(descending=True).values)
    assert to_timm(weights.backbone, weights.classifier).keys() == model.state_dict().keys()


def test_timm_training_checkpoint_and_resnet(tmp_path: Path) -> None:
    model = randomize_batchnorm(timm.create_model("resnet18", pretrained=False, num_classes=0), seed=3)
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": model.state_dict()}, tmp_path / "last.pth.tar")
    weights = load_weights(tmp_path / "last.pth.tar", fmt="timm")
    assert weights.model.arch == "resnet18"
    x = random_inputs(2)
    with torch.no_grad():
        assert_same_features(weights.build_backbone()(x), model(x))


def test_unrecognised_files_ask_for_a_format(tmp_path: Path) -> None:
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format=vissl or format=timm"):
        load_weights(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="match no known architecture"):
        load_weights(tmp_path / "other.pt", fmt="timm")
