"""The :class:`Weights` record and the checks every importer shares.

Everything meets in :class:`Weights`: the network's description (:mod:`openseer.weights.description`: the
architecture and head, the preprocessing of its inputs) plus state dicts in openseer's own layout (the backbone is
timm's RegNet/ResNet, so its keys are timm's; the SwAV head's are :class:`~openseer.models.head.SwAVHead`'s; a
classifier is a plain ``nn.Linear``). :func:`load_weights` reads any supported file into it, :func:`save_weights`
writes it as one safetensors file (description and class names in the metadata) plus the description as YAML.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from openseer.config import from_dict, to_dict
from openseer.data.preprocess import Preprocess
from openseer.fileio.checkpoint import CheckpointError, run_dir_of
from openseer.models.build import load_state_checked, random_model
from openseer.models.config import ModelConfig
from openseer.weights.description import IMPORTED_PREPROCESS

log = logging.getLogger(__name__)

Format = Literal["auto", "vissl", "timm", "openseer"]
PARTS = ("backbone", "head", "classifier")
_BLOCK_CONV1 = re.compile(r"s\d+\.b\d+\.conv1\.conv\.weight")


@dataclass
class Weights:
    """A model's description and tensors in openseer's layout, wherever they came from.

    ``backbone``: keys of :func:`openseer.models.build_backbone`'s module; ``head``: keys of ``SwAVHead``
    (``projection.*``, ``prototypes.weight``) or None; ``classifier``: ``{"weight": (C, D), "bias": (C,)}`` or
    None; ``classes``: C label names when there is a classifier; ``notes``: what an import did besides renaming.
    """

    model: ModelConfig
    """What the network is: architecture, stem, output stride, SwAV head shape (the ``model.*`` keys)."""
    preprocess: Preprocess
    """How an image becomes this network's input: size, mean, std, and the resize mode ('center_crop', or
    'whole' for classifiers trained on in-memory sets such as the built-in data)."""
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None = None
    classifier: dict[str, torch.Tensor] | None = None
    classes: list[str] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    """The pretraining config the network came from, as a plain dict, for provenance only (None for imported
    weights); nothing is built from it. A run's own config for resuming or evaluating is the run's to read."""

    @property
    def run_dir(self) -> Path:
        """Where results about these weights go: the run folder of a checkpoint, else the file's folder."""
        path = Path(self.source).expanduser()
        if path.is_dir():
            return path.parent if path.name == "checkpoints" else path
        return run_dir_of(path)

    def random_backbone(self, seed: int) -> nn.Module:
        """This architecture's backbone at random initialisation drawn with ``seed`` (what pretraining with
        run.seed=seed started from), in eval mode."""
        return random_model(self.model, seed).backbone.eval()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """One flat dict: ``backbone.*``, ``head.*``, ``classifier.*`` (the SwAVModel layout plus a classifier)."""
        out: dict[str, torch.Tensor] = {}
        for part in PARTS:
            for key, value in (getattr(self, part) or {}).items():
                out[f"{part}.{key}"] = value
        return out

    def build_backbone(self) -> nn.Module:
        """The backbone with these weights, in eval mode, on the CPU.

        Built on the meta device and given these very tensors (``assign``): no random initialisation and no
        second copy, which matters at SEER sizes (the 10B trunk is 37 GB in float32).
        """
        from openseer.models.backbone import build_on_meta

        m = self.model
        check_state(expected_shapes(m.arch, m.stem), self.backbone, f"{self.source} as a {m.arch} backbone")
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.backbone.items()}
        module = build_on_meta(m.arch, m.stem, m.output_stride)
        module.load_state_dict(state, strict=True, assign=True)
        return module.eval()

    def build_classifier(self) -> nn.Linear | None:
        if self.classifier is None:
            return None
        n_classes, dim = self.classifier["weight"].shape
        linear = nn.Linear(dim, n_classes, bias="bias" in self.classifier)
        linear.load_state_dict(self.classifier)
        return linear.eval()

    def build_head(self) -> nn.Module:
        """The SwAV head (projection and prototypes) with these weights, in eval mode (needs ``head``)."""
        from openseer.models.head import SwAVHead

        if self.head is None:
            raise CheckpointError(f"{self.source} holds no SwAV head (projection and prototypes)")
        m = self.model
        head = SwAVHead(expected_dim(m.arch), m.head_hidden, m.out_dim, m.prototypes, m.head_bn)
        load_state_checked(head, self.head, source=f"{self.source} (head)")
        return head.eval()

    def build_swav(self) -> nn.Module:
        """Backbone and SwAV head as a :class:`~openseer.models.head.SwAVModel` (needs ``head``)."""
        from openseer.models.head import SwAVModel

        head = self.build_head()
        return SwAVModel(self.build_backbone(), head).eval()


