"""The end of pretraining reads the run's own config (its data, run.knn_k...), which the weights do not carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from openseer.config import dump_yaml, load_config
from openseer.eval.pretraining import run_config
from openseer.fileio.checkpoint import CheckpointError
from openseer.train.config import PretrainConfig


def test_the_run_config_is_the_one_the_run_wrote(tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, ["cpu"], ["run.knn_k=7", "run.knn_temperature=0.2", "data.holdout=0.3"])
    dump_yaml(cfg, tmp_path / "config.yaml")  # as pretraining writes it when it starts
    assert run_config(tmp_path) == cfg
    with pytest.raises(CheckpointError, match="not a pretraining run folder: it has no config.yaml"):
        run_config(tmp_path / "elsewhere")
