"""Data specs, feature extraction, the feature cache and `openseer embed` (its features against a reference
computed without openseer's loader, embedder or preprocessing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from safetensors.torch import load_file
from support import FAST_EVAL, assert_same_features, make_image_folder

from openseer.cli import main as cli_main
from openseer.data.folders import DataError, split_per_class
from openseer.data.labelled import EvalData, align_classes, load_data, train_test_data
from openseer.data.preprocess import Preprocess
from openseer.eval.embed import EmbedConfig, Embedder, FeatureConfig, model_digest, run_embed
from openseer.eval.split import SplitConfig, resolve_data, split_data
from openseer.fileio.checkpoint import latest_checkpoint
from openseer.models import build_backbone
from openseer.weights import load_weights

# ============ data specs ============


def test_folder_with_class_subfolders_is_labelled(tmp_path: Path) -> None:
    data = load_data(str(make_image_folder(tmp_path / "f", classes=2, per_class=3)))
    assert data.classes == ["class0", "class1"] and data.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.paths is not None and len(data) == 6 and data.images is None


def test_csv_and_lists(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "f", classes=2, per_class=2)
    (tmp_path / "l.csv").write_text("path,label\nf/class0/0.png,zebra\nf/class1/1.png,ant\n")
    data = load_data(str(tmp_path / "l.csv"))
    assert data.classes == ["ant", "zebra"] and data.targets.tolist() == [1, 0]
    (tmp_path / "l.txt").write_text(f"{folder}/class0/0.png\n{folder}/class0/1.png\n")
    unlabelled = load_data(str(tmp_path / "l.txt"))
    assert not unlabelled.labelled and len(unlabelled) == 2
    with pytest.raises(DataError, match="no labels"):
        load_data(str(tmp_path / "l.txt"), labels="required")
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "missing"))


def test_builtin_test_split() -> None:
    data = load_data("builtin", split="test")
    assert (
        data.name == "builtin:test"
        and data.images.dtype == torch.uint8
        and data.images.shape[1:] == (3, 28, 28)
    )
    assert len(data.classes) == 10 and len(data.targets) == len(data.images)


def test_align_classes_remaps_and_rejects_unknown() -> None:
    data = EvalData(
        "x", torch.tensor([0, 1, 1]), ["b", "c"], images=torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    )
    aligned = align_classes(data, ["a", "b", "c"])
    assert aligned.classes == ["a", "b", "c"] and aligned.targets.tolist() == [1, 2, 2]
    with pytest.raises(DataError, match="does not know: c"):
        align_classes(data, ["a", "b"])


@pytest.mark.slow
def test_default_test_split_is_what_pretraining_held_out(tiny_run) -> None:
    """Every scoring command (knn, linear, finetune, lowshot) and embed split=test read the split the pretraining
    run wrote into its folder: its held-out images are the test set, all the others the training set."""
    run, folder = tiny_run
    record = json.loads((run / "holdout.json").read_text())
    held = [folder / p for p in record["test"]["paths"]]
    assert record["source"] == str(folder) and len(held) == 9  # data.holdout 0.25 of 3 x 12 images
    weights = load_weights(run)
    for cfg in (SplitConfig(str(run)), SplitConfig(str(run), train=str(folder))):
        train, test = split_data(cfg, weights)
        assert test.paths == held and test.targets.tolist() == record["test"]["labels"]
        assert sorted(train.paths + test.paths) == sorted(load_data(str(folder)).paths)
    assert resolve_data(None, weights, "test").paths == held
    assert resolve_data(None, weights, "train").paths == train.paths
    # another split of the same data only when asked for
    _, other = split_data(SplitConfig(str(run), train=str(folder), split_seed=1), weights)
    assert other.paths != held and len(other) == 3  # 0.1 of each class


def test_a_new_split_of_another_set(tmp_path: Path) -> None:
    """A labelled set the weights were not pretrained on is split with `holdout` and `split_seed`."""
    folder = make_image_folder(tmp_path / "f", classes=3, per_class=8)
    full = load_data(str(folder))
    train, test = train_test_data(str(folder), None, holdout=0.25, seed=3)
    tr, te = split_per_class(full.targets, 0.25, seed=3)
    assert train.paths == [full.paths[i] for i in tr] and test.paths == [full.paths[i] for i in te]
    assert not set(train.paths) & set(test.paths)


# ============ features and cache ============


def _embedder(cfg: FeatureConfig | None = None, seed: int = 0) -> Embedder:
    torch.manual_seed(seed)
    return Embedder(
        build_backbone("regnety_200mf", stem="small"), Preprocess(16, (0.5,) * 3, (0.25,) * 3), cfg
    )


def test_features_are_cached_by_weights_data_and_size(
    monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    images = torch.randint(
        0, 256, (10, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    data = EvalData("mem", torch.arange(10) % 2, ["a", "b"], images=images)
    emb = _embedder(FeatureConfig(batch_size=4, progress=False))
    first = emb(data)
    assert first.features.shape == (10, 368) and first.labels.tolist() == data.targets.tolist()
    assert len(list((cache_dir / "features").glob("*.safetensors"))) == 1

    def boom(_data: EvalData) -> None:
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(emb, "compute", boom)
    again = emb(data)
    assert torch.equal(again.features, first.features)
    # other pixels, another size or other weights are other entries
    other = EvalData("mem", data.targets, data.classes, images=images.flip(0))
    assert emb.cache_path(other) != emb.cache_path(data)
    assert _embedder(seed=1).cache_path(data) != emb.cache_path(data)
    emb.preprocess = Preprocess(20, (0.5,) * 3, (0.25,) * 3)
    assert emb.cache_path(data) != _embedder().cache_path(data)


def test_model_digest_sees_every_value() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    before = model_digest(net)
    net[1].running_mean[0] += 1e-6
    assert model_digest(net) != before


def test_model_digest_sees_a_stride_the_weights_do_not_show() -> None:
    """The same weights with the last stage unstrided (model.output_stride) give other features."""
    strided = build_backbone("regnety_200mf", "small")
    unstrided = build_backbone("regnety_200mf", "small", output_stride=8)
    unstrided.load_state_dict(strided.state_dict())
    assert model_digest(unstrided) != model_digest(strided)


def test_random_init_features_are_told_apart_after_bn_recalibration(tmp_path: Path) -> None:
    """At random init BN's (0, 1) statistics make images look alike; recalibrated, they differ."""
    data = load_data(str(make_image_folder(tmp_path / "f", classes=3, per_class=4)))
    emb = _embedder(FeatureConfig(workers=0, progress=False, cache=False))
    emb.random_init = True
    emb.prepare(data)
    f = emb(data).features
    assert f.std(dim=0).mean() > 1e-3


