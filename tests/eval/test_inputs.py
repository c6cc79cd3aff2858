"""The one input path: every form of an image gives the same network input, every entry point the same features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import assert_same_features, randomize_batchnorm, tiny_classifier, tiny_classifier_config
from support.photos import (
    MEAN_TOLERANCE,
    P99_TOLERANCE,
    grey_level_differences,
    photo_jpeg,
    record_decodes,
)

import openseer
from openseer.config import to_dict
from openseer.data import folders
from openseer.data.images import SkipLog, load_rgb
from openseer.data.labelled import EvalData
from openseer.data.preprocess import Preprocess
from openseer.eval.embed import Embedder, FeatureConfig
from openseer.eval.inputs import image_batches
from openseer.eval.predict import predict_proba
from openseer.fileio.checkpoint import save_checkpoint
from openseer.models import build_model

PREPROCESS = Preprocess(16, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))


def _picture(seed: int = 0, size: tuple[int, int] = (37, 29)) -> torch.Tensor:
    """uint8 (3, H, W) noise, not square, so that a centre crop and a whole-image resize differ."""
    return torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _forms(u8: torch.Tensor, folder: Path) -> dict[str, object]:
    """One picture as a file, a PIL image, a uint8 tensor, a float tensor and a one-image batch."""
    pil = Image.fromarray(u8.permute(1, 2, 0).numpy())
    pil.save(folder / "picture.png")
    return {
        "path": folder / "picture.png",
        "str": str(folder / "picture.png"),
        "pil": pil,
        "uint8": u8,
        "float": u8.float() / 255,
        "batch": u8[None],
        "list": [u8],
    }


def _inputs(images: object, preprocess: Preprocess = PREPROCESS, **kw: object) -> torch.Tensor:
    return torch.cat([x for x, _ in image_batches(images, preprocess, **kw)])


@pytest.mark.parametrize("resize", ["center_crop", "whole"])
def test_every_form_of_an_image_is_the_same_input(tmp_path: Path, resize: str) -> None:
    preprocess = PREPROCESS.with_resize(resize)
    forms = _forms(_picture(), tmp_path)
    reference = _inputs(forms["uint8"], preprocess)
    assert reference.shape == (1, 3, 16, 16) and type(reference) is torch.Tensor
    for name, images in forms.items():
        # float input skips the uint8 rounding of a decoded file: equal up to that rounding
        torch.testing.assert_close(_inputs(images, preprocess), reference, atol=1e-4, rtol=0, msg=name)
    cropping = _inputs(forms["uint8"], PREPROCESS.with_resize("whole" if resize == "center_crop" else "center_crop"))
    assert (cropping - reference).abs().max() > 0.1  # the resize mode does matter for this picture


def test_batches_keep_positions_and_skip_unreadable_files(tmp_path: Path) -> None:
    forms = _forms(_picture(), tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    skipped = SkipLog()
    items = [forms["path"], tmp_path / "broken.png", forms["pil"], tmp_path / "missing.jpg", forms["float"]]
    out = list(image_batches(items, PREPROCESS, batch_size=2, skipped=skipped))
    rows = torch.cat([r for _, r in out])
    assert rows.tolist() == [0, 2, 4]
    assert [Path(p).name for p, _ in skipped.entries] == ["broken.png", "missing.jpg"]
    x = torch.cat([x for x, _ in out])
    torch.testing.assert_close(x[0], x[1], atol=1e-4, rtol=0)
    # a tensor batch comes in slices, each with its positions
    batch = torch.stack([_picture(s, (20, 20)) for s in range(5)])
    assert [r.tolist() for _, r in image_batches(batch, PREPROCESS, batch_size=2)] == [[0, 1], [2, 3], [4]]
    assert list(image_batches([], PREPROCESS)) == []


def test_what_is_not_an_image_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot use a float"):
        list(image_batches([tmp_path / "never-read.png", 3.5], PREPROCESS))
    with pytest.raises(ValueError, match="must be"):
        list(image_batches(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), PREPROCESS))
    with pytest.raises(ValueError, match="must be"):
        list(image_batches([torch.zeros(5, 8, 8)], PREPROCESS))


def test_grey_images_become_three_channels(tmp_path: Path) -> None:
    grey = _picture()[:1]
    three = _inputs(grey.expand(3, -1, -1))
    for images in (grey, grey[0], grey[None], Image.fromarray(grey[0].numpy())):
        torch.testing.assert_close(_inputs(images), three)


def test_a_sets_images_held_in_memory_are_resized_whole(tmp_path: Path) -> None:
    """In-memory sets (built-in data, the decoded-image cache) hold squares of the whole image: fitted whole,
    files of the same set as the weights' preprocessing says."""
    square = torch.stack([_picture(s, (24, 24)) for s in range(3)])
    in_memory = EvalData("squares", images=square)
    assert in_memory.fitted(PREPROCESS).resize == "whole"
    torch.testing.assert_close(_inputs(in_memory), _inputs(square, PREPROCESS.with_resize("whole")))
    paths = []
    for i, image in enumerate(square):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    on_disk = EvalData("files", paths=paths)
    assert on_disk.fitted(PREPROCESS) == PREPROCESS
    torch.testing.assert_close(_inputs(on_disk), _inputs(square))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a checkpoint of a small model (nothing trained)."""
    cfg = tiny_classifier_config()
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(cfg.model), seed=1)  # as trained: features that differ by image
    folder = tmp_path_factory.mktemp("run")
    save_checkpoint({"config": to_dict(cfg), "model": model.state_dict()}, folder / "checkpoints", 1)
    return folder


def test_every_entry_point_gives_the_same_features(run_dir: Path, tmp_path: Path) -> None:
    """The Python API (embed, predict), the feature extractor of every command (embed, knn, linear, lowshot,
    clusters, neighbors' index) and a classifier's predictions: the same picture as a file, a PIL image, a uint8
    tensor or a float tensor gives the same features and probabilities."""
    forms = _forms(_picture(3), tmp_path)
    model = openseer.load(run_dir, device="cpu")
    reference = model.embed(forms["uint8"])
    for images in forms.values():
        assert_same_features(model.embed(images), reference)
    features = FeatureConfig(workers=0, progress=False, cache=False)
    embedder = Embedder(model.backbone, model.preprocess, features)
    assert_same_features(embedder(EvalData("files", paths=[forms["path"]])).features, reference)
    clf = tiny_classifier(["a", "b", "c"])
    probs = predict_proba(clf, forms["uint8"])
    for name, images in forms.items():
        torch.testing.assert_close(predict_proba(clf, images), probs, atol=1e-4, rtol=0, msg=name)
    with pytest.raises(ValueError, match="cannot read image .*missing.png"):
        predict_proba(clf, [forms["pil"], tmp_path / "missing.png"])


def test_pil_images_of_any_mode(tmp_path: Path) -> None:
    rgb = np.asarray(Image.fromarray(_picture().permute(1, 2, 0).numpy()))
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    torch.testing.assert_close(_inputs(rgba), _inputs(Image.fromarray(rgb)))


@pytest.mark.parametrize(("resize", "side"), [("center_crop", 110), ("whole", 96)])
def test_a_large_photo_is_decoded_no_larger_than_its_resize_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resize: str, side: int
) -> None:
    """A camera JPEG is decoded at reduced size (never below the side the resize brings it to) and gives the
    input of its full decode within the reduced decode's tolerance."""
    preprocess = Preprocess(96, resize=resize)
    assert preprocess.resize_side == side
    path = photo_jpeg(tmp_path / "camera.jpg", 2400, 1800, seed=4, orientation=6)
    calls = record_decodes(monkeypatch, folders)
    reduced = _inputs([path], preprocess)
    assert len(calls) == 1 and calls[0].min_side == side
    assert min(calls[0].size) >= side and max(calls[0].size) <= 2400 // 8  # through the draft, 1/8 here
    full = _inputs([load_rgb(path)], preprocess)  # the whole photo, decoded at full size
    mean, p99 = grey_level_differences(reduced[0], full[0], preprocess.std)
    assert mean <= MEAN_TOLERANCE and p99 <= P99_TOLERANCE, (mean, p99)