# ---------------------------------------------------------------- checks shared by the importers


@lru_cache(maxsize=32)
def expected_shapes(arch: str, stem: str = "imagenet") -> dict[str, tuple[int, ...]]:
    """Key -> shape of a backbone, built on the meta device (free even for the 10B model)."""
    from openseer.models.backbone import build_on_meta

    return {k: tuple(v.shape) for k, v in build_on_meta(arch, stem).state_dict().items()}


def check_state(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor], what: str) -> None:
    """Raise a CheckpointError listing every missing, unexpected and wrongly shaped key (none dropped)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = [
        f"{title} ({len(keys)}): {', '.join(keys)}"
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{what} does not fit: " + "; ".join(problems))


def comparable_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``shapes`` without BatchNorm counters: released files often leave them out, and they never affect
    outputs."""
    return {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}


def _plausible(shapes: dict[str, tuple[int, ...]], archs: tuple[str, ...]) -> list[str]:
    """Architectures worth building to compare: a RegNet's key names give away its depth (blocks in all)."""
    from openseer.models.regnet import REGNETY

    if "s1.b1.conv1.conv.weight" in shapes:
        blocks = sum(1 for k in shapes if _BLOCK_CONV1.fullmatch(k))
        return [a for a in archs if a in REGNETY and REGNETY[a].depth == blocks]
    return [a for a in archs if a not in REGNETY]


def infer_arch(backbone: dict[str, torch.Tensor], arch: str | None = None) -> tuple[str, str]:
    """(arch, stem) whose backbone has exactly these keys and shapes; ``arch`` narrows the search.

    RegNet stems differ only in stride, which weights do not show: imported RegNets get the ImageNet stem.
    With ``arch`` given and no exact fit, (arch, 'imagenet') is returned for :func:`check_state` to explain.
    """
    from openseer.models.backbone import ARCHS

    shapes = comparable_shapes({k: tuple(v.shape) for k, v in backbone.items()})
    names = [arch] if arch is not None else _plausible(shapes, ARCHS)
    for name in names:
        for stem in ("imagenet", "small"):
            if comparable_shapes(expected_shapes(name, stem)) == shapes:
                return name, stem
    if arch is not None:
        return arch, "imagenet"
    raise CheckpointError(
        f"the backbone's {len(shapes)} tensors match no known architecture ({', '.join(ARCHS)}); "
        "name one (arch=...) to see which keys differ"
    )


def fill_batch_counters(expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]) -> list[str]:
    """Add BatchNorm ``num_batches_tracked`` counters a file left out (they never affect outputs)."""
    added = [k for k in expected if k.endswith("num_batches_tracked") and k not in state]
    for key in added:
        state[key] = torch.zeros((), dtype=torch.long)
    return (
        [f"added {len(added)} BatchNorm num_batches_tracked counters the file did not hold"] if added else []
    )


