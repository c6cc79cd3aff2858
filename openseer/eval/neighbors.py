"""Nearest images of an indexed folder by cosine similarity of backbone features (index features cached)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from openseer.config import ConfigError
from openseer.data.folders import DataError
from openseer.data.images import BadImageError, SkipLog, load_rgb
from openseer.data.labelled import EvalData, load_data
from openseer.eval import cost
from openseer.eval.embed import FeatureConfig, check_embedding, embedder_for
from openseer.eval.features import forward_batches
from openseer.eval.inputs import image_batches


@torch.no_grad()
def nearest(query: torch.Tensor, index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of queries (Q, D) to index features (N, D): the k best (scores (Q, k), rows (Q, k)),
    most similar first."""
    sim = F.normalize(query.float(), dim=1) @ F.normalize(index.float(), dim=1).t()
    return sim.topk(min(k, index.shape[0]), dim=1)


def thumbnails(data: EvalData, rows: list[int], side: int = 64) -> torch.Tensor:
    """uint8 (K, 3, side, side) thumbnails of data rows (grey squares for unreadable files)."""
    out = torch.full((len(rows), 3, side, side), 128, dtype=torch.uint8)
    for i, row in enumerate(rows):
        if data.images is not None:
            img = data.images[row : row + 1].float()
            out[i] = (
                F.interpolate(img, size=(side, side), mode="bilinear", antialias=True)
                .round()
                .clamp(0, 255)[0]
            )
            continue
        try:
            out[i] = image_thumbnail(load_rgb(data.paths[row]), side)
        except BadImageError:
            pass
    return out


def image_thumbnail(img: Image.Image, side: int = 64) -> torch.Tensor:
    """(3, side, side) uint8: the centre square of a PIL image, resized."""
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    img = img.convert("RGB").crop((left, top, left + s, top + s)).resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """uint8 (K,3,H,W) -> one PNG grid with white gutters."""
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


@dataclass
class NeighborsConfig:
    checkpoint: str = ""
    """Weights: a run folder, a ckpt-*.pt, a file written by import-weights or export, or a SEER/VISSL
    or timm checkpoint."""
    images: list[str] = field(default_factory=list)
    """Query image files."""
    index: str = ""
    """Folder (or labelled set) to search; its features are cached."""
    k: int = 10
    """Neighbours per query."""
    random_init: bool = False
    """Use the same network at random initialisation."""
    grid: str | None = None
    """A PNG: each query followed by its neighbours, one row per query."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """How features are computed."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before embedding the index when the estimate (one batch timed, times the batches) is over this many
    minutes; 0 or null: no limit."""

    def validate(self) -> None:
        cost.check_max_minutes(self.max_minutes)
        if not self.checkpoint or not self.index or not self.images:
            raise ConfigError(
                "neighbors needs weights (checkpoint=...), at least one query image and index=FOLDER"
            )
        if self.k < 1:
            raise ConfigError(f"k: got {self.k}, expected >= 1")


def run_neighbors(cfg: NeighborsConfig) -> list[dict]:
    """[{'image', 'neighbors': [{'item', 'score', 'label'?}]}] for each query image."""
    data = load_data(cfg.index, "train", labels="auto")
    embedder, _ = embedder_for(cfg.checkpoint, cfg.features, cfg.random_init)
    check_embedding("neighbors", embedder, data, [data], cfg.max_minutes)
    embedder.prepare(data)
    feats = embedder(data)
    fit = data.fitted(embedder.preprocess)  # queries are fitted as the index images were
    skipped = SkipLog()
    batches = image_batches(cfg.images, fit, cfg.features.batch_size, embedder.device, skipped=skipped)
    query = [f for f, _ in forward_batches(embedder.backbone, batches)]
    if skipped:
        path, reason = skipped.entries[0]
        raise DataError(f"cannot read the query image {path}: {reason}")
    scores, rows = nearest(torch.cat(query), feats.features, cfg.k)
    out = []
    for name, s, r in zip(cfg.images, scores.tolist(), rows.tolist(), strict=True):
        hits = []
        for score, row in zip(s, r, strict=True):
            hit = {"item": feats.items[row], "score": score}
            if feats.labels is not None:
                hit["label"] = feats.classes[int(feats.labels[row])]
            hits.append(hit)
        out.append({"image": name, "neighbors": hits})
    if cfg.grid:
        tiles = []
        for name, r in zip(cfg.images, rows.tolist(), strict=True):
            tiles.append(image_thumbnail(load_rgb(name)).unsqueeze(0))
            tiles.append(thumbnails(data, feats.index[torch.tensor(r)].tolist()))
        save_grid(torch.cat(tiles), Path(cfg.grid), nrow=rows.shape[1] + 1)
    return out


def format_neighbors(result: list[dict]) -> str:
    lines = []
    for q in result:
        lines.append(f"{q['image']}:")
        for rank, hit in enumerate(q["neighbors"], 1):
            label = f"  [{hit['label']}]" if "label" in hit else ""
            lines.append(f"  {rank:>3}  {hit['score']:.4f}  {hit['item']}{label}")
    return "\n".join(lines)
