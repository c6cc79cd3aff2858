"""Nearest images by cosine similarity: the pure ranking and `openseer neighbors` on a cached index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import FAST_EVAL

from openseer.cli import main as cli_main
from openseer.eval.neighbors import nearest


def test_nearest_ranks_by_cosine_not_length() -> None:
    index = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    scores, rows = nearest(torch.tensor([[2.0, 0.0], [0.0, 0.5]]), index, k=3)
    assert rows.tolist() == [[0, 1, 2], [2, 1, 0]]
    assert scores[0, 0] == pytest.approx(1.0) and scores[0, 1] == pytest.approx(10 / 101**0.5)
    assert nearest(torch.ones(1, 2), index, k=10)[1].shape == (1, 4)


@pytest.mark.slow
def test_neighbors_command_finds_the_query_itself_first(tiny_run, tmp_path: Path, capsys, cache_dir) -> None:
    run, folder = tiny_run
    query = folder / "class1" / "3.png"
    argv = ["neighbors", str(run), str(query), f"index={folder}", "k=4", "--json"]
    assert cli_main([*argv, f"grid={tmp_path / 'grid.png'}", *FAST_EVAL]) == 0
    (hits,) = json.loads(capsys.readouterr().out)
    first = hits["neighbors"][0]
    assert first["item"] == str(query) and first["score"] == pytest.approx(1.0, abs=1e-4)
    assert first["label"] == "class1" and len(hits["neighbors"]) == 4
    scores = [h["score"] for h in hits["neighbors"]]
    assert scores == sorted(scores, reverse=True)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.width > grid.height  # one row: the query and its 4 neighbours
    cached = list((cache_dir / "features").glob("*.safetensors"))
    assert len(cached) == 1
    assert cli_main(["neighbors", str(run), str(query), f"index={folder}", *FAST_EVAL]) == 0
    assert list((cache_dir / "features").glob("*.safetensors")) == cached  # the index was not embedded again
    assert "class1/3.png" in capsys.readouterr().out
