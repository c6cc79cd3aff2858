"""Predictions with class names: probabilities, order, inputs, checkpoint round trip, the predict command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import support
import torch
from PIL import Image
from support import make_image_folder

from openseer.cli import main as cli_main
from openseer.eval.classifier import Classifier, load_classifier, save_classifier
from openseer.eval.predict import predict, predict_proba
from openseer.fileio.checkpoint import CheckpointError

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


def tiny_classifier(resize: str = "center_crop") -> Classifier:
    return support.tiny_classifier(CLASSES, resize)


def random_images(n: int, size: int = 24) -> list[Image.Image]:
    g = np.random.default_rng(0)
    return [Image.fromarray(g.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)) for _ in range(n)]


def test_probabilities_sum_to_one_in_descending_order() -> None:
    clf = tiny_classifier()
    images = random_images(3)
    probs = predict_proba(clf, images)
    assert probs.shape == (3, len(CLASSES)) and torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)
    preds = predict(clf, images, topk=4)
    for row, p in zip(preds, probs, strict=True):
        values = [q.probability for q in row]
        assert len(row) == 4 and values == sorted(values, reverse=True)
        assert [q.label for q in row] == [CLASSES[i] for i in p.argsort(descending=True)[:4].tolist()]
    assert len(predict(clf, images[:1], topk=50)[0]) == len(CLASSES)


@pytest.mark.parametrize("resize", ["center_crop", "whole"])
def test_pil_images_and_tensors_give_the_same_answer(resize: str) -> None:
    clf = tiny_classifier(resize)
    images = random_images(2)
    as_uint8 = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    p_pil = predict_proba(clf, images)
    assert torch.allclose(predict_proba(clf, as_uint8), p_pil, atol=1e-4)
    # float input skips the uint8 rounding after resizing: equal up to that rounding
    assert torch.allclose(predict_proba(clf, [as_uint8[0].float() / 255, as_uint8[1]]), p_pil, atol=2e-3)
    gray = predict_proba(clf, [images[0].convert("L")])
    assert torch.allclose(gray.sum(), torch.tensor(1.0), atol=1e-5)


def test_checkpoint_round_trip_keeps_names_and_outputs(tmp_path: Path) -> None:
    clf = tiny_classifier("whole")
    path = save_classifier(clf, tmp_path / "checkpoints", protocol="linear", source=None)
    loaded = load_classifier(tmp_path)
    assert loaded.classes == CLASSES and loaded.resize == "whole" and loaded.preprocess.size == 16
    images = random_images(2)
    assert torch.allclose(predict_proba(loaded, images), predict_proba(clf, images), atol=1e-6)
    assert path.exists()


@pytest.mark.slow
def test_pretraining_checkpoint_is_not_a_classifier(tiny_run) -> None:
    run, _ = tiny_run
    with pytest.raises(CheckpointError, match="holds no classifier"):
        load_classifier(run)


def test_predict_command_table_json_and_errors(tmp_path: Path, capsys) -> None:
    save_classifier(tiny_classifier(), tmp_path / "clf" / "checkpoints", protocol="finetune", source=None)
    images = []
    for i, im in enumerate(random_images(2)):
        images.append(tmp_path / f"{i}.png")
        im.save(images[-1])
    assert cli_main(["predict", str(tmp_path / "clf"), *map(str, images), "topk=3"]) == 0
    table = capsys.readouterr().out
    assert "probability" in table and str(images[0]) in table and len(table.strip().splitlines()) == 7
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code = cli_main(["predict", str(tmp_path / "clf"), str(images[0]), str(tmp_path / "bad.png"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["predictions"][1] == {
        "image": str(tmp_path / "bad.png"),
        "error": "not an image",
    }
    assert len(out["predictions"][0]["predictions"]) == 5
    probs = [p["probability"] for p in out["predictions"][0]["predictions"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    # a labelled set whose classes the classifier does not know: a user error, exit code 2
    other = make_image_folder(tmp_path / "other", classes=2, per_class=2)
    assert cli_main(["predict", str(tmp_path / "clf"), f"data={other}"]) == 2
    assert "does not know: class0, class1" in capsys.readouterr().err
