"""The Python API: its documented examples, configuration from Python, embed() and predict() on every input kind."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

import openseer
from openseer import api
from openseer.config import ConfigError, to_dict
from openseer.fileio.checkpoint import CheckpointError, save_checkpoint
from openseer.models import build_model

TINY = ["model.arch=regnety_200mf", "model.head_hidden=[32]", "model.out_dim=16", "model.prototypes=10"]


@pytest.mark.slow
def test_docstring_examples_run() -> None:
    """The examples in openseer/api.py (a two-step run, load, embed, predict's error) as documentation tests."""
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted >= 8 and result.failed == 0


@pytest.mark.slow
def test_import_openseer_stays_light() -> None:
    code = (
        "import sys, openseer; assert 'torch' not in sys.modules, 'torch imported by import openseer'; "
        "openseer.load; assert 'torch' in sys.modules; print(openseer.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == openseer.__version__
    assert {"pretrain", "load", "PretrainedModel"} <= set(dir(openseer))
    with pytest.raises(AttributeError):
        openseer.no_such_thing  # noqa: B018


def test_make_config_layers_presets_strings_and_keywords() -> None:
    cfg = openseer.make_config(
        "cpu", ["model.prototypes=50", "run.seed=3"], model__prototypes=70, run={"seed": 4}
    )
    assert cfg.model.arch == "regnety_200mf" and cfg.model.prototypes == 70 and cfg.run.seed == 4
    assert openseer.make_config(cfg, optim__epochs=2.0).optim.epochs == 2.0
    assert openseer.make_config(["swav-rn50", "cpu"]).model.arch == "regnety_200mf"
    with pytest.raises(ConfigError, match="did you mean 'optim.base_lr'"):
        openseer.make_config("cpu", optim__base_lrr=0.1)
    with pytest.raises(ConfigError, match="list of 'key=value'"):
        openseer.make_config("cpu", "run.seed=1")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a checkpoint of a small model (no training needed to test the API)."""
    cfg = openseer.make_config("cpu", TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint({"config": to_dict(cfg), "model": model.state_dict()}, folder / "checkpoints", 1)
    return folder


def _image(seed: int = 0, size: tuple[int, int] = (45, 37)) -> torch.Tensor:
    return torch.randint(
        0, 256, (3, size[1], size[0]), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_embed_accepts_every_kind_of_image(run_dir: Path, tmp_path: Path) -> None:
    model = openseer.load(run_dir)
    u8 = _image()
    pil = Image.fromarray(u8.permute(1, 2, 0).numpy())
    pil.save(tmp_path / "x.png")
    reference = model.embed(u8)
    assert reference.shape == (1, model.backbone.num_features) and reference.dtype == torch.float32
    torch.testing.assert_close(model.embed(pil), reference)
    torch.testing.assert_close(model.embed(tmp_path / "x.png"), reference)
    torch.testing.assert_close(model.embed(str(tmp_path / "x.png")), reference)
    torch.testing.assert_close(
        model.embed(u8.float() / 255), reference, atol=0.05, rtol=0.05
    )  # no uint8 rounding

    batch = torch.stack([_image(1, (40, 40)), _image(2, (40, 40))])
    both = model.embed(batch, batch_size=1)
    torch.testing.assert_close(both, model.embed([batch[0], batch[1]]))
    torch.testing.assert_close(both[1:], model.embed(batch[1]))
    assert model.embed([]).shape == (0, model.backbone.num_features)

    grey = pil.convert("L")
    torch.testing.assert_close(model.embed(grey), model.embed(torch.from_numpy(np.array(grey))[None]))
    with pytest.raises(ValueError, match="cannot read image"):
        model.embed(tmp_path / "missing.jpg")
    with pytest.raises(TypeError):
        model.embed([3.5])


def test_predict_without_classifier_says_what_to_do(run_dir: Path) -> None:
    model = openseer.load(run_dir)
    assert model.classes is None and "regnety_200mf" in repr(model)
    with pytest.raises(CheckpointError, match="holds no classifier.*embed()"):
        model.predict(_image())


def _classifier_checkpoint(run_dir: Path, folder: Path, resize: str) -> tuple[nn.Module, nn.Module]:
    """A checkpoint as ``openseer linear`` writes it: backbone, (BatchNorm1d without affine, Linear), classes."""
    cfg = openseer.make_config("cpu", TINY)
    backbone = openseer.load(run_dir).backbone
    head = nn.Sequential(
        nn.BatchNorm1d(backbone.num_features, affine=False), nn.Linear(backbone.num_features, 4)
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        head[0].running_mean.copy_(torch.randn(backbone.num_features, generator=gen))
        head[0].running_var.copy_(0.5 + torch.rand(backbone.num_features, generator=gen))
    head.eval()
    model = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    model |= {f"head.{k}": v for k, v in head.state_dict().items()}
    state = {
        "kind": "openseer-classifier",
        "protocol": "linear",
        "classes": ["shirt", "bag", "boot", "coat"],
        "resize": resize,
        "head_bn": True,
        "pretrain_config": to_dict(cfg),
        "source": str(run_dir),
        "model": model,
    }
    save_checkpoint(state, folder / "checkpoints", 0)
    return backbone, head


@pytest.mark.parametrize("resize", ["center_crop", "whole"])
def test_predict_matches_the_classifier(run_dir: Path, tmp_path: Path, resize: str) -> None:
    backbone, head = _classifier_checkpoint(run_dir, tmp_path / "linear", resize)
    model = openseer.load(tmp_path / "linear")
    assert model.classes == ["shirt", "bag", "boot", "coat"]
    images = [_image(3), _image(4, (64, 30))]
    top = model.predict(images, topk=3)
    x = torch.stack([model.preprocess.image(img) for img in images])
    assert x.shape[-2:] == (32, 32)  # the cpu preset's crop
    cropping = any(isinstance(t, v2.CenterCrop) for t in model.preprocess.transform().transforms)
    assert cropping == (resize == "center_crop")  # classifiers trained on whole images are fed whole images
    with torch.no_grad():
        probs = head(backbone(x)).softmax(dim=1)
    for row, p in zip(top, probs, strict=True):
        assert len(row) == 3
        values, indices = p.topk(3)
        assert [label for label, _ in row] == [model.classes[i] for i in indices]
        torch.testing.assert_close(torch.tensor([v for _, v in row]), values, atol=1e-5, rtol=1e-4)
    assert len(model.predict(images[0], topk=10)[0]) == 4  # never more than the classes
