"""What the SwAV prototypes group: each image goes to its highest-scoring prototype.

Scores are those the SwAV head computes during pretraining, the cosine between the L2-normalised projection z
and each unit-length prototype c_k. For the largest clusters, a PNG grid shows the images scored most
confidently; cluster sizes and the number of prototypes no image picks (empty clusters) tell how evenly the
prototypes are used.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from openseer.config import ConfigError
from openseer.data.labelled import EvalData
from openseer.eval import cost
from openseer.eval.embed import Embedder, FeatureConfig, check_embedding
from openseer.eval.neighbors import save_grid, thumbnails
from openseer.eval.report import figures_html, summary_html
from openseer.eval.split import resolve_data
from openseer.fileio.atomic import atomic_write_text
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.head import SwAVHead
from openseer.weights import Weights, load_weights


@torch.no_grad()
def prototype_scores(head: SwAVHead, features: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Backbone features (N, D) -> prototype scores (N, K) = z C^T with unit-length z and prototypes."""
    head = head.eval()
    protos = F.normalize(head.prototypes.weight.float(), dim=1)
    out = []
    for start in range(0, len(features), chunk):
        z = F.normalize(head.projection(features[start : start + chunk].float()), dim=1)
        out.append(z @ protos.t())
    return torch.cat(out) if out else torch.empty(0, protos.shape[0])


def assign(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cluster (N,) = argmax prototype, confidence (N,) = its score) from scores (N, K)."""
    confidence, cluster = scores.max(dim=1)
    return cluster, confidence


def cluster_sizes(cluster: torch.Tensor, num_prototypes: int) -> torch.Tensor:
    """(K,) images per prototype."""
    return torch.bincount(cluster, minlength=num_prototypes)


def largest(sizes: torch.Tensor, n: int) -> list[int]:
    """Ids of the n largest non-empty clusters, largest first (ties: lower id)."""
    order = sorted(range(len(sizes)), key=lambda k: (-int(sizes[k]), k))
    return [k for k in order[:n] if sizes[k] > 0]


def most_confident(cluster: torch.Tensor, confidence: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Rows of cluster k, highest confidence first, at most m."""
    rows = torch.nonzero(cluster == k).flatten()
    return rows[confidence[rows].argsort(descending=True)[:m]]


@dataclass
class ClustersConfig:
    checkpoint: str = ""
    """A pretraining run folder or checkpoint: its SwAV prototypes define the clusters."""
    data: str | None = None
    """Images to assign: builtin, a folder, an ImageFolder tree or a CSV of path,label; null: the data the weights
    were pretrained on (the part pretraining trained on), else builtin."""
    clusters: int = 12
    """How many of the largest clusters get a grid."""
    per_cluster: int = 32
    """Images per grid, most confident first."""
    thumbnail: int = 48
    """Side of each thumbnail in pixels."""
    max_images: int | None = None
    """Assign a seeded random subset of this many images (null: all)."""
    out_dir: str | None = None
    """Grids and gallery (default RUN/eval/clusters)."""
    results: str | None = None
    """Folder of clusters.json; null: RUN/eval."""
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(bn_recalibrate=False))
    """BatchNorm statistics kept as trained by default: the head was trained on those features."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before embedding when the estimate (one batch timed, times the batches) is over this many minutes;
    0 or null: no limit. `max_images` assigns a subset instead."""

    def validate(self) -> None:
        cost.check_max_minutes(self.max_minutes)
        if not self.checkpoint:
            raise ConfigError("clusters needs a pretraining checkpoint (it uses the SwAV prototypes)")
        if self.clusters < 1 or self.per_cluster < 1 or self.thumbnail < 8:
            raise ConfigError("clusters and per_cluster must be >= 1, thumbnail >= 8")