# ============ the embed command ============


@pytest.mark.slow
def test_embed_command_writes_safetensors_json_and_npy(tiny_run, tmp_path: Path) -> None:
    run, folder = tiny_run
    out = tmp_path / "feats.npy"
    features = FeatureConfig(workers=0, progress=False, bn_recalibrate=False)
    run_embed(EmbedConfig(checkpoint=str(run), data=str(folder), out=str(out), features=features))
    tensors = load_file(tmp_path / "feats.safetensors")
    index = json.loads((tmp_path / "feats.json").read_text())
    assert tensors["features"].shape == (36, 368) and tensors["labels"].shape == (36,)
    assert index["classes"] == ["class0", "class1", "class2"] and len(index["items"]) == 36
    assert index["items"][0].endswith("class0/0.png")
    assert np.allclose(np.load(out), tensors["features"].numpy())
    # the reference, without openseer's loader, embedder or preprocessing: the checkpoint's backbone tensors in a
    # freshly built trunk, on the files resized as documented (shorter side to 16 / 0.875 = 18 px, centre 16 px,
    # the ImageNet mean and std of the run's config)
    state = torch.load(latest_checkpoint(run / "checkpoints"), weights_only=True)["model"]
    backbone = build_backbone("regnety_200mf", stem="small")
    backbone.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    )
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    images = []
    for item in index["items"]:
        x = TF.to_dtype(TF.to_image(Image.open(item).convert("RGB")), torch.float32, scale=True)
        x = TF.center_crop(TF.resize(x, [18], antialias=True), [16, 16])
        images.append(TF.normalize(x, mean, std))
    with torch.no_grad():
        expected = backbone.eval()(torch.stack(images))
    assert_same_features(tensors["features"], expected)


@pytest.mark.slow
def test_embed_errors_exit_2(tiny_run, tmp_path: Path, capsys) -> None:
    run, _ = tiny_run
    assert cli_main(["embed", str(run), f"data={tmp_path / 'nothing'}", *FAST_EVAL]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["embed", str(tmp_path / "nocheckpoint"), "data=builtin", *FAST_EVAL]) == 2
