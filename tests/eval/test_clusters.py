"""What the prototypes group: assignment maths and the grids, JSON and gallery of `openseer clusters`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from support import FAST_EVAL

from openseer.cli import main as cli_main
from openseer.eval.clusters import assign, cluster_sizes, largest, most_confident, prototype_scores
from openseer.models import SwAVHead


def test_assignment_sizes_and_confidence() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.8, 0.0, 0.1], [0.5, 0.4, 0.0]])
    cluster, confidence = assign(scores)
    assert cluster.tolist() == [0, 1, 0, 0] and confidence.tolist() == pytest.approx([0.9, 0.7, 0.8, 0.5])
    sizes = cluster_sizes(cluster, 4)
    assert sizes.tolist() == [3, 1, 0, 0] and largest(sizes, 3) == [0, 1]  # empty clusters are never drawn
    assert most_confident(cluster, confidence, 0, 2).tolist() == [0, 2]


def test_prototype_scores_are_cosines() -> None:
    torch.manual_seed(0)
    head = SwAVHead(12, [16], 8, 5, use_bn=True).eval()
    with torch.no_grad():
        head.prototypes.weight.mul_(3)  # not unit length: the scores must still be cosines
    feats = torch.randn(6, 12)
    scores = prototype_scores(head, feats, chunk=4)
    # torch's own cosine of each projection with each (scaled) prototype
    expected = F.cosine_similarity(head.projection(feats)[:, None], head.prototypes.weight[None], dim=-1)
    assert torch.allclose(scores, expected, atol=1e-5) and scores.abs().max() <= 1 + 1e-5


@pytest.mark.slow
def test_clusters_command_writes_grids_json_and_gallery(fresh_run, tmp_path: Path) -> None:
    run, folder = fresh_run
    argv = ["clusters", str(run), f"data={folder}", "clusters=3", "per_cluster=4", *FAST_EVAL]
    assert cli_main(argv) == 0
    result = json.loads((run / "eval" / "clusters.json").read_text())
    assert sum(result["sizes"]) == result["n_images"] == 36 and result["prototypes"] == 10
    assert result["empty"] == 10 - result["used"] == sum(s == 0 for s in result["sizes"])
    sizes = [c["size"] for c in result["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and 1 <= len(sizes) <= 3
    gallery = (run / "eval" / "clusters" / "index.html").read_text()
    for c in result["clusters"]:
        assert c["majority_label"].startswith("class") and 0 < c["majority_share"] <= 1
        with Image.open(c["png"]) as grid:
            assert grid.width > 0 and grid.height > 0
        assert Path(c["png"]).name in gallery
        assert len(c["items"]) == min(4, c["size"])
