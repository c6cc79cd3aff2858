"""What a command will cost: the pure decisions (fits, stops, scales), the timer, and every command that embeds or
trains calling them before its long work. Timings never come from the machine: the clock is replaced by one that
advances a fixed amount per reading."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from support import FAST_EVAL, make_image_folder, tiny_classifier_config
from support.dense import FAST_DETECT, make_shapes_coco, random_weights_file

from openseer.cli import main as cli_main
from openseer.config import ConfigError, from_dict
from openseer.eval import cost, detect, embed, finetune, lowshot
from openseer.eval.cost import CostError, Part, decide, scale_runs
from openseer.eval.lowshot import SCRATCH_MIN_STEPS, LowShotConfig
from openseer.eval.split import split_data
from openseer.weights import load_weights

# ============ the pure decisions ============


def test_a_plan_under_the_limit_fits_and_says_what_it_measured() -> None:
    part = Part("embedding photos", 40, "batch", 1.5, "of 256 images at 224 px")
    decision = decide("embed", [part], max_minutes=30)
    assert decision.fits and decision.total == pytest.approx(60.0) and decision.error == ""
    assert decision.lines == [
        "cost: embedding photos: 40 batches of 256 images at 224 px, 1.5 s per batch measured, about 60 s"
    ]


def test_a_plan_over_the_limit_is_refused_naming_the_key_and_the_estimate() -> None:
    parts = [Part("fine-tuning", 6000, "step", 2.0), Part("embedding test", 10, "batch", 3.0)]
    decision = decide("finetune", parts, max_minutes=30, advice=", lower recipe.steps")
    assert not decision.fits
    assert decision.total == pytest.approx(12030.0)
    assert (
        len(decision.lines) == 3
        and decision.lines[-1] == "cost: finetune in all: about 3.3 h (max_minutes=30)"
    )
    assert "finetune would take about 3.3 h" in decision.error
    assert "fine-tuning about 3.3 h; embedding test about 30 s" in decision.error
    assert "over max_minutes=30: raise max_minutes (0: no limit), lower recipe.steps" in decision.error


@pytest.mark.parametrize("limit", [0, None])
def test_no_limit_lets_any_plan_through(limit: float | None) -> None:
    decision = decide("detect", [Part("detection training", 10**6, "step", 100.0)], max_minutes=limit)
    assert decision.fits and decision.lines[0].endswith("about 1157.4 days")


def test_a_negative_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'max_minutes': got -1"):
        decide("knn", [], max_minutes=-1)
    with pytest.raises(ConfigError, match="'max_minutes'"):
        from_dict(LowShotConfig, {"checkpoint": "x", "max_minutes": -5})


def test_scaling_keeps_a_plan_that_fits() -> None:
    assert scale_runs(room=1000, seconds_per_step=1.0, steps=100, runs=4, single_runs=1, min_steps=50) == (
        cost.Scaled(100, False)
    )


def test_scaling_cuts_steps_first_then_the_grid_then_gives_up() -> None:
    # 4 runs of 1500 steps at 1 s: 6000 s; 2000 s leave 500 steps a run, above the floor
    assert scale_runs(2000, 1.0, 1500, runs=4, single_runs=1, min_steps=300) == cost.Scaled(500, False)
    # 400 s: 100 steps a run is below the floor; one run (no grid) gets 400
    assert scale_runs(400, 1.0, 1500, runs=4, single_runs=1, min_steps=300) == cost.Scaled(400, True)
    # one run still far more than allowed: no scaling fits
    assert scale_runs(100, 1.0, 1500, runs=4, single_runs=1, min_steps=300) is None
    assert scale_runs(-5, 1.0, 1500, runs=4, single_runs=1, min_steps=300) is None


# ============ the timer ============


class FakeClock:
    """Advances ``tick`` seconds per reading: every timed interval lasts ``tick``."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def slow_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(1e4)
    monkeypatch.setattr(cost, "clock", clock)
    return clock


def test_time_step_warms_up_untimed_then_averages(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cost, "clock", FakeClock(0.5))
    seconds = cost.time_step(lambda: calls.append("step"), warmup=lambda: calls.append("warm"), repeats=3)
    assert calls == ["warm", "step", "step", "step"] and seconds == pytest.approx(0.5)
    calls.clear()
    monkeypatch.setattr(cost, "clock", FakeClock(60.0))  # one long step is measure enough
    assert cost.time_step(lambda: calls.append("step"), repeats=3) == pytest.approx(60.0)
    assert calls == ["step", "step"]


