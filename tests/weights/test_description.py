"""The description stored with the weights (architecture, head, preprocessing), not a training recipe: derived once
from a run's config, stored by save_weights and classifier checkpoints, and read from files of the older layouts
(a safetensors file holding a whole pretraining config, a classifier checkpoint holding ``pretrain_config``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from support import randomize_batchnorm
from torch import nn

from openseer.config import load_config, to_dict
from openseer.data.preprocess import Preprocess
from openseer.fileio.checkpoint import CheckpointError, save_checkpoint
from openseer.models import build_backbone
from openseer.models.config import ModelConfig
from openseer.train.config import PretrainConfig
from openseer.weights import Weights, load_weights, save_weights
from openseer.weights.description import IMPORTED_PREPROCESS, describe_recipe

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _recipe() -> PretrainConfig:
    """A small run's config whose input differs from every default: 24-px first crop, its own normalisation."""
    return load_config(
        PretrainConfig,
        [],
        [
            "model.arch=regnety_200mf",
            "model.stem=small",
            "model.head_hidden=[16]",
            "model.out_dim=8",
            "model.prototypes=5",
            "crops=[{size: 24, count: 2, scale: [0.3, 1.0]}, {size: 8, count: 2, scale: [0.1, 0.3]}]",
            f"augment.mean={list(MEAN)}",
            f"augment.std={list(STD)}",
        ],
    )


def _backbone(cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return randomize_batchnorm(build_backbone(cfg.model.arch, cfg.model.stem), seed=1).state_dict()


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], v) for k, v in b.items())


def test_a_recipe_describes_its_network_by_the_first_crop_and_the_normalisation() -> None:
    cfg = _recipe()
    model, preprocess = describe_recipe(to_dict(cfg), "whole")
    assert model == cfg.model.network() and type(model) is ModelConfig
    assert preprocess == Preprocess(24, MEAN, STD, "whole")
    # keys of another version elsewhere in the recipe do not matter: only what describes the network is read
    drifted = {**to_dict(cfg), "optim": {"a_key_of_another_version": 1}}
    assert describe_recipe(drifted) == (cfg.model.network(), Preprocess(24, MEAN, STD))
    with pytest.raises(CheckpointError, match="does not say what the network is"):
        describe_recipe({"optim": {}})


def test_save_weights_stores_the_description_and_the_recipe_beside_it(tmp_path: Path) -> None:
    cfg = _recipe()
    recipe = to_dict(cfg)
    weights = Weights(
        cfg.model.network(), Preprocess(24, MEAN, STD, "whole"), _backbone(cfg), source="run", recipe=recipe
    )
    path, yaml_path = save_weights(weights, tmp_path / "w.safetensors")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["model"]) == to_dict(cfg.model.network()) and "config" not in metadata
    assert json.loads(metadata["preprocess"]) == Preprocess(24, MEAN, STD, "whole").to_dict()
    again = load_weights(path)
    assert (again.model, again.preprocess, again.recipe) == (cfg.model.network(), weights.preprocess, recipe)
    assert _same_tensors(again.backbone, weights.backbone)
    written = yaml.safe_load(yaml_path.read_text())
    assert written["model"]["arch"] == "regnety_200mf" and written["preprocess"]["size"] == 24
    assert written["recipe"]["crops"][0]["size"] == 24


def test_imported_weights_carry_no_recipe(tmp_path: Path) -> None:
    cfg = _recipe()
    model = ModelConfig(arch="regnety_200mf", stem="small")
    path, yaml_path = save_weights(
        Weights(model, IMPORTED_PREPROCESS, _backbone(cfg)), tmp_path / "w.safetensors"
    )
    again = load_weights(path)
    assert again.recipe is None and again.preprocess == IMPORTED_PREPROCESS and again.model == model
    assert set(yaml.safe_load(yaml_path.read_text())) == {"model", "preprocess"}


