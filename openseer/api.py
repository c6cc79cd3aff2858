"""openseer from Python: pretrain, load, embed, predict.

A two-step run on the built-in data, then features for images (this example runs as a test; a real run would
set ``run.budget_minutes`` or ``optim.epochs`` instead of ``run.max_steps``):

>>> import tempfile, torch, openseer
>>> out = tempfile.mkdtemp()
>>> result = openseer.pretrain("cpu", ["run.max_steps=2", "optim.batch_size=32"], run__out_dir=out,
...                            run__knn_at_end=False, run__progress=False, run__tensorboard=False)
>>> result.steps
2
>>> model = openseer.load(out)                   # a run folder, a checkpoint, an imported/exported file
>>> images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
>>> model.embed(images).shape                    # (N, D): pooled backbone features
torch.Size([4, 368])
>>> model.classes is None                        # a pretraining checkpoint has no classifier...
True
>>> model.predict(images)                        # ...so predict() says so
Traceback (most recent call last):
...
openseer.train.checkpoint.CheckpointError: ... holds no classifier ...

``embed`` and ``predict`` take PIL images, file paths, uint8 tensors (0..255) or float tensors (0..1), one or a
list, or a batch tensor (N, 3, H, W); each image gets the evaluation transform (``model.transform``: resize the
shorter side, centre crop to the training crop size, normalise; classifiers trained on whole small images
resize the whole image instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn
from torchvision.transforms import v2

from openseer.config import ConfigError, deep_merge, from_dict, parse_overrides, read_yaml, to_dict
from openseer.train.checkpoint import CheckpointError
from openseer.train.config import PretrainConfig

if TYPE_CHECKING:
    from PIL import Image

    from openseer.interop import Weights
    from openseer.train.pretrain import PretrainResult

ImageLike = Union["Image.Image", str, os.PathLike, torch.Tensor]


def _options(options: Mapping[str, Any]) -> dict:
    """``run__budget_minutes=5`` -> {"run": {"budget_minutes": 5}} (keywords cannot contain dots)."""
    nested: dict = {}
    for key, value in options.items():
        node = nested
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = to_dict(value)
    return nested


def make_config(
    config: str | os.PathLike | PretrainConfig | Sequence[str | os.PathLike] = "cpu",
    overrides: Sequence[str] = (),
    **options: Any,
) -> PretrainConfig:
    """The config ``openseer pretrain --config ... key=value ...`` would resolve, from Python.

    ``config``: a preset name, a YAML file, several of them, or a PretrainConfig; ``overrides``: ``"a.b=value"``
    strings; ``options``: keyword overrides with ``__`` for dots (``optim__base_lr=0.6``), applied last.
    """
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}")
    if isinstance(config, PretrainConfig):
        merged = to_dict(config)
    else:
        merged = to_dict(PretrainConfig())
        for source in [config] if isinstance(config, str | os.PathLike) else config:
            merged = deep_merge(merged, read_yaml(source))
    merged = deep_merge(merged, parse_overrides(overrides))
    return from_dict(PretrainConfig, deep_merge(merged, _options(options)))


def pretrain(
    config: str | os.PathLike | PretrainConfig | Sequence[str | os.PathLike] = "cpu",
    overrides: Sequence[str] = (),
    *,
    resume: bool = False,
    **options: Any,
) -> PretrainResult:
    """SwAV pretraining, as ``openseer pretrain`` (see :func:`make_config` for the arguments).

    ``openseer.pretrain("cpu", ["data.source=~/photos"], run__budget_minutes=20)``
    """
    from openseer.train.pretrain import pretrain as run

    return run(make_config(config, overrides, **options), resume=resume)


class PretrainedModel:
    """A trained backbone (and classifier, if fine-tuned) ready for images; build it with :func:`load`."""

    def __init__(self, weights: Weights, device: str | torch.device = "cpu") -> None:
        from openseer.eval.features import eval_transform

        self.weights = weights
        self.config: PretrainConfig = weights.config
        self.device = torch.device(device)
        self.backbone: nn.Module = weights.build_backbone().to(self.device)
        classifier = weights.build_classifier()
        self.classifier: nn.Linear | None = classifier.to(self.device) if classifier is not None else None
        self.classes: list[str] | None = weights.classes if classifier is not None else None
        self.image_size: int = self.config.crops[0].size
        mean, std = self.config.augment.mean, self.config.augment.std
        if weights.resize == "whole":  # a classifier trained on whole small images (e.g. the built-in data)
            self.transform = v2.Compose(
                [
                    v2.ToImage(),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Resize((self.image_size, self.image_size), antialias=True),
                    v2.Normalize(mean, std),
                ]
            )
        else:
            self.transform = eval_transform(self.image_size, mean, std)

    def __repr__(self) -> str:
        head = f", {len(self.classes)} classes" if self.classes else ""
        return f"PretrainedModel({self.config.model.arch}, {self.image_size} px{head}, from {self.weights.source})"

    def _prepare(self, image: ImageLike) -> torch.Tensor:
        from openseer.data.images import BadImageError, load_rgb

        if isinstance(image, str | os.PathLike):
            try:
                image = load_rgb(Path(image).expanduser())
            except BadImageError as err:
                raise ValueError(f"cannot read image {err.path}: {err.reason}") from err
        elif isinstance(image, torch.Tensor):
            if image.ndim == 2:
                image = image.unsqueeze(0)
            if image.ndim != 3 or image.shape[0] not in (1, 3):
                raise ValueError(f"an image tensor must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
            image = image.expand(3, -1, -1)
        elif hasattr(image, "convert"):  # PIL: palette, grey and RGBA images become RGB first
            image = image.convert("RGB")
        else:
            raise TypeError(f"cannot use a {type(image).__name__} as an image (PIL image, path or tensor)")
        return self.transform(image)

    @staticmethod
    def _as_list(images: ImageLike | Iterable[ImageLike]) -> list[ImageLike]:
        if isinstance(images, torch.Tensor):
            return list(images) if images.ndim == 4 else [images]
        if isinstance(images, str | os.PathLike) or hasattr(images, "convert"):
            return [images]  # one image
        return list(images)

    def _batches(self, images: ImageLike | Iterable[ImageLike], batch_size: int) -> Iterator[torch.Tensor]:
        items = self._as_list(images)
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self._prepare(x) for x in items[start : start + batch_size]])
            yield batch.to(self.device)

    @torch.no_grad()
    def embed(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 64) -> torch.Tensor:
        """Pooled backbone features (N, D), float32 on the CPU, one row per image in order."""
        feats = [self.backbone(x).float().cpu() for x in self._batches(images, batch_size)]
        if not feats:
            return torch.empty(0, int(self.backbone.num_features))
        return torch.cat(feats)

    @torch.no_grad()
    def predict(
        self, images: ImageLike | Iterable[ImageLike], topk: int = 5, batch_size: int = 64
    ) -> list[list[tuple[str, float]]]:
        """Per image, the ``topk`` most probable classes as (label, probability), most probable first."""
        if self.classifier is None or self.classes is None:
            raise CheckpointError(
                f"{self.weights.source} holds no classifier (pretraining checkpoints have none): use embed() "
                "for features, or load a fine-tuned checkpoint (one that stores 'classes'), e.g. an imported "
                "SEER *_finetuned_in1k file"
            )
        k = min(topk, len(self.classes))
        out: list[list[tuple[str, float]]] = []
        for x in self._batches(images, batch_size):
            probs = self.classifier(self.backbone(x)).float().softmax(dim=1).cpu()
            values, indices = probs.topk(k, dim=1)
            for vals, idx in zip(values.tolist(), indices.tolist(), strict=True):
                out.append([(self.classes[i], v) for i, v in zip(idx, vals, strict=True)])
        return out


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> PretrainedModel:
    """A :class:`PretrainedModel` from an openseer run folder or checkpoint, a file written by
    ``openseer import-weights`` / ``openseer export --format safetensors``, or a VISSL/timm checkpoint."""
    from openseer.interop import load_weights

    return PretrainedModel(load_weights(path), device=device)
