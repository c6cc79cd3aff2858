"""Pooled backbone features of an image set, cached on disk and reused by every evaluation.

A data spec (``builtin``, ``builtin:test``, an ImageFolder tree, a CSV of ``path,label``, a folder or list of
unlabelled images) becomes an :class:`EvalData`; an :class:`Embedder` (a backbone plus its preprocessing and an
identity) turns it into :class:`Features`. The cache key hashes the weights, the data, the image size and the
normalisation, so any command that needs the same features finds them instead of recomputing them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from openseer.config import ConfigError
from openseer.data.cache import default_cache_dir
from openseer.data.folders import DataError
from openseer.data.images import SkipLog
from openseer.data.labelled import FORMAT_VERSION, EvalData
from openseer.data.preprocess import Preprocess
from openseer.distributed import resolve_device
from openseer.eval import cost
from openseer.eval.features import forward_batches, recalibrate_batchnorm
from openseer.eval.inputs import image_batches
from openseer.eval.split import resolve_data
from openseer.fileio.atomic import atomic_path, atomic_write_text
from openseer.weights import Weights, load_weights

log = logging.getLogger(__name__)


# ============ features ============


@dataclass
class FeatureConfig:
    """How features are computed; shared by every evaluation command."""

    batch_size: int = 256
    """Images per forward pass."""
    workers: int = 2
    """DataLoader worker processes that decode image files (0: in this process)."""
    device: str = "auto"
    """'auto' (this process's GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:1' ..."""
    bn_recalibrate: bool = True
    """Re-estimate BatchNorm statistics on un-augmented training images first (as pretraining's kNN does); always
    on for a random initialisation."""
    calibration_images: int = 4096
    """Training images (a seeded sample) that re-estimate the BatchNorm statistics."""
    cache: bool = True
    """Reuse features stored under the openseer cache folder (``$OPENSEER_CACHE/features``)."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> None:
        if self.batch_size < 1 or self.workers < 0 or self.calibration_images < 1:
            raise ConfigError(
                "features.batch_size and features.calibration_images must be >= 1, workers >= 0"
            )


@dataclass
class Features:
    """Features (M, D) float32 of the M readable rows ``index`` (M,) of a data set, with their labels (M,);
    ``skipped``: the files of the set that could not be read, with reasons."""

    features: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    items: list[str]
    skipped: SkipLog = field(default_factory=SkipLog)


def model_digest(module: nn.Module) -> str:
    """sha256 over the layers as printed (kinds, strides, groups: what the weights do not show, such as
    ``model.output_stride``) and every parameter and buffer (names, dtypes, shapes, values): the model's
    identity."""
    h = hashlib.sha256(repr(module).encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Tensors as one safetensors file, written atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


class Embedder:
    """A backbone with the preprocessing that goes with it, and an identity that keys the feature cache.

    Images become inputs through :func:`openseer.eval.inputs.image_batches` with ``preprocess`` (the
    :class:`~openseer.data.preprocess.Preprocess` stored with the weights).
    """

    def __init__(
        self,
        backbone: nn.Module,
        preprocess: Preprocess,
        cfg: FeatureConfig | None = None,
        channels_last: bool = False,
        identity: str | None = None,
    ) -> None:
        self.cfg = cfg or FeatureConfig()
        self.device = resolve_device(self.cfg.device)
        self.backbone = backbone.to(self.device)  # eval mode is set (and restored) around each use
        self.preprocess = preprocess
        self.channels_last = channels_last
        self._identity = identity
        self.calibrated_on: str | None = None
        self.random_init = False

    @property
    def identity(self) -> str:
        """What the features depend on besides the data: the layers and weights (hashed on first use, as
        hashing a large model takes seconds) and the BatchNorm calibration."""
        if self._identity is None:
            self._identity = model_digest(self.backbone)
        return self._identity

    @classmethod
    def from_weights(
        cls, weights: Weights, features: FeatureConfig | None = None, random_init: bool = False, seed: int = 0
    ) -> Embedder:
        """The backbone of ``weights`` (or, with ``random_init``, the same architecture drawn with ``seed``)
        with the preprocessing stored with the weights."""
        backbone = weights.random_backbone(seed) if random_init else weights.build_backbone()
        embedder = cls(backbone, weights.preprocess, features, weights.model.channels_last)
        embedder.random_init = random_init
        return embedder

    def inputs(self, data: EvalData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised inputs (B, 3, size, size) on this device and their rows (B,) of ``data``, unreadable files
        left out."""
        cfg = self.cfg
        return image_batches(
            data, self.preprocess, cfg.batch_size, self.device, cfg.workers, self.channels_last
        )

    def calibrate(self, data: EvalData) -> None:
        """Re-estimate BatchNorm statistics on up to ``calibration_images`` images of ``data`` (a seeded sample,
        as pretraining's kNN does), on a copy of the backbone; the identity records on what."""
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[
            : self.cfg.calibration_images
        ]
        identity = self._calibrated_identity(data)
        self.backbone = copy.deepcopy(self.backbone)
        recalibrate_batchnorm(self.backbone, (x for x, _ in self.inputs(data.subset(pick))))
        self.backbone.eval()
        self.calibrated_on = data.key()
        self._identity = identity

    def _calibrated_identity(self, data: EvalData) -> str:
        # of the weights as given: stable whatever the float details of re-estimation
        return hashlib.sha256(
            f"{self.identity}|bn:{data.key()}:{self.cfg.calibration_images}".encode()
        ).hexdigest()

    def _calibrates(self) -> bool:
        return self.cfg.bn_recalibrate or self.random_init

    def prepare(self, train: EvalData) -> None:
        """Re-estimate BatchNorm on the training images when configured, and always at random initialisation,
        whose initial statistics make every image look alike."""
        if self._calibrates():
            self.calibrate(train)

    def estimate(
        self, train: EvalData | None, sets: Sequence[EvalData], what: str = "embedding"
    ) -> cost.Part | None:
        """The embedding still to do, timed on one batch of real inputs: the BatchNorm re-estimation on ``train``
        that :meth:`prepare` will make (None: no preparation), then every set of ``sets`` not in the cache. None
        when there is nothing to compute, or a single batch (timing it would cost as much as the work)."""
        identity = self.identity
        calibrating = train is not None and self._calibrates() and self.calibrated_on is None
        if calibrating:
            identity = self._calibrated_identity(train)
        todo = [data for data in sets if not (self.cfg.cache and self.cache_path(data, identity).exists())]
        counts = [len(data) for data in todo]
        if calibrating:
            counts.append(min(len(train), self.cfg.calibration_images))
        bs = self.cfg.batch_size
        batches = sum(math.ceil(n / bs) for n in counts)
        if batches <= 1:
            return None
        sample = (todo or [train])[0]
        x, _ = next(iter(self.inputs(sample.subset(torch.arange(min(bs, len(sample)))))))
        seconds = cost.batch_seconds(self.backbone, x)
        names = [data.name for data in todo] + (
            [f"BatchNorm re-estimation on {train.name}"] if calibrating else []
        )
        detail = f"of {len(x)} images at {x.shape[-1]} px"
        return cost.Part(f"{what} {', '.join(names)}", batches, "batch", seconds, detail)

    def cache_path(self, data: EvalData, identity: str | None = None) -> Path:
        blob = json.dumps(
            {
                "version": FORMAT_VERSION,
                "model": identity or self.identity,
                "data": data.key(),
                "preprocess": data.fitted(self.preprocess).to_dict(),
            }
        )
        return default_cache_dir() / "features" / f"{hashlib.sha256(blob.encode()).hexdigest()}.safetensors"

    def __call__(self, data: EvalData) -> Features:
        """Features of every readable image of ``data``, from the cache when present."""
        path = self.cache_path(data)
        if self.cfg.cache and path.exists():
            try:
                stored = load_file(path)
                feats, index = stored["features"], stored["index"]
                log.info("features of %s from cache %s", data.name, path)
                return self._wrap(data, feats, index)
            except Exception as err:  # noqa: BLE001 - any damage means: recompute
                log.warning("ignoring unreadable feature cache %s (%s)", path, err)
        feats, index = self.compute(data)
        if self.cfg.cache:
            try:
                save_tensors({"features": feats, "index": index}, path, {"data": data.name})
            except OSError as err:
                log.warning("could not write feature cache %s: %s", path, err)
        return self._wrap(data, feats, index)

    def compute(self, data: EvalData) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (M, D), index (M,)) without the cache, with a progress bar when configured."""
        batches = forward_batches(self.backbone, self.inputs(data))
        bar = None
        if self.cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(data), desc=f"embedding {data.name}", unit="img", dynamic_ncols=True, leave=False
            )
        feats, index = [], []
        for f, idx in batches:
            feats.append(f)
            index.append(idx)
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        if not feats:
            raise DataError(f"none of the {len(data)} images of {data.name} could be read")
        return torch.cat(feats), torch.cat(index).long()

    def _wrap(self, data: EvalData, feats: torch.Tensor, index: torch.Tensor) -> Features:
        labels = data.targets[index] if data.targets is not None else None
        return Features(feats, index, labels, list(data.classes), data.items(index), data.unreadable(index))


def check_embedding(
    command: str,
    embedder: Embedder,
    train: EvalData | None,
    sets: Sequence[EvalData],
    max_minutes: float | None,
) -> float:
    """Log what embedding ``sets`` (after preparing on ``train``) will cost and stop with a
    :class:`~openseer.eval.cost.CostError` when it is over ``max_minutes``; the estimated seconds."""
    part = embedder.estimate(train, sets)
    advice = ", embed fewer images, or compute on a GPU (features.device)"
    return cost.check(command, [part] if part else [], max_minutes, advice)


# ============ weights ============


def embedder_for(
    checkpoint: str | Path, features: FeatureConfig, random_init: bool = False, seed: int = 0
) -> tuple[Embedder, Weights]:
    """(Embedder, the weights it was built from) for any weights file :func:`load_weights` reads. Call
    ``embedder.prepare(train)`` before embedding, to re-estimate BatchNorm statistics where that is due."""
    weights = load_weights(checkpoint)
    return Embedder.from_weights(weights, features, random_init, seed), weights


# ============ the embed command ============


@dataclass
class EmbedConfig:
    checkpoint: str = ""
    """Weights: a run folder, a ckpt-*.pt, a file written by import-weights or export, or a SEER/VISSL
    or timm checkpoint."""
    data: str | None = None
    """Images to embed: builtin, builtin:test, a folder, an ImageFolder tree or a CSV of path,label; null: the data
    the weights were pretrained on (their run's holdout.json), else builtin."""
    split: Literal["train", "test"] = "train"
    """Part of builtin, or of the pretraining data when `data` is null: the part pretraining trained on, or the
    part it held out."""
    out: str = "features.safetensors"
    """.safetensors (+ .json index); a name ending in .npy also writes the features as a NumPy array."""
    random_init: bool = False
    """Embed with the same network at random initialisation."""
    seed: int = 0
    """Seed of the random initialisation."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """How features are computed: batch size, workers, device, BatchNorm re-estimation, cache."""
    max_minutes: float | None = cost.DEFAULT_MAX_MINUTES
    """Stop before embedding when the estimate (one batch timed, times the batches) is over this many minutes;
    0 or null: no limit."""

    def validate(self) -> None:
        if not self.checkpoint:
            raise ConfigError("embed needs weights (checkpoint=RUN_FOLDER_OR_FILE)")
        cost.check_max_minutes(self.max_minutes)


def save_features(feats: Features, out: Path, meta: dict) -> list[Path]:
    """Write ``features`` (and ``labels``) as safetensors plus a JSON index; also ``.npy`` when ``out`` ends so.

    Returns the files written.
    """
    out = out.expanduser()
    base = out.with_suffix("") if out.suffix in (".npy", ".safetensors", ".json") else out
    tensors = {"features": feats.features.float()}
    if feats.labels is not None:
        tensors["labels"] = feats.labels.long()
    st_path = base.with_name(base.name + ".safetensors")
    save_tensors(tensors, st_path, {k: str(v) for k, v in meta.items()})
    index = {**meta, "count": len(feats.items), "dim": int(feats.features.shape[1]), "classes": feats.classes}
    index["items"] = feats.items
    index["skipped"] = [{"path": path, "reason": reason} for path, reason in feats.skipped.entries]
    json_path = base.with_name(base.name + ".json")
    atomic_write_text(json_path, json.dumps(index, indent=1))
    written = [st_path, json_path]
    if out.suffix == ".npy":
        np.save(out, feats.features.float().numpy())
        written.append(out)
        if feats.labels is not None:
            labels_path = base.with_name(base.name + ".labels.npy")
            np.save(labels_path, feats.labels.numpy())
            written.append(labels_path)
    return written


def run_embed(cfg: EmbedConfig) -> tuple[Features, list[Path]]:
    """Embed ``cfg.data`` with the checkpoint's backbone and write the features; returns them and the files."""
    embedder, weights = embedder_for(cfg.checkpoint, cfg.features, cfg.random_init, cfg.seed)
    data = resolve_data(cfg.data, weights, cfg.split)
    check_embedding("embed", embedder, data, [data], cfg.max_minutes)
    embedder.prepare(data)
    feats = embedder(data)
    meta = {
        "checkpoint": weights.source,
        "model": "random" if cfg.random_init else "pretrained",
        "data": data.name,
        "image_size": embedder.preprocess.size,
    }
    return feats, save_features(feats, Path(cfg.out), meta)