def _old_layout_file(path: Path, cfg: PretrainConfig, notes: list[str], classes: list[str] | None) -> Path:
    """A weights file as save_weights wrote it when the metadata held the whole pretraining config."""
    backbone = _backbone(cfg)
    tensors = {f"backbone.{k}": v.contiguous() for k, v in backbone.items()}
    metadata = {
        "openseer-weights": "1",
        "config": json.dumps(to_dict(cfg)),
        "source": "runs/old",
        "notes": json.dumps(notes),
        "resize": "whole",
    }
    if classes is not None:
        dim = build_backbone(cfg.model.arch, cfg.model.stem).num_features
        tensors |= {
            "classifier.weight": torch.randn(len(classes), dim),
            "classifier.bias": torch.zeros(len(classes)),
        }
        metadata["classes"] = json.dumps(classes)
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_a_file_of_the_older_layout_loads_into_the_description(tmp_path: Path) -> None:
    cfg = _recipe()
    path = _old_layout_file(tmp_path / "old.safetensors", cfg, [], ["cat", "dog"])
    weights = load_weights(path)
    assert weights.model == cfg.model.network()
    assert weights.preprocess == Preprocess(24, MEAN, STD, "whole")
    assert weights.recipe == to_dict(cfg) and weights.classes == ["cat", "dog"]
    assert _same_tensors(weights.backbone, _backbone(cfg))
    # written again, it is in the new layout and describes the same network
    (again, _) = save_weights(weights, tmp_path / "new.safetensors")
    reread = load_weights(again)
    assert (reread.model, reread.preprocess, reread.recipe) == (
        weights.model,
        weights.preprocess,
        weights.recipe,
    )


def test_an_imported_file_of_the_older_layout_gets_no_recipe(tmp_path: Path) -> None:
    """Imports of the older layout held a default config with model.* read off the tensors: no run's recipe."""
    cfg = _recipe()
    path = _old_layout_file(tmp_path / "seer.safetensors", cfg, ["format: vissl"], None)
    weights = load_weights(path)
    assert (
        weights.recipe is None and weights.model == cfg.model.network() and weights.notes == ["format: vissl"]
    )


def _classifier_state(cfg: PretrainConfig, old: bool) -> dict:
    backbone = _backbone(cfg)
    dim = build_backbone(cfg.model.arch, cfg.model.stem).num_features
    head = nn.Sequential(nn.Identity(), nn.Linear(dim, 2))
    model = {f"backbone.{k}": v for k, v in backbone.items()} | {
        f"head.{k}": v for k, v in head.state_dict().items()
    }
    state = {"kind": "openseer-classifier", "protocol": "linear", "classes": ["a", "b"], "head_bn": False}
    state |= {"source": "runs/x", "model": model}
    if old:
        return {**state, "resize": "whole", "pretrain_config": to_dict(cfg)}
    description = {
        "model": to_dict(cfg.model.network()),
        "preprocess": Preprocess(24, MEAN, STD, "whole").to_dict(),
    }
    return {**state, "description": description, "recipe": to_dict(cfg)}


@pytest.mark.parametrize("old", [True, False], ids=["pretrain_config", "description"])
def test_classifier_checkpoints_of_both_layouts_give_the_same_description(tmp_path: Path, old: bool) -> None:
    cfg = _recipe()
    save_checkpoint(_classifier_state(cfg, old), tmp_path / "checkpoints", 3)
    weights = load_weights(tmp_path)
    assert weights.model == cfg.model.network() and weights.preprocess == Preprocess(24, MEAN, STD, "whole")
    assert weights.recipe == to_dict(cfg) and weights.classes == ["a", "b"]


def test_model_init_is_the_runs_not_the_networks(tmp_path: Path) -> None:
    """model.init (what a run started from) stays in the run's config: the description derived from the config
    and every file written with it leave it out."""
    from openseer.weights.description import description_dict

    cfg = load_config(_recipe(), [], ["model.init=/somewhere/seer.torch"])
    model, preprocess = describe_recipe(to_dict(cfg))
    assert type(model) is ModelConfig and model == cfg.model.network() and not hasattr(model, "init")
    assert "init" not in description_dict(cfg.model, preprocess)["model"]  # even given the run's own section
    weights = Weights(model, preprocess, _backbone(cfg), source="run", recipe=to_dict(cfg))
    file, yaml_file = save_weights(weights, tmp_path / "w.safetensors")
    with safe_open(str(file), framework="pt") as f:
        assert "init" not in json.loads(f.metadata()["model"])
    assert "init" not in yaml.safe_load(yaml_file.read_text())["model"]
    assert load_weights(file).model == model
