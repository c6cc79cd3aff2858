"""The evaluation sub-commands: registration, typed configs and their errors, kNN, features shared via the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import FAST_EVAL

from openseer.cli import build_parser
from openseer.cli import main as cli_main
from openseer.config import load_config
from openseer.eval.embed import FeatureConfig
from openseer.eval.knn import KnnConfig
from openseer.eval.lowshot import LowShotConfig

COMMANDS = ["embed", "knn", "linear", "finetune", "lowshot", "predict", "neighbors", "clusters", "report"]


def test_every_command_is_registered_with_help(capsys) -> None:
    help_text = build_parser().format_help()
    for name in COMMANDS:
        assert name in help_text
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--set" not in out and "features.workers: int = 2" in out


def test_config_layers_and_errors() -> None:
    cfg = load_config(KnnConfig, [], ["temperature=0.5", "features.workers=0"], {"checkpoint": "x", "k": 7})
    assert (cfg.checkpoint, cfg.k, cfg.temperature) == ("x", 7, 0.5)
    assert (
        isinstance(cfg.features, FeatureConfig)
        and cfg.features.workers == 0
        and cfg.features.batch_size == 256
    )
    # a key inside a section keeps the section's other defaults (here the from-scratch learning rate)
    low = load_config(LowShotConfig, [], ["checkpoint=x", "scratch.epochs=2"])
    assert low.scratch.lr == 0.4 and low.scratch.epochs == 2.0
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        load_config(KnnConfig, [], ["checkpoint=x", "temprature=0.5"])


def test_user_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert cli_main(["linear", str(tmp_path), "probe.lrss=[0.1]"]) == 2
    assert "did you mean 'probe.lrs'" in capsys.readouterr().err
    assert cli_main(["knn", str(tmp_path), "k=0"]) == 2
    assert cli_main(["knn", str(tmp_path / "none")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_knn_then_linear_share_cached_features(fresh_run, tmp_path: Path, capsys, cache_dir: Path) -> None:
    run, folder = fresh_run
    assert cli_main(["knn", str(run), f"train={folder}", "k=5", "--json", *FAST_EVAL]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["k"] == 5 and result["temperature"] == 0.1 and 0 <= result["top1"] <= result["top5"] <= 1
    assert json.loads((run / "eval" / "knn.json").read_text())["top1"] == result["top1"]
    cached = sorted((cache_dir / "features").glob("*.safetensors"))
    assert len(cached) == 2  # train and test features
    assert (
        cli_main(["linear", str(run), f"train={folder}", "probe.epochs=2", "save=false", *FAST_EVAL]) == 0
    )
    assert sorted((cache_dir / "features").glob("*.safetensors")) == cached
    assert cli_main(["knn", str(run), f"train={folder}", "k=5", "model=random", *FAST_EVAL]) == 0
    assert "random" in capsys.readouterr().out
    assert json.loads((run / "eval" / "knn-random.json").read_text())["model"] == "random"
    # an explicit test set with a class the training set lacks cannot be scored
    two = tmp_path / "two"
    for name in ("class0", "class1"):
        shutil.copytree(folder / name, two / name)
    capsys.readouterr()
    assert cli_main(["knn", str(run), f"train={two}", f"test={folder}", *FAST_EVAL]) == 2
    assert "does not know: class2" in capsys.readouterr().err
