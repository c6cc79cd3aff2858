"""Fine-tuning: batches, end-to-end run with class names, exact resume, class checks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

from openseer.cli import main as cli_main
from openseer.data.folders import DataError
from openseer.data.labelled import EvalData, load_data
from openseer.eval import finetune
from openseer.eval.classifier import evaluate_classifier, load_classifier
from openseer.eval.finetune import fit_classifier, new_classifier, pick_lr, train_classifier
from openseer.eval.recipe import RecipeConfig
from openseer.fileio.checkpoint import list_checkpoints, load_checkpoint
from openseer.weights import load_weights

NO_PROGRESS = ["workers=0", "progress=false"]


def in_memory(folder: Path, per_class: int) -> EvalData:
    """The first ``per_class`` images of each class of the tiny folder, decoded into memory."""
    files = load_data(str(folder)).subset(torch.arange(36).view(3, 12)[:, :per_class].flatten())
    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in files.paths]
    )
    return EvalData("mem", files.targets, files.classes, images=images)


@pytest.mark.slow
def test_step_budget_is_honoured_whatever_the_subset_size(tiny_run) -> None:
    run, folder = tiny_run
    weights = load_weights(run)
    model = weights.build_backbone()
    recipe = RecipeConfig(steps=7, batch_size=8, lr_factors=[1.0], log_points=3)
    count = [0]
    handle = register_optimizer_step_post_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        for per_class in (1, 3, 12):  # 3 images (one batch of 3), 9 (a batch of 8 and one left over), 36
            data = in_memory(folder, per_class)
            count[0] = 0
            stats = train_classifier(
                new_classifier(copy.deepcopy(model), weights, data), data, recipe, workers=0
            )
            assert count[0] == 7 and stats["steps"] == 7, per_class
            # logged every ceil(7 / 3) = 3 steps and at the end; loss and batch accuracy means in between
            assert [p["step"] for p in stats["history"]] == [3, 6, 7]
            assert all(math.isfinite(p["loss"]) and 0 <= p["train_top1"] <= 1 for p in stats["history"])
    finally:
        handle.remove()


def test_pick_lr_takes_the_best_validation_score() -> None:
    stub = {0.01: (0.5, -1.0), 0.1: (0.8, -0.6), 1.0: (0.7, -0.4)}
    assert pick_lr([1.0, 0.1, 0.01], stub.__getitem__) == (0.1, stub)
    # equal top-1: the lower validation loss; equal scores: the smaller rate
    assert pick_lr([0.01, 0.1], {0.01: (0.8, -0.9), 0.1: (0.8, -0.5)}.__getitem__)[0] == 0.1
    assert pick_lr([0.1, 0.01], lambda lr: (0.8, -0.5))[0] == 0.01


@pytest.mark.slow
@pytest.mark.parametrize("refit", [True, False])
def test_fit_classifier_chooses_on_validation_then_refits_or_keeps(
    tiny_run, monkeypatch, refit: bool
) -> None:
    """Grid runs train on the subset minus its validation split and are scored there; the stub scorer makes
    lr 0.1 the best; with refit a last run trains at 0.1 on everything, without it the 0.1 run is kept."""
    run, folder = tiny_run
    weights = load_weights(run)
    model = weights.build_backbone()
    data = in_memory(folder, 5)  # 15 images: 20% of each class = 1 per class held out
    calls, made = [], []

    def fake_train(clf, train, recipe, *args, lr=None, val=None, **kwargs):
        calls.append((lr, len(train), None if val is None else len(val)))
        clf.trained_lr = lr
        return {"steps": 3, "lr": lr, "batch_size": 8, "history": [{"step": 3, "loss": lr}], "notes": {}}

    def make():
        made.append(new_classifier(copy.deepcopy(model), weights, data))
        return made[-1]

    monkeypatch.setattr(finetune, "train_classifier", fake_train)
    monkeypatch.setattr(
        finetune, "validation_scores", lambda clf, *a, **k: ({0.1: 0.9}.get(clf.trained_lr, 0.5), 1.0)
    )
    recipe = RecipeConfig(lr=0.1, lr_factors=[0.3, 1.0, 3.0], refit=refit)
    clf, stats = fit_classifier(make, data, recipe, workers=0)
    assert calls[:3] == [(0.03, 12, 3), (0.1, 12, 3), (0.3, 12, 3)]
    sel = stats["selection"]
    assert (
        sel["val_top1"] == {"0.03": 0.5, "0.1": 0.9, "0.3": 0.5} and sel["n_val"] == 3 and stats["lr"] == 0.1
    )
    assert set(sel["curves"]) == {"0.03", "0.1", "0.3"} and sel["refit"] is refit
    if refit:
        assert calls[3:] == [(0.1, 15, None)] and clf is made[3]
    else:
        assert len(calls) == 3 and clf is made[1]


@pytest.mark.slow
def test_in_memory_finetune_learns_and_is_exactly_resumable(tiny_run, tmp_path: Path) -> None:
    run, folder = tiny_run
    data = in_memory(folder, 8)  # 8 per class
    recipe = RecipeConfig(steps=6, batch_size=12, lr=0.5, lr_factors=[1.0])

    def fresh():
        weights = load_weights(run)
        model = weights.build_backbone()
        return new_classifier(model, weights, data, seed=0)

    clf = fresh()
    stats = train_classifier(clf, data, recipe, ckpt_dir=tmp_path / "a", workers=0, keep=5)
    assert stats["steps"] == 6 and [p["step"] for p in stats["history"]] == [1, 2, 3, 4, 5, 6]
    assert evaluate_classifier(clf, data, workers=0)[0] >= 0.9
    final = load_checkpoint(list_checkpoints(tmp_path / "a")[-1])["model"]
    # interrupted after epoch 2 of 3: resume from that checkpoint on a fresh classifier
    (tmp_path / "b").mkdir()
    ckpt = next(p for p in list_checkpoints(tmp_path / "a") if p.name.endswith("00000004.pt"))
    for suffix in (".pt", ".sha256"):
        (tmp_path / "b" / ckpt.with_suffix(suffix).name).write_bytes(ckpt.with_suffix(suffix).read_bytes())
    resumed = fresh()
    again = train_classifier(resumed, data, recipe, ckpt_dir=tmp_path / "b", resume=True, workers=0)
    for key, value in final.items():
        assert torch.equal(resumed.state_dict()[key], value), key
    # the curve carries over the interruption: the same logged points, the same losses (same computation)
    assert [p["step"] for p in again["history"]] == [p["step"] for p in stats["history"]]
    assert [p["loss"] for p in again["history"]] == pytest.approx([p["loss"] for p in stats["history"]])


@pytest.mark.slow
def test_finetune_command_keeps_class_names_and_checks_them_on_resume(fresh_run, tmp_path, capsys) -> None:
    run, folder = fresh_run
    argv = ["finetune", str(run), f"train={folder}", "recipe.epochs=1", "recipe.batch_size=9", *NO_PROGRESS]
    assert cli_main(argv) == 0
    result = json.loads((run / "eval" / "finetune.json").read_text())
    assert result["steps"] == 3 and result["model"] == "pretrained" and result["n_test"] == 9
    # the learning rate chosen among three on a validation split of the 27 training images (2 per class)
    sel = result["selection"]
    assert sel["lrs"] == [0.00375, 0.0125, 0.0375] and sel["n_val"] == 6 and sel["refit"]
    assert result["lr"] in sel["lrs"] and set(sel["val_top1"]) == {"0.00375", "0.0125", "0.0375"}
    clf = load_classifier(run / "finetune")
    assert clf.classes == ["class0", "class1", "class2"] and not clf.head_bn and clf.resize == "center_crop"
    # resuming on a labelled set with other classes is a user error (exit 2)
    other = folder.parent / "other"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        for i in range(3):
            (other / name / f"{i}.png").write_bytes((folder / "class0" / f"{i}.png").read_bytes())
    capsys.readouterr()
    assert cli_main(["finetune", str(run), f"train={other}", "--resume", *NO_PROGRESS]) == 2
    assert "differ from those of the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_supervised_from_scratch_writes_its_own_result(fresh_run, tmp_path) -> None:
    run, folder = fresh_run
    argv = [
        "finetune",
        str(run),
        f"train={folder}",
        "recipe.epochs=1",
        "recipe.batch_size=27",
        "init=random",
    ]
    assert cli_main([*argv, *NO_PROGRESS]) == 0
    result = json.loads((run / "eval" / "finetune-scratch.json").read_text())
    assert result["model"] == "supervised" and result["steps"] == 1
    assert (run / "finetune-scratch" / "checkpoints").is_dir()


@pytest.mark.slow
def test_evaluating_a_classifier_on_unknown_classes_is_refused(tiny_run) -> None:
    run, folder = tiny_run
    weights = load_weights(run)
    model = weights.build_backbone()
    data = load_data(str(folder))
    two = data.subset(torch.nonzero(data.targets < 2).flatten())
    two.classes = ["class0", "class1"]
    clf = new_classifier(model, weights, two)
    with pytest.raises(DataError, match="does not know: class2"):
        evaluate_classifier(clf, data, workers=0)