# ============ the commands ============


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trunk at random initialisation that takes 16-px images."""
    return random_weights_file(tmp_path_factory.mktemp("w") / "trunk.safetensors", tiny_classifier_config())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "labelled", classes=3, per_class=6, size=12)


def _boom(*args: object, **kwargs: object) -> None:
    raise AssertionError("the long work started")


def test_embed_refuses_before_embedding(
    weights: Path,
    folder: Path,
    tmp_path: Path,
    slow_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    monkeypatch.setattr(embed.Embedder, "compute", _boom)
    monkeypatch.setattr(embed.Embedder, "calibrate", _boom)
    args = [
        "embed",
        str(weights),
        f"data={folder}",
        f"out={tmp_path / 'f.safetensors'}",
        "features.batch_size=4",
    ]
    assert cli_main([*args, *FAST_EVAL]) == 2
    err = capsys.readouterr().err
    assert "embed would take about" in err and "raise max_minutes (0: no limit)" in err
    assert not (tmp_path / "f.safetensors").exists()


def test_embed_says_its_estimate_and_proceeds(
    weights: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(cost, "clock", FakeClock(0.25))
    out = tmp_path / "f.safetensors"
    args = ["embed", str(weights), f"data={folder}", f"out={out}", "features.batch_size=4", *FAST_EVAL]
    with caplog.at_level(logging.INFO, logger="openseer.eval.cost"):
        assert cli_main(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "openseer.eval.cost"]
    # 18 images and the BatchNorm re-estimation on them, 4 a batch: 5 + 5 batches
    assert lines == [
        f"cost: embedding {folder}, BatchNorm re-estimation on {folder}: 10 batches of 4 images at "
        "16 px, 0.25 s per batch measured, about 2 s"
    ]
    assert out.exists()
    caplog.clear()
    with caplog.at_level(
        logging.INFO, logger="openseer.eval.cost"
    ):  # cached features: only the re-estimation
        assert cli_main(args) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "openseer.eval.cost"][0].startswith(
        f"cost: embedding BatchNorm re-estimation on {folder}: 5 batches"
    )


@pytest.mark.parametrize("command", ["knn", "linear"])
def test_scoring_commands_refuse_before_embedding(
    command: str, weights: Path, folder: Path, tmp_path: Path, slow_clock, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(embed.Embedder, "compute", _boom)
    monkeypatch.setattr(embed.Embedder, "calibrate", _boom)
    args = [
        command,
        str(weights),
        f"train={folder}",
        f"results={tmp_path}",
        "features.batch_size=4",
        *FAST_EVAL,
    ]
    assert cli_main(args) == 2
    assert f"{command} would take about" in capsys.readouterr().err


def test_finetune_refuses_before_training(
    weights: Path, folder: Path, tmp_path: Path, slow_clock, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(finetune, "fit_classifier", _boom)
    args = [
        "finetune",
        str(weights),
        f"train={folder}",
        f"out_dir={tmp_path / 'ft'}",
        "workers=0",
        "progress=false",
    ]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    # 1500 steps for each of 3 learning rates and the refit, each step "taking" 10,000 s
    assert "finetune would take about" in err and "fine-tuning about 694.4 days" in err
    assert "recipe.lr_factors=[1.0]" in err


def test_detect_refuses_before_training(
    weights: Path, tmp_path: Path, slow_clock, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(detect, "train_detector", _boom)
    shapes = make_shapes_coco(tmp_path / "shapes", images=6, size=48)
    args = ["detect", str(weights), f"train={shapes}", f"out_dir={tmp_path / 'd'}", *FAST_DETECT]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "detect would take about" in err and "detection training about" in err and "max_minutes" in err


def test_predict_refuses_before_predicting(tmp_path: Path, slow_clock, monkeypatch) -> None:
    from support import tiny_classifier

    from openseer.eval import predict

    files = [str(p) for p in sorted(make_image_folder(tmp_path / "f", 1, 5).rglob("*.png"))]
    cfg = predict.PredictConfig(checkpoint="x", images=files, batch_size=2, workers=0)
    clf = tiny_classifier(["a", "b"])
    with pytest.raises(CostError, match="predict would take about .* over max_minutes=30"):
        predict.check_prediction(clf, files, None, cfg)
    assert predict.check_prediction(clf, files[:2], None, cfg) == 0.0  # one batch: nothing timed


class _Started(Exception):
    def __init__(self, recipe: object) -> None:
        self.recipe = recipe


def _lowshot_until_scratch(weights: Path, folder: Path, monkeypatch, **changes: object):  # noqa: ANN202
    """Run lowshot up to the supervised baseline's training, and return the recipe it would train with."""

    def started(make, subset, recipe, *args, **kwargs):  # noqa: ANN001, ANN202
        raise _Started(recipe)

    monkeypatch.setattr(lowshot, "fit_classifier", started)
    values = {
        "checkpoint": str(weights),
        "train": str(folder),
        "fractions": [],
        "per_class": [5],
        "seeds": [0],
        "baselines": ["supervised"],
        "probe": {"epochs": 1},
        "features": {"workers": 0, "progress": False, "bn_recalibrate": False, "batch_size": 256},
        **changes,
    }
    cfg = from_dict(LowShotConfig, values)
    w = load_weights(cfg.checkpoint)
    train, test = split_data(cfg, w)
    with pytest.raises(_Started) as started_with:
        lowshot.lowshot(w, train, test, cfg)
    return started_with.value.recipe


