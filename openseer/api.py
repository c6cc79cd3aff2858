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
trained on whole small images resize the whole image instead), on the path every command's images take
(:func:`openseer.eval.inputs.image_batches`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from openseer.config import from_dict, load_config
from openseer.fileio.checkpoint import CheckpointError
from openseer.interrupts import ctrl_c_raises
from openseer.train.config import PretrainConfig

if TYPE_CHECKING:
    from openseer.data.preprocess import Preprocess
    from openseer.eval.inputs import Images
    from openseer.models.config import ModelConfig
    from openseer.train.pretrain import PretrainResult
    from openseer.weights import Weights


def make_config(
    config: str | os.PathLike | PretrainConfig | Sequence[str | os.PathLike] = "cpu",
    overrides: Sequence[str] = (),
    **options: Any,
) -> PretrainConfig:
    """The config ``openseer pretrain --config ... key=value ...`` would resolve, from Python
    (:func:`openseer.config.load_config`, the command line's merge).

    ``config``: a preset name, a YAML file, several of them, or a PretrainConfig; ``overrides``: ``"a.b=value"``
    strings; ``options``: keyword overrides with ``__`` for dots (``optim__base_lr=0.6``, ``run={"seed": 4}``),
    applied last.
    """
    if isinstance(config, PretrainConfig):
        base, sources = config, []
    else:
        base, sources = PretrainConfig, [config] if isinstance(config, str | os.PathLike) else list(config)
    # keywords cannot contain dots: `run__budget_minutes=5` sets run.budget_minutes (a string for overrides is
    # refused by load_config, which says why)
    keywords = [(key.replace("__", "."), value) for key, value in options.items()]
    return load_config(base, sources, overrides if isinstance(overrides, str) else [*overrides, *keywords])


def pretrain(
    config: str | os.PathLike | PretrainConfig | Sequence[str | os.PathLike] = "cpu",
    overrides: Sequence[str] = (),
    *,
    init: str | os.PathLike | None = None,
    resume: bool = False,
    **options: Any,
) -> PretrainResult:
    """SwAV pretraining, as ``openseer pretrain`` (see :func:`make_config` for the arguments), then, when
    ``run.evaluate`` and the data are labelled, the one evaluation of the run (``result.evaluation``: kNN of the
    network it started from and after training, linear probe; see :mod:`openseer.eval.pretraining`).

    ``init``: start from this weights file (``model.init``: continued pretraining; a SEER/VISSL or timm
    checkpoint, an imported or exported safetensors file, a run folder or checkpoint), applied after the other
    options. ``resume``: go on from the run folder's last checkpoint, which wins over ``init`` when there is one.

    ``openseer.pretrain("cpu", ["data.source=~/photos"], run__budget_minutes=20)``
    ``openseer.pretrain("cpu", ["data.source=~/photos"], init="seer_regnet32gf.torch", model__arch="auto")``
    """
    from openseer import distributed
    from openseer.train.pretrain import pretrain as run

    if init is not None:
        options["model__init"] = os.fspath(init)
    cfg = make_config(config, overrides, **options)
    with ctrl_c_raises():  # Ctrl-C stops the run; a caller's own SIGINT handler is left as it is
        result = run(cfg, resume=resume)
    # every process has saved; the process group goes before the evaluation, which reads the checkpoint in one
    # process (plain BatchNorm, no collective that the other processes would have to join)
    distributed.barrier()
    distributed.destroy()
    if cfg.run.evaluate and distributed.launch_rank() == 0:
        from openseer.eval.pretraining import evaluate_pretraining

        result.evaluation = evaluate_pretraining(
            result.out_dir, device=cfg.run.device, progress=cfg.run.progress
        )
    return result


class PretrainedModel:
    """A trained backbone (and classifier, if the weights hold one) ready for images; build it with :func:`load`.

    What the network is travels with the weights: ``config`` (:class:`~openseer.models.config.ModelConfig`:
    architecture, stem, output stride, SwAV head) and ``preprocess`` (the
    :class:`~openseer.data.preprocess.Preprocess` every command uses for these weights). ``recipe`` is the
    pretraining config the weights came from, when they came from an openseer run.
    """

    def __init__(self, weights: Weights, device: str | torch.device = "auto") -> None:
        from openseer.distributed import resolve_device
        from openseer.eval.classifier import Classifier

        self.weights = weights
        self.config: ModelConfig = weights.model
        self.device = resolve_device(str(device))
        self.preprocess: Preprocess = weights.preprocess
        self._classifier = Classifier.from_weights(weights).to(self.device) if weights.classifier else None
        self.backbone: nn.Module = (
            self._classifier.backbone if self._classifier else weights.build_backbone().to(self.device)
        )
        self.classes: list[str] | None = weights.classes if self._classifier is not None else None
        self._dense_trunk: nn.Module | None = None  # features(): the trunk in the standard layout

    def __repr__(self) -> str:
        head = f", {len(self.classes)} classes" if self.classes else ""
        return (
            f"PretrainedModel({self.config.arch}, {self.preprocess.size} px{head}, "
            f"from {self.weights.source})"
        )

    @property
    def recipe(self) -> PretrainConfig | None:
        """The pretraining config of the run the weights came from (a run folder, its checkpoints, a classifier
        trained on them, their export), None for imported weights; a ConfigError if it no longer reads as one."""
        recipe = self.weights.recipe
        return None if recipe is None else from_dict(PretrainConfig, recipe)

    def _outputs(
        self, model: nn.Module, images: Images, batch_size: int
    ) -> Iterator[torch.Tensor | dict[int, torch.Tensor]]:
        """``model`` on the images in order, batch by batch (float32, CPU); ValueError for an unreadable file."""
        from openseer.data.images import SkipLog
        from openseer.eval.features import forward_batches
        from openseer.eval.inputs import image_batches

        skipped = SkipLog()
        batches = image_batches(images, self.preprocess, batch_size, self.device, skipped=skipped)
        for out, _ in forward_batches(model, batches):
            if skipped:  # one row per image, in order, or an error
                break
            yield out
        if skipped:
            path, reason = skipped.entries[0]
            raise ValueError(f"cannot read image {path}: {reason}")

    def embed(self, images: Images, batch_size: int = 64) -> torch.Tensor:
        """Pooled backbone features (N, D), float32 on the CPU, one row per image in order."""
        feats = list(self._outputs(self.backbone, images, batch_size))
        return torch.cat(feats) if feats else torch.empty(0, int(self.backbone.num_features))

    def features(
        self, images: Images, levels: Sequence[int] = (2, 3, 4, 5), batch_size: int = 64
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

        if self._dense_trunk is None:  # built once, on first use
            model = self.config
            standard = dense_layout(model) == model
            self._dense_trunk = self.backbone if standard else dense_trunk(self.weights).to(self.device)
        maps = FeatureMaps(self._dense_trunk, levels)
        out = list(self._outputs(maps, images, batch_size))
        return {
            level: torch.cat([o[level] for o in out]) if out else torch.empty(0, channels, 0, 0)
            for level, channels in maps.channels.items()
        }

    def predict(self, images: Images, topk: int = 5, batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """Per image, the ``topk`` most probable classes as (label, probability), most probable first."""
        from openseer.eval.predict import top_predictions

        if self._classifier is None or self.classes is None:
            raise CheckpointError(
                f"{self.weights.source} holds no classifier (pretraining checkpoints have none): use embed() "
                "for features, or load a fine-tuned checkpoint (one that stores 'classes'), e.g. an imported "
                "SEER *_finetuned_in1k file"
            )
        probs = [logits.softmax(dim=1) for logits in self._outputs(self._classifier, images, batch_size)]
        if not probs:
            return []
        return [
            [(p.label, p.probability) for p in row]
            for row in top_predictions(self.classes, torch.cat(probs), topk)
        ]


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> PretrainedModel:
    """A :class:`PretrainedModel` from any weights file :func:`openseer.weights.load_weights` reads: an openseer
    run folder or checkpoint, a file written by ``openseer import-weights`` / ``openseer export ...
    format=safetensors``, or a SEER/VISSL or timm checkpoint."""
    from openseer.weights import load_weights

    return PretrainedModel(load_weights(path), device=device)