def head_config(head: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``model.*`` config values read off a SwAV head's shapes (projection Linear/BN layers, prototypes)."""
    layers = sorted({int(k.split(".")[1]) for k in head if k.startswith("projection.")})
    linear_out = [
        head[f"projection.{i}.weight"].shape[0]
        for i in layers
        if f"projection.{i}.weight" in head and head[f"projection.{i}.weight"].ndim == 2
    ]
    has_bn = any(k.startswith("projection.") and k.endswith("running_mean") for k in head)
    if not linear_out or "prototypes.weight" not in head:
        raise CheckpointError("the SwAV head has no projection Linear layers or no prototypes")
    return {
        "head_hidden": [int(w) for w in linear_out[:-1]],
        "head_bn": has_bn,
        "out_dim": int(linear_out[-1]),
        "prototypes": int(head["prototypes.weight"].shape[0]),
    }


def imported_model(arch: str, stem: str, head: dict[str, torch.Tensor] | None) -> ModelConfig:
    """The ``model.*`` defaults with the architecture and the head's shape set to fit imported tensors."""
    model = {**to_dict(ModelConfig()), "arch": arch, "stem": stem, **(head_config(head) if head else {})}
    return from_dict(ModelConfig, model, prefix="model.")


def finish_import(
    backbone: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    classifier: dict[str, torch.Tensor] | None,
    *,
    arch: str | None,
    classes: list[str] | None,
    source: str,
    notes: list[str],
    skip_unknown: bool = False,
) -> Weights:
    """Shared tail of every importer: pick the architecture, check every shape, name the classes."""
    from openseer.models.backbone import ARCHS

    if arch is not None and arch not in ARCHS:
        raise CheckpointError(f"unknown architecture '{arch}' (available: {', '.join(ARCHS)})")
    arch, stem = infer_arch(backbone, arch)
    expected = expected_shapes(arch, stem)
    extra = [k for k in backbone if k not in expected]
    if extra and skip_unknown:  # without skip_unknown, check_state lists them with everything else
        notes = notes + report_unknown(extra, True, source, "backbone")
        backbone = {k: v for k, v in backbone.items() if k in expected}
    notes = notes + fill_batch_counters(expected, backbone)
    check_state(expected, backbone, f"{source} as a {arch} backbone")
    model = imported_model(arch, stem, head)
    if head is not None:
        check_head(model, head, source)
    if classifier is not None:
        classes = check_classifier(classifier, int(expected_dim(arch)), classes, source)
    elif classes is not None:
        raise CheckpointError(f"class names were given, but {source} holds no classifier")
    return Weights(model, IMPORTED_PREPROCESS, backbone, head, classifier, classes, source, notes)


@lru_cache(maxsize=32)
def expected_dim(arch: str) -> int:
    from openseer.models.backbone import build_on_meta

    return int(build_on_meta(arch).num_features)


def check_head(m: ModelConfig, head: dict[str, torch.Tensor], source: str) -> None:
    from openseer.models.head import SwAVHead

    with torch.device("meta"):
        module = SwAVHead(expected_dim(m.arch), m.head_hidden, m.out_dim, m.prototypes, m.head_bn)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    fill_batch_counters(shapes, head)
    check_state(shapes, head, f"{source} as a SwAV head")


def check_classifier(
    classifier: dict[str, torch.Tensor], dim: int, classes: list[str] | None, source: str
) -> list[str]:
    weight = classifier.get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[1] != dim or set(classifier) - {"weight", "bias"}:
        raise CheckpointError(
            f"{source}: the classifier should be weight (C, {dim}) and bias (C,), got "
            + ", ".join(f"{k} {tuple(v.shape)}" for k, v in classifier.items())
        )
    n = weight.shape[0]
    if classes is None:
        return [str(i) for i in range(n)]  # no names in the file: class indices stand in
    if len(classes) != n:
        raise CheckpointError(f"{len(classes)} class names given for a classifier with {n} outputs")
    return list(classes)


def report_unknown(unknown: list[str], skip_unknown: bool, source: str, what: str) -> list[str]:
    """Keys with no place in openseer's model: an error, or with ``skip_unknown`` a logged note."""
    if not unknown:
        return []
    listing = ", ".join(sorted(unknown))
    if not skip_unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} {what} key(s) have no place in openseer's model: {listing} "
            "(skip_unknown=true imports without them)"
        )
    log.warning("%s: skipped %d %s key(s): %s", source, len(unknown), what, listing)
    return [f"skipped {len(unknown)} {what} key(s): {listing}"]