def test_lowshot_scales_the_default_scratch_baseline_to_fit(
    weights: Path, folder: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(cost, "clock", FakeClock(1000.0))
    # embedding train and test: 2 batches, 2000 s; scratch: 4 runs (3 rates + refit) x 1500 steps x 1000 s.
    # Room for 4 runs of 500 steps: 2,000,000 s more
    with caplog.at_level(logging.INFO):
        recipe = _lowshot_until_scratch(weights, folder, monkeypatch, max_minutes=(2000 + 2_000_000) / 60)
    assert recipe.steps == 500 and recipe.lr_factors == [0.3, 1.0, 3.0]
    said = caplog.text
    assert (
        "cost: training from scratch: 6,000 steps" in said
        and "cost: training from scratch: 2,000 steps" in said
    )
    assert "scratch.steps 1500 -> 500" in said and "max_minutes=0" in said
    # room for 402 steps only (the features are cached now: nothing to embed): one run at scratch.lr
    recipe = _lowshot_until_scratch(weights, folder, monkeypatch, max_minutes=(2000 + 400_000) / 60)
    assert recipe.steps == 402 and recipe.lr_factors == [1.0]
    assert SCRATCH_MIN_STEPS <= 402


def test_lowshot_stops_when_scaling_is_not_enough_or_not_allowed(
    weights: Path, folder: Path, monkeypatch
) -> None:
    monkeypatch.setattr(cost, "clock", FakeClock(1000.0))
    with pytest.raises(CostError, match=r"lowshot would take about .*\(baselines=\[random\]\)"):
        _lowshot_until_scratch(weights, folder, monkeypatch, max_minutes=(2000 + 100_000) / 60)
    # steps set by the user are never scaled
    with pytest.raises(CostError, match="over max_minutes"):
        _lowshot_until_scratch(weights, folder, monkeypatch, max_minutes=1000, scratch={"steps": 1000})


def test_lowshot_records_what_was_scaled(weights: Path, folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cost, "clock", FakeClock(1000.0))
    args = [
        "lowshot",
        str(weights),
        f"train={folder}",
        "fractions=[]",
        "per_class=[5]",
        "seeds=[0]",
        "baselines=[supervised]",
        "probe.epochs=1",
        "features.bn_recalibrate=false",
        "features.batch_size=256",
        f"results={tmp_path}",
        f"max_minutes={(2000 + 1000 * 5) / 60}",
        *FAST_EVAL,
    ]
    monkeypatch.setattr(lowshot, "SCRATCH_MIN_STEPS", 5)  # a quick run
    assert cli_main(args) == 0
    result = json.loads((tmp_path / "lowshot.json").read_text())
    assert result["config"]["scratch"]["steps"] == 5
    assert result["config"]["scratch"]["lr_factors"] == [1.0]
    assert "scratch.steps 1500 -> 5" in result["scaled"][0]
    run = result["rows"][1]["cells"]["5/class"]["runs"][0]
    assert run["steps"] == 5 and torch.isfinite(torch.tensor(run["top1"]))
