"""Fine-tuning: schedule, batches, end-to-end run with class names, exact resume, class checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openseer.cli import main as cli_main
from openseer.data.folders import DataError
from openseer.data.labelled import EvalData, load_data
from openseer.eval.finetune import RecipeConfig, new_classifier, plan, step_lr, train_classifier
from openseer.eval.predict import evaluate_classifier, load_classifier
from openseer.fileio.checkpoint import list_checkpoints, load_checkpoint
from openseer.testing import FAST_EVAL
from openseer.weights import load_weights


def test_step_decay_at_milestones() -> None:
    assert [step_lr(1.0, s, [3, 5], 0.1) for s in range(6)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01])


def test_seer_recipe_defaults_and_plan() -> None:
    r = RecipeConfig()
    assert (r.lr, r.momentum, r.weight_decay, r.epochs) == (0.0125, 0.9, 1e-4, 35.0)
    assert r.milestones == pytest.approx([30 / 35])
    assert plan(1000, r) == (256, 4, 140)  # 3 full batches and one of 232
    assert plan(257, r) == (256, 1, 35)  # a last batch of one image is dropped (BatchNorm)
    assert plan(10, RecipeConfig(epochs=2)) == (10, 1, 2)  # the batch is capped at the set


@pytest.mark.slow
def test_in_memory_finetune_learns_and_is_exactly_resumable(tiny_run, tmp_path: Path) -> None:
    run, folder = tiny_run
    files = load_data(str(folder)).subset(torch.arange(36).view(3, 12)[:, :8].flatten())  # 8 per class
    images = torch.stack(
        [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in files.paths]
    )
    data = EvalData("mem", files.targets, files.classes, images=images)
    recipe = RecipeConfig(epochs=3, batch_size=12, lr=0.5)

    def fresh():
        weights = load_weights(run)
        return new_classifier(weights.build_backbone(), weights.config, data, seed=0)

    clf = fresh()
    stats = train_classifier(clf, data, recipe, ckpt_dir=tmp_path / "a", workers=0, keep=5)
    assert stats["steps"] == 6 and len(stats["history"]) == 3
    assert evaluate_classifier(clf, data, workers=0)[0] >= 0.9
    final = load_checkpoint(list_checkpoints(tmp_path / "a")[-1])["model"]
    # interrupted after epoch 2 of 3: resume from that checkpoint on a fresh classifier
    (tmp_path / "b").mkdir()
    ckpt = next(p for p in list_checkpoints(tmp_path / "a") if p.name.endswith("00000004.pt"))
    for suffix in (".pt", ".sha256"):
        (tmp_path / "b" / ckpt.with_suffix(suffix).name).write_bytes(ckpt.with_suffix(suffix).read_bytes())
    resumed = fresh()
    train_classifier(resumed, data, recipe, ckpt_dir=tmp_path / "b", resume=True, workers=0)
    for key, value in final.items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.slow
def test_finetune_command_keeps_class_names_and_checks_them_on_resume(fresh_run, tmp_path, capsys) -> None:
    run, folder = fresh_run
    argv = ["finetune", str(run), "--train", str(folder), "--epochs", "1", "--batch-size", "9", *FAST_EVAL]
    assert cli_main(argv) == 0
    result = json.loads((run / "eval" / "finetune.json").read_text())
    assert result["steps"] == 3 and result["model"] == "pretrained" and result["n_test"] == 9
    clf = load_classifier(run / "finetune")
    assert clf.classes == ["class0", "class1", "class2"] and not clf.head_bn and clf.resize == "center_crop"
    # resuming on a labelled set with other classes is a user error (exit 2)
    other = folder.parent / "other"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        for i in range(3):
            (other / name / f"{i}.png").write_bytes((folder / "class0" / f"{i}.png").read_bytes())
    capsys.readouterr()
    assert cli_main(["finetune", str(run), "--train", str(other), "--resume", *FAST_EVAL]) == 2
    assert "differ from those of the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_supervised_from_scratch_writes_its_own_result(fresh_run, tmp_path) -> None:
    run, folder = fresh_run
    argv = [
        "finetune",
        str(run),
        "--train",
        str(folder),
        "--epochs",
        "1",
        "--batch-size",
        "27",
        "--from-scratch",
    ]
    assert cli_main([*argv, *FAST_EVAL]) == 0
    result = json.loads((run / "eval" / "finetune-scratch.json").read_text())
    assert result["model"] == "supervised" and result["steps"] == 1
    assert (run / "finetune-scratch" / "checkpoints").is_dir()


@pytest.mark.slow
def test_evaluating_a_classifier_on_unknown_classes_is_refused(tiny_run) -> None:
    run, folder = tiny_run
    weights = load_weights(run)
    data = load_data(str(folder))
    two = data.subset(torch.nonzero(data.targets < 2).flatten())
    two.classes = ["class0", "class1"]
    clf = new_classifier(weights.build_backbone(), weights.config, two)
    with pytest.raises(DataError, match="does not know: class2"):
        evaluate_classifier(clf, data, workers=0)
