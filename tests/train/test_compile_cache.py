"""Inductor's caches under openseer's cache folder, and the marks of which steps they hold."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from openseer.train import compile_cache as cc


def test_inductor_caches_persist_under_the_openseer_cache(tmp_path: Path, monkeypatch):
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert cc.persist_compile_caches(tmp_path) == tmp_path / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice wins
    assert cc.persist_compile_caches(tmp_path) == tmp_path / "mine"


def test_torchs_own_tmp_default_in_the_environment_is_replaced(tmp_path: Path, monkeypatch):
    # torch writes its /tmp default into the environment the first time anything asks for the folder
    # (importing torchvision does); that is not the user's choice, and a reboot empties it
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where torch's default would go
    cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == os.path.abspath(default_cache_dir())
    assert cc.persist_compile_caches(tmp_path) == tmp_path / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


def test_a_compile_is_warm_for_its_own_step_until_the_caches_are_cleared(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert not cc.compile_cache_warm("cpu a", tmp_path)
    cc.mark_compiled("cpu a", tmp_path)
    assert cc.compile_cache_warm("cpu a", tmp_path)
    assert not cc.compile_cache_warm("cpu b", tmp_path)  # another config's step is compiled anew
    shutil.rmtree(tmp_path / "inductor")  # the user cleared the compile caches
    assert not cc.compile_cache_warm("cpu a", tmp_path)
