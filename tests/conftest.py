"""Fixtures shared by the whole suite: an isolated cache folder for every test, a tiny labelled image folder and
a 2-step pretraining run on it (made once per test process). The config keys that keep evaluation commands fast
are openseer.testing.FAST_EVAL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from openseer.testing import make_image_folder, tiny_overrides


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own OPENSEER_CACHE (decoded images, features): no test sees another's cache."""
    monkeypatch.setenv("OPENSEER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, image folder) of a 2-step pretraining on 36 images of 3 classes; shared, do not modify."""
    from openseer.config import load_config
    from openseer.train.config import PretrainConfig
    from openseer.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("tiny")
    folder = make_image_folder(root / "imgs")
    old = os.environ.get("OPENSEER_CACHE")
    os.environ["OPENSEER_CACHE"] = str(root / "cache")
    try:
        overrides = tiny_overrides(folder, root / "run", run__max_steps=2, run__evaluate=False)
        pretrain(load_config(PretrainConfig, [], overrides))
    finally:
        if old is None:
            os.environ.pop("OPENSEER_CACHE", None)
        else:
            os.environ["OPENSEER_CACHE"] = old
    return root / "run", folder


@pytest.fixture
def fresh_run(tiny_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the tiny run, for tests that write results into it."""
    run, folder = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, folder
