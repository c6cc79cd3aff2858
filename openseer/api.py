"""openseer from Python: pretrain, load, embed, predict.

A two-step run on the built-in data, then features for images (this example runs as a test; a real run would
set ``run.budget_minutes`` or ``optim.epochs`` instead of ``run.max_steps``):

>>> import tempfile, torch, openseer
>>> out = tempfile.mkdtemp()
>>> result = openseer.pretrain("cpu", ["run.max_steps=2", "optim.batch_size=32"], run__out_dir=out,
...                            run__evaluate=False, run__progress=False, run__tensorboard=False)
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
openseer.fileio.checkpoint.CheckpointError: ... holds no classifier ...

``embed`` and ``predict`` take PIL images, file paths, uint8 tensors (0..255) or float tensors (0..1), one or a
list, or a batch tensor (N, 3, H, W); each image gets the preprocessing stored with the weights
(``model.preprocess``: resize the shorter side, centre crop to the training crop size, normalise; classifiers
trained on whole small images resize the whole image instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from openseer.config import ConfigError, deep_merge, from_dict, parse_overrides, read_yaml, to_dict
from openseer.fileio.checkpoint import CheckpointError
from openseer.train.config import PretrainConfig

if TYPE_CHECKING:
    from PIL import Image

    from openseer.data.preprocess import Preprocess
    from openseer.train.pretrain import PretrainResult
    from openseer.weights import Weights

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
    """SwAV pretraining, as ``openseer pretrain`` (see :func:`make_config` for the arguments), then, when
    ``run.evaluate`` and the data are labelled, the one evaluation of the run (``result.evaluation``: kNN at
    random initialisation and after training, linear probe; see :mod:`openseer.eval.pretraining`).

    ``openseer.pretrain("cpu", ["data.source=~/photos"], run__budget_minutes=20)``
    """
    from openseer import distributed
    from openseer.train.pretrain import pretrain as run

    cfg = make_config(config, overrides, **options)
    result = run(cfg, resume=resume)
    # every process has saved; the process group goes before the evaluation, which reads the checkpoint in one
    # process (plain BatchNorm, no collective that the other processes would have to join)
    distributed.barrier()
    distributed.destroy()
    if cfg.run.evaluate and distributed.launch_rank() == 0:
        from openseer.eval.pretraining import evaluate_pretraining

        result.evaluation = evaluate_pretraining(result.out_dir, device=cfg.run.device, progress=cfg.run.progress)
    return result


class PretrainedModel:
    """A trained backbone (and classifier, if the weights hold one) ready for images; build it with :func:`load`.

    ``preprocess`` is the :class:`~openseer.data.preprocess.Preprocess` stored with the weights, the one every
    command uses for these weights.
    """

    def __init__(self, weights: Weights, device: str | torch.device = "auto") -> None:
        from openseer.distributed import resolve_device
        from openseer.eval.predict import Classifier

        self.weights = weights
        self.config: PretrainConfig = weights.config
        self.device = resolve_device(str(device))
        self.preprocess: Preprocess = weights.preprocess
        self._classifier = Classifier.from_weights(weights).to(self.device) if weights.classifier else None
        self.backbone: nn.Module = (
            self._classifier.backbone if self._classifier else weights.build_backbone().to(self.device)
        )
        self.classes: list[str] | None = weights.classes if self._classifier is not None else None

    def __repr__(self) -> str:
        head = f", {len(self.classes)} classes" if self.classes else ""
        return (
            f"PretrainedModel({self.config.model.arch}, {self.preprocess.size} px{head}, "
            f"from {self.weights.source})"
        )

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
            batch = torch.stack([self.preprocess.image(x) for x in items[start : start + batch_size]])
            yield batch.to(self.device)

    @torch.no_grad()
    def embed(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 64) -> torch.Tensor:
        """Pooled backbone features (N, D), float32 on the CPU, one row per image in order."""
        self.backbone.eval()
        feats = [self.backbone(x).float().cpu() for x in self._batches(images, batch_size)]
        if not feats:
            return torch.empty(0, int(self.backbone.num_features))
        return torch.cat(feats)

    @torch.no_grad()
    def features(
        self,
        images: ImageLike | Iterable[ImageLike],
        levels: Sequence[int] = (2, 3, 4, 5),
        batch_size: int = 64,
    ) -> dict[int, torch.Tensor]:
        """The trunk's feature maps ``{level: (N, C_level, ~S / 2**level, ~S / 2**level)}``, float32 on the CPU,
        for inputs of side S (``preprocess.size``): level l is the map at stride 2**l, 2..5 the four stages
        (strides 4 to 32), 1 the stem.

        The trunk always runs in the standard layout: one pretrained with the small stem or an ``output_stride``
        (the ``cpu`` preset: stride 8 in all) is rebuilt with the stem and every stage strided, from the same
        weights, as detection backbones use it (:mod:`openseer.models.dense`).
        """
        from openseer.eval.detect import dense_trunk
        from openseer.models.dense import FeatureMaps, dense_layout

        if getattr(self, "_dense_trunk", None) is None:  # built once, on first use
            model = self.config.model
            standard = dense_layout(model) == model
            self._dense_trunk = self.backbone if standard else dense_trunk(self.weights).to(self.device)
        maps = FeatureMaps(self._dense_trunk, levels).eval()
        out = [maps(x) for x in self._batches(images, batch_size)]
        return {
            level: torch.cat([o[level].float().cpu() for o in out]) if out else torch.empty(0, channels, 0, 0)
            for level, channels in maps.channels.items()
        }

    @torch.no_grad()
    def predict(
        self, images: ImageLike | Iterable[ImageLike], topk: int = 5, batch_size: int = 64
    ) -> list[list[tuple[str, float]]]:
        """Per image, the ``topk`` most probable classes as (label, probability), most probable first."""
        if self._classifier is None or self.classes is None:
            raise CheckpointError(
                f"{self.weights.source} holds no classifier (pretraining checkpoints have none): use embed() "
                "for features, or load a fine-tuned checkpoint (one that stores 'classes'), e.g. an imported "
                "SEER *_finetuned_in1k file"
            )
        k = min(topk, len(self.classes))
        self._classifier.eval()
        out: list[list[tuple[str, float]]] = []
        for x in self._batches(images, batch_size):
            probs = self._classifier(x).float().softmax(dim=1).cpu()
            values, indices = probs.topk(k, dim=1)
            for vals, idx in zip(values.tolist(), indices.tolist(), strict=True):
                out.append([(self.classes[i], v) for i, v in zip(idx, vals, strict=True)])
        return out


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> PretrainedModel:
    """A :class:`PretrainedModel` from any weights file :func:`openseer.weights.load_weights` reads: an openseer
    run folder or checkpoint, a file written by ``openseer import-weights`` / ``openseer export ...
    format=safetensors``, or a SEER/VISSL or timm checkpoint."""
    from openseer.weights import load_weights

    return PretrainedModel(load_weights(path), device=device)
