"""``openseer detect``: the schedule, the order of the batches, the command end to end on a tiny set of shapes
(the result JSON, Mask and Faster R-CNN), its resume after an interruption, and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.dense import FAST_DETECT, make_shapes_coco, random_weights_file

from openseer.cli import main as cli_main
from openseer.data.coco import CocoDetection, read_coco
from openseer.eval import detect
from openseer.eval.detect import DetectRecipe, _flipped, _StepBatches, learning_rate
from openseer.fileio.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_weights_file(tmp_path_factory.mktemp("weights") / "trunk.safetensors")


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return make_shapes_coco(tmp_path / "shapes", images=6, size=48)


def test_learning_rate_warms_up_then_steps_down() -> None:
    recipe = DetectRecipe(warmup_fraction=0.1, warmup_factor=0.001, milestones=[0.5, 0.75], gamma=0.1)
    lr = [learning_rate(1.0, step, 100, recipe) for step in range(100)]
    assert lr[0] == pytest.approx(0.001) and lr[5] == pytest.approx(0.5 * 0.001 + 0.5)
    assert (
        lr[10] == lr[49] == 1.0 and lr[50] == lr[74] == pytest.approx(0.1) and lr[75] == pytest.approx(0.01)
    )
    assert learning_rate(1.0, 0, 100, DetectRecipe(warmup_fraction=0.0)) == 1.0


def test_the_batch_of_a_step_depends_only_on_the_seed_and_the_step() -> None:
    full = list(_StepBatches(n=5, batch_size=2, seed=3, start=0, total=9))
    assert len(full) == 9 and [len(b) for b in full[:3]] == [2, 2, 1]
    for epoch in range(3):
        assert sorted(sum(full[3 * epoch : 3 * epoch + 3], [])) == [0, 1, 2, 3, 4]
    assert full[:3] != full[3:6]  # a new order every epoch
    assert list(_StepBatches(n=5, batch_size=2, seed=3, start=4, total=9)) == full[4:]
    assert list(_StepBatches(n=5, batch_size=2, seed=4, start=0, total=9)) != full


def test_a_flip_moves_the_boxes_with_the_masks(shapes: Path) -> None:
    image, target = CocoDetection(read_coco(shapes), masks=True)[0]  # type: ignore[misc]
    flipped, moved = _flipped(image, target)
    assert torch.equal(flipped, image.flip(-1)) and torch.equal(moved["masks"], target["masks"].flip(-1))
    width = image.shape[-1]
    assert torch.equal(moved["boxes"][:, [2, 0]], width - target["boxes"][:, [0, 2]])
    assert (
        torch.equal(moved["boxes"][:, 1::2], target["boxes"][:, 1::2]) and moved["labels"] is target["labels"]
    )


def _detect(weights: Path, train: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "detect",
        str(weights),
        f"train={train}",
        f"out_dir={tmp_path / 'detect'}",
        f"results={tmp_path / 'eval'}",
        *FAST_DETECT,
        *extra,
    ]


def test_detect_trains_mask_rcnn_and_writes_box_and_mask_ap(
    weights: Path, shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(_detect(weights, shapes, tmp_path, "recipe.steps=2", "test_fraction=0.34")) == 0
    printed = capsys.readouterr().out
    assert "Mask R-CNN on regnety_200mf (pretrained trunk): 2 steps (batch 2" in printed
    assert "2 test images, box AP" in printed and "2 test images, mask AP" in printed
    result = json.loads((tmp_path / "eval" / "detect.json").read_text())
    assert result["detector"] == "Mask R-CNN" and (result["n_train"], result["n_test"]) == (4, 2)
    for kind in ("bbox", "segm"):
        assert 0.0 <= result[f"{kind}_ap"] <= 1.0 and result[kind]["AP"] == result[f"{kind}_ap"]
        assert {"AP50", "AP75", "APs", "AR100"} <= set(result[kind])
    assert result["categories"] == ["square", "disc"] and result["steps"] == 2
    assert result["train_images_per_second"] > 0 and result["test_images_per_second"] > 0
    assert [p["step"] for p in result["history"]] == [1, 2] and "loss_mask" in result["history"][0]
    state = load_checkpoint(Path(result["detector_checkpoint"]))
    assert state["kind"] == "detector" and state["step"] == 2 and state["masks"] is True


def test_boxes_only_data_trains_faster_rcnn(weights: Path, tmp_path: Path) -> None:
    train = make_shapes_coco(tmp_path / "train", images=3, size=48, masks=False)
    test = make_shapes_coco(tmp_path / "test", images=2, size=48, masks=False, seed=1)
    assert cli_main(_detect(weights, train, tmp_path, "recipe.steps=1", f"test={test}", "init=random")) == 0
    result = json.loads((tmp_path / "eval" / "detect-scratch.json").read_text())
    assert result["detector"] == "Faster R-CNN" and result["model"] == "random"
    assert "segm_ap" not in result and 0.0 <= result["bbox_ap"] <= 1.0 and result["n_test"] == 2


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(
    weights: Path,
    shapes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = ["recipe.steps=4", "checkpoint_every=1", "keep_checkpoints=5"]
    straight = tmp_path / "straight"
    assert cli_main(_detect(weights, shapes, straight, *steps)) == 0
    save = detect.save_checkpoint

    def interrupted(state: dict, folder: Path, step: int, keep: int = 3) -> Path:
        path = save(state, folder, step, keep)
        if step == 2:
            raise KeyboardInterrupt  # as Ctrl-C right after the checkpoint of step 2
        return path

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(detect, "save_checkpoint", interrupted)
    assert cli_main(_detect(weights, shapes, resumed, *steps)) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(resumed / "detect" / "checkpoints")][-1] == "ckpt-00000002.pt"
    assert not (resumed / "eval" / "detect.json").exists()
    monkeypatch.setattr(detect, "save_checkpoint", save)
    assert cli_main([*_detect(weights, shapes, resumed, *steps), "--resume"]) == 0
    final = {
        run: load_checkpoint(latest_checkpoint(run / "detect" / "checkpoints")) for run in (straight, resumed)
    }
    assert final[straight]["step"] == final[resumed]["step"] == 4
    for key, value in final[straight]["model"].items():
        assert torch.equal(final[resumed]["model"][key], value), key
    assert final[resumed]["history"] == final[straight]["history"]
    results = [json.loads((run / "eval" / "detect.json").read_text()) for run in (straight, resumed)]
    assert results[0]["bbox"] == pytest.approx(results[1]["bbox"])


def test_resume_refuses_a_checkpoint_of_other_data(
    weights: Path, shapes: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    assert cli_main(_detect(weights, shapes, tmp_path, "recipe.steps=1")) == 0
    other = json.loads(shapes.read_text())
    other["categories"][1]["name"] = "circle"
    shapes.write_text(json.dumps(other))
    assert cli_main([*_detect(weights, shapes, tmp_path, "recipe.steps=1"), "--resume"]) == 2
    assert "categories of the training set differ from those of the checkpoint" in capsys.readouterr().err


def test_unreadable_images_are_skipped_and_listed(weights: Path, shapes: Path, tmp_path: Path) -> None:
    """One unreadable training image and one unreadable test image: the run finishes, lists both with their
    reason, and scores the readable test images."""
    train, test = read_coco(shapes).split(0.34, seed=0)  # the split the command makes
    broken = sorted([train.images[0].path.name, test.images[0].path.name])
    for name in broken:
        (shapes.parent / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert cli_main(_detect(weights, shapes, tmp_path, "recipe.steps=3", "test_fraction=0.34")) == 0
    result = json.loads((tmp_path / "eval" / "detect.json").read_text())
    assert sorted(Path(path).name for path, _ in result["skipped_images"]) == broken
    assert all(reason for _, reason in result["skipped_images"])
    assert result["n_test"] == len(test) - 1


def _not_json(path: Path) -> None:
    path.write_text("{not json")


def _outside(path: Path) -> None:
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [40, 40, 20, 20]
    path.write_text(json.dumps(data))


def _missing_image(path: Path) -> None:
    (path.parent / "img0.png").unlink()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_not_json, "is not valid JSON"),
        (_outside, "reaches outside the image"),
        (_missing_image, "1 of 6 images missing under"),
    ],
)
def test_bad_data_stops_the_command_before_any_training(
    weights: Path,
    shapes: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spoil,
    message: str,  # noqa: ANN001
) -> None:
    spoil(shapes)
    assert cli_main(_detect(weights, shapes, tmp_path, "recipe.steps=1")) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "detect").exists()


def test_a_test_set_with_other_categories_is_refused(
    weights: Path, shapes: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    other = make_shapes_coco(tmp_path / "other", images=2, size=48)
    data = json.loads(other.read_text())
    data["categories"].append({"id": 9, "name": "star"})
    other.write_text(json.dumps(data))
    assert cli_main(_detect(weights, shapes, tmp_path, f"test={other}")) == 2
    assert "the test set's categories [3, 7, 9] are not the training set's [3, 7]" in capsys.readouterr().err


def test_config_errors_name_the_key(weights: Path, shapes: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert cli_main(_detect(weights, shapes, tmp_path, "model.anchor_sizes=[32,64]")) == 2
    assert "model.anchor_sizes" in capsys.readouterr().err
    assert cli_main(["detect", str(weights)]) == 2
    assert "detect needs weights and a training set" in capsys.readouterr().err
