"""Every command that takes weights, on every kind of weights file (docs/weights.md's table, cell by cell).

The sources are built once per test process in tests/conftest.py (``source_<kind>``) from one 2-step
pretraining of a RegNetY-200MF with the small stem on 36 images of 20 px: its run folder, one of its
``ckpt-*.pt``, a single-process FSDP run (sharded ``dcp-*`` checkpoints), what ``import-weights`` and
``export --format safetensors`` write, and the same tensors in SEER/VISSL's and timm's layouts. ``predict``
takes the same kind of source holding a classifier (``WeightSource.classifier``); ``clusters`` needs a SwAV
head, which export and timm files do not hold: there the test checks the error that says so.

Each test's parameter ids are the row names of the table; tests/test_docs.py checks that the two agree.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from support import WeightSource, assert_same_features

import openseer
from openseer.eval.clusters import ClustersConfig, run_clusters
from openseer.eval.embed import EmbedConfig, FeatureConfig, run_embed
from openseer.eval.finetune import FinetuneConfig, run_finetune
from openseer.eval.knn import KnnConfig, run_knn
from openseer.eval.linear import LinearConfig, ProbeConfig, run_linear
from openseer.eval.lowshot import LowShotConfig, run_lowshot
from openseer.eval.neighbors import NeighborsConfig, run_neighbors
from openseer.eval.predict import PredictConfig, run_predict
from openseer.eval.recipe import RecipeConfig
from openseer.fileio.checkpoint import CheckpointError
from openseer.interop.export import export
from openseer.train.config import PretrainConfig
from openseer.weights import load_weights
from openseer.weights.description import IMPORTED_PREPROCESS

pytestmark = pytest.mark.slow  # every source comes from a pretraining

# rows of the table: the kinds of weights files (tests/conftest.py builds source_<kind>)
SOURCES = ("run", "ckpt", "fsdp", "imported", "exported", "vissl", "timm")
# columns: every command that takes weights, and the Python API
COMMANDS = (
    "embed",
    "knn",
    "linear",
    "finetune",
    "lowshot",
    "predict",
    "neighbors",
    "clusters",
    "export",
    "load",
)
# kinds that come from an openseer run and keep its recipe (the others are imported: the architecture read off the
# tensors, ImageNet's stem and input)
FROM_RUN = ("run", "ckpt", "fsdp", "exported")
# cells where the command must refuse the source, with the reason the table gives
REFUSED = {
    ("clusters", "exported"): "no SwAV head: export writes the backbone (and a classifier) only",
    ("clusters", "timm"): "no SwAV head: timm files have none",
    ("predict", "fsdp"): "no classifier: sharded checkpoints are written by pretraining only",
}

FAST = FeatureConfig(workers=0, progress=False)
CLASSES = ["class0", "class1", "class2"]
by_source = pytest.mark.parametrize("weight_source", SOURCES, indirect=True)


def _folder(tiny_run: tuple[Path, Path]) -> str:
    return str(tiny_run[1])


def _refused(command: str, source: WeightSource) -> bool:
    return (command, source.kind) in REFUSED


@by_source
def test_embed(weight_source: WeightSource, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """Features of an image folder, the same as the Python API's for the same files (another code path: a
    DataLoader over the files vs one image at a time)."""
    features = FeatureConfig(workers=0, progress=False, bn_recalibrate=False)
    cfg = EmbedConfig(
        str(weight_source.path), _folder(tiny_run), out=str(tmp_path / "f.safetensors"), features=features
    )
    feats, files = run_embed(cfg)
    assert feats.features.shape == (36, 368) and feats.labels is not None
    assert {f.name for f in files} == {"f.safetensors", "f.json"}
    model = openseer.load(weight_source.path, device="cpu")
    assert_same_features(feats.features, model.embed(feats.items))


@by_source
def test_knn(weight_source: WeightSource, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_knn(
        KnnConfig(
            checkpoint=str(weight_source.path),
            train=_folder(tiny_run),
            k=5,
            results=str(tmp_path),
            features=FAST,
        )
    )
    assert result["n_train"] + result["n_test"] == 36 and result["n_test"] >= 3
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert Path(result["result_file"]) == tmp_path / "knn.json"


@by_source
def test_linear(weight_source: WeightSource, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = LinearConfig(
        checkpoint=str(weight_source.path),
        train=_folder(tiny_run),
        probe=ProbeConfig(lrs=[0.1], epochs=2),
        features=FAST,
        out_dir=str(tmp_path / "linear"),
        results=str(tmp_path),
    )
    result = run_linear(cfg)
    assert result["n_train"] + result["n_test"] == 36 and 0 <= result["top1"] <= 1
    classifier = load_weights(result["classifier"])
    assert classifier.classes == CLASSES and classifier.classifier["weight"].shape == (3, 368)


@by_source
def test_finetune(weight_source: WeightSource, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = FinetuneConfig(
        checkpoint=str(weight_source.path),
        train=_folder(tiny_run),
        recipe=RecipeConfig(epochs=1, batch_size=9),
        out_dir=str(tmp_path / "finetune"),
        results=str(tmp_path),
        device="cpu",
        workers=0,
        progress=False,
    )
    result = run_finetune(cfg)
    assert result["steps"] >= 2 and 0 <= result["top1"] <= 1
    assert load_weights(result["classifier"]).classes == CLASSES


@by_source
def test_lowshot(weight_source: WeightSource, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = LowShotConfig(
        checkpoint=str(weight_source.path),
        train=_folder(tiny_run),
        fractions=[],
        per_class=[2],
        seeds=[0],
        baselines=[],
        probe=ProbeConfig(lrs=[0.1], epochs=2),
        features=FAST,
        results=str(tmp_path),
    )
    (row,) = run_lowshot(cfg)["rows"]
    (run,) = row["cells"]["2/class"]["runs"]
    assert row["method"] == "ssl-linear" and run["n_labels"] == 6 and 0 <= run["top1"] <= 1


@by_source
def test_predict(weight_source: WeightSource, tiny_run: tuple[Path, Path]) -> None:
    """Top-k labels from the classifier this kind of source holds; a pretraining file (or one without a
    classifier) is refused with the reason."""
    images = [str(tiny_run[1] / "class0" / "0.png"), str(tiny_run[1] / "class2" / "5.png")]
    with pytest.raises(CheckpointError, match="holds no classifier"):
        run_predict(PredictConfig(checkpoint=str(weight_source.path), images=images, device="cpu", workers=0))
    if _refused("predict", weight_source):
        assert weight_source.classifier is None
        return
    assert weight_source.classifier is not None
    cfg = PredictConfig(
        checkpoint=str(weight_source.classifier), images=images, topk=2, device="cpu", workers=0
    )
    result = run_predict(cfg)
    assert [p["image"] for p in result["predictions"]] == images
    for entry in result["predictions"]:
        labels = [q["label"] for q in entry["predictions"]]
        probs = [q["probability"] for q in entry["predictions"]]
        assert len(labels) == 2 and set(labels) <= set(weight_source.classes or [])
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


@by_source
def test_neighbors(weight_source: WeightSource, tiny_run: tuple[Path, Path]) -> None:
    """An image of the indexed folder finds itself first, with cosine 1."""
    query = str(tiny_run[1] / "class1" / "3.png")
    cfg = NeighborsConfig(
        str(weight_source.path), images=[query], index=_folder(tiny_run), k=3, features=FAST
    )
    (hits,) = run_neighbors(cfg)
    first = hits["neighbors"][0]
    assert first["item"] == query and first["score"] == pytest.approx(1.0, abs=1e-4)
    assert first["label"] == "class1" and len(hits["neighbors"]) == 3


@by_source
def test_clusters(weight_source: WeightSource, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = ClustersConfig(
        checkpoint=str(weight_source.path),
        data=_folder(tiny_run),
        clusters=2,
        per_cluster=2,
        out_dir=str(tmp_path / "clusters"),
        results=str(tmp_path),
        features=FeatureConfig(workers=0, progress=False, bn_recalibrate=False),
    )
    if _refused("clusters", weight_source):
        assert not weight_source.has_head
        with pytest.raises(CheckpointError, match="holds no SwAV head"):
            run_clusters(cfg)
        return
    assert weight_source.has_head
    result = run_clusters(cfg)
    assert result["prototypes"] == 10 and sum(result["sizes"]) == result["n_images"] == 36
    assert (tmp_path / "clusters.json").exists() and Path(result["gallery"]).exists()


@by_source
def test_export(weight_source: WeightSource, tmp_path: Path) -> None:
    """safetensors gives back the very tensors; TorchScript computes what the loaded backbone computes; a
    classifier goes along with ``with_head``."""
    weights = load_weights(weight_source.path)
    (st, yaml) = export(weights, tmp_path / "b.safetensors", "safetensors")
    again = load_weights(st)
    assert yaml.exists() and again.head is None and again.classifier is None
    assert again.model == weights.model and again.preprocess == weights.preprocess
    assert again.recipe == weights.recipe
    assert again.backbone.keys() == weight_source.backbone.keys()
    assert all(torch.equal(again.backbone[k], v) for k, v in weight_source.backbone.items())
    (ts,) = export(weights, tmp_path / "b.pt", "torchscript", size=32)  # traced small: any size runs after
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with warnings.catch_warnings():  # TorchScript is deprecated upstream, still what LibTorch loads
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(ts))
        assert_same_features(scripted(x), weights.build_backbone()(x))
    if weight_source.classifier is not None:
        (clf, _) = export(
            load_weights(weight_source.classifier), tmp_path / "c.safetensors", "safetensors", with_head=True
        )
        assert load_weights(clf).classes == weight_source.classes


@by_source
def test_load(weight_source: WeightSource) -> None:
    """``openseer.load``: exactly the source's backbone tensors; embed(); predict() where a classifier is."""
    model = openseer.load(weight_source.path, device="cpu")
    state = model.backbone.state_dict()
    assert state.keys() == weight_source.backbone.keys()
    assert all(torch.equal(state[k], v) for k, v in weight_source.backbone.items())
    images = torch.randint(
        0, 256, (3, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    assert model.embed(images).shape == (3, 368) and model.classes is None
    assert model.config.arch == "regnety_200mf"
    if weight_source.kind in FROM_RUN:  # described by the run's config: its model section, its first crop
        assert isinstance(model.recipe, PretrainConfig) and model.config == model.recipe.model.network()
        assert model.preprocess == model.recipe.preprocess() and model.preprocess.size == 16
    else:
        assert model.recipe is None and model.preprocess == IMPORTED_PREPROCESS
        assert model.config.stem == "imagenet"
    if weight_source.classifier is None:
        return
    classifier = openseer.load(weight_source.classifier, device="cpu")
    assert classifier.classes == weight_source.classes
    top = classifier.predict(images, topk=3)
    assert [len(row) for row in top] == [3, 3, 3]
    assert all(sum(p for _, p in row) == pytest.approx(1.0, abs=1e-5) for row in top)