def run_clusters(cfg: ClustersConfig, weights: Weights | None = None, data: EvalData | None = None) -> dict:
    """Assign, draw the grids and the HTML gallery; writes RUN/eval/clusters.json and returns it.

    ``weights`` and ``data``: already loaded (the end of pretraining passes the run's weights and the images it
    trained on, as the decoded-image cache holds them); by default read from ``cfg.checkpoint`` and ``cfg.data``.
    """
    weights = weights if weights is not None else load_weights(cfg.checkpoint)
    if weights.head is None:
        raise CheckpointError(
            f"{weights.source} holds no SwAV head: clusters needs the prototypes of a pretraining run "
            "(or of imported weights that include the head)"
        )
    embedder = Embedder.from_weights(weights, cfg.features)
    data = data if data is not None else resolve_data(cfg.data, weights)
    if cfg.max_images is not None and len(data) > cfg.max_images:
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: cfg.max_images]
        data = data.subset(pick.sort().values, f"{data.name} ({cfg.max_images} sampled)")
    check_embedding("clusters", embedder, data, [data], cfg.max_minutes)
    embedder.prepare(data)
    feats = embedder(data)
    scores = prototype_scores(weights.build_head(), feats.features)
    cluster, confidence = assign(scores)
    k = scores.shape[1]
    sizes = cluster_sizes(cluster, k)
    run_dir = weights.run_dir
    out_dir = Path(cfg.out_dir) if cfg.out_dir else run_dir / "eval" / "clusters"
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = []
    for rank, c in enumerate(largest(sizes, cfg.clusters)):
        rows = most_confident(cluster, confidence, c, cfg.per_cluster)
        png = save_grid(
            thumbnails(data, feats.index[rows].tolist(), cfg.thumbnail), out_dir / f"cluster-{c:05d}.png"
        )
        entry = {
            "prototype": c,
            "rank": rank + 1,
            "size": int(sizes[c]),
            "png": str(png),
            "items": [feats.items[r] for r in rows.tolist()],
            "confidence": [round(float(confidence[r]), 4) for r in rows.tolist()],
        }
        if feats.labels is not None:
            counts = Counter(int(y) for y in feats.labels[cluster == c].tolist())
            label, n = counts.most_common(1)[0]
            entry["majority_label"], entry["majority_share"] = feats.classes[label], n / int(sizes[c])
        shown.append(entry)
    result = {
        "kind": "clusters",
        "checkpoint": weights.source,
        "data": data.name,
        "n_images": len(feats.index),
        "prototypes": k,
        "empty": int((sizes == 0).sum()),
        "used": int((sizes > 0).sum()),
        "sizes": sizes.tolist(),
        "clusters": shown,
    }
    result["gallery"] = str(write_gallery(result, out_dir / "index.html"))
    folder = Path(cfg.results) if cfg.results else run_dir / "eval"
    atomic_write_text(folder / "clusters.json", json.dumps(result, indent=1))
    return result


def write_gallery(result: dict, path: Path) -> Path:
    """An HTML page of the cluster grids (images referenced next to it)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>openseer clusters</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:1em;"
        "vertical-align:top}figcaption{max-width:420px}</style></head><body>",
        f"<h1>Prototype clusters of {html.escape(result['data'])}</h1>",
        summary_html(result),
        figures_html(result, lambda c: Path(c["png"]).relative_to(path.parent).as_posix()),
        "</body></html>",
    ]
    path.write_text("\n".join(parts))
    return path


def format_clusters(result: dict) -> str:
    lines = [
        f"{result['n_images']} images of {result['data']} over {result['prototypes']} prototypes: "
        f"{result['used']} used, {result['empty']} empty",
        f"{'rank':>4} {'prototype':>9} {'size':>7}  majority",
    ]
    for c in result["clusters"]:
        majority = f"{100 * c['majority_share']:.0f}% {c['majority_label']}" if "majority_label" in c else ""
        lines.append(f"{c['rank']:>4} {c['prototype']:>9} {c['size']:>7}  {majority}")
    lines.append(f"gallery: {result['gallery']}")
    return "\n".join(lines)
