"""Weights in and out of openseer: VISSL/ClassyVision and timm checkpoints, safetensors, TorchScript, ONNX.

Everything meets in :class:`Weights`: a config plus state dicts in openseer's own layout (the backbone is timm's
RegNet/ResNet, so its keys are timm's; the SwAV head's are :class:`~openseer.models.head.SwAVHead`'s; a classifier
is a plain ``nn.Linear``). :func:`load_weights` reads any supported file into it, :func:`save_weights` writes it
as one safetensors file (config and class names in the metadata) plus the matching config YAML.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from openseer.config import from_dict, to_dict
from openseer.train.checkpoint import CheckpointError
from openseer.train.config import ModelConfig, PretrainConfig

log = logging.getLogger(__name__)

Format = Literal["auto", "vissl", "timm", "openseer"]
Resize = Literal["center_crop", "whole"]
_MAGIC = "openseer-weights"  # safetensors metadata key marking a file written by save_weights
_PARTS = ("backbone", "head", "classifier")
_BLOCK_CONV1 = re.compile(r"s\d+\.b\d+\.conv1\.conv\.weight")


@dataclass
class Weights:
    """A model's tensors in openseer's layout, wherever they came from.

    ``backbone``: keys of :func:`openseer.models.build_backbone`'s module; ``head``: keys of ``SwAVHead``
    (``projection.*``, ``prototypes.weight``) or None; ``classifier``: ``{"weight": (C, D), "bias": (C,)}`` or
    None; ``classes``: C label names when there is a classifier; ``notes``: what an import did besides renaming.
    """

    config: PretrainConfig
    backbone: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None = None
    classifier: dict[str, torch.Tensor] | None = None
    classes: list[str] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    resize: Resize = "center_crop"
    """How images are fitted to the input size: 'center_crop' (shorter side to size/0.875, centre crop) or
    'whole' (the whole image resized; classifiers trained on in-memory sets such as the built-in data)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """One flat dict: ``backbone.*``, ``head.*``, ``classifier.*`` (the SwAVModel layout plus a classifier)."""
        out: dict[str, torch.Tensor] = {}
        for part in _PARTS:
            for key, value in (getattr(self, part) or {}).items():
                out[f"{part}.{key}"] = value
        return out

    def build_backbone(self) -> nn.Module:
        """The backbone with these weights, in eval mode, on the CPU.

        Built on the meta device and given these very tensors (``assign``): no random initialisation and no
        second copy, which matters at SEER sizes (the 10B trunk is 37 GB in float32).
        """
        from openseer.models.backbone import build_on_meta

        m = self.config.model
        check_state(expected_shapes(m.arch, m.stem), self.backbone, f"{self.source} as a {m.arch} backbone")
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.backbone.items()}
        module = build_on_meta(m.arch, m.stem)
        module.load_state_dict(state, strict=True, assign=True)
        return module.eval()

    def build_classifier(self) -> nn.Linear | None:
        if self.classifier is None:
            return None
        n_classes, dim = self.classifier["weight"].shape
        linear = nn.Linear(dim, n_classes, bias="bias" in self.classifier)
        linear.load_state_dict(self.classifier)
        return linear.eval()

    def build_swav(self) -> nn.Module:
        """Backbone and SwAV head as a :class:`~openseer.models.head.SwAVModel` (needs ``head``)."""
        from openseer.models.head import SwAVHead, SwAVModel
        from openseer.models.pretrained import load_state_checked

        if self.head is None:
            raise CheckpointError(f"{self.source} holds no SwAV head (projection and prototypes)")
        backbone = self.build_backbone()
        m = self.config.model
        head = SwAVHead(int(backbone.num_features), m.head_hidden, m.out_dim, m.prototypes, m.head_bn)
        load_state_checked(head, self.head, source=f"{self.source} (head)")
        return SwAVModel(backbone, head).eval()


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


def _comparable(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    # BatchNorm counters are often left out of released files and never affect outputs
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

    shapes = _comparable({k: tuple(v.shape) for k, v in backbone.items()})
    names = [arch] if arch is not None else _plausible(shapes, ARCHS)
    for name in names:
        for stem in ("imagenet", "small"):
            if _comparable(expected_shapes(name, stem)) == shapes:
                return name, stem
    if arch is not None:
        return arch, "imagenet"
    raise CheckpointError(
        f"the backbone's {len(shapes)} tensors match no known architecture ({', '.join(ARCHS)}); "
        "name one with --arch to see which keys differ"
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


def make_config(arch: str, stem: str, head: dict[str, torch.Tensor] | None) -> PretrainConfig:
    """Defaults with ``model.*`` set to fit the imported tensors."""
    config = PretrainConfig()
    model = {**to_dict(config.model), "arch": arch, "stem": stem, **(head_config(head) if head else {})}
    config.model = from_dict(ModelConfig, model, prefix="model.")
    return config


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
    config = make_config(arch, stem, head)
    if head is not None:
        config.model.validate()
        _check_head(config, head, source)
    if classifier is not None:
        classes = _check_classifier(classifier, int(expected_dim(arch)), classes, source)
    elif classes is not None:
        raise CheckpointError(f"class names were given, but {source} holds no classifier")
    return Weights(config, backbone, head, classifier, classes, source, notes)


@lru_cache(maxsize=32)
def expected_dim(arch: str) -> int:
    from openseer.models.backbone import build_on_meta

    return int(build_on_meta(arch).num_features)


def _check_head(config: PretrainConfig, head: dict[str, torch.Tensor], source: str) -> None:
    from openseer.models.head import SwAVHead

    m = config.model
    with torch.device("meta"):
        module = SwAVHead(expected_dim(m.arch), m.head_hidden, m.out_dim, m.prototypes, m.head_bn)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    fill_batch_counters(shapes, head)
    check_state(shapes, head, f"{source} as a SwAV head")


def _check_classifier(
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


# ---------------------------------------------------------------- files


def _harmless_globals() -> list[Any]:
    """NumPy scalars and dtypes, which VISSL/ClassyVision checkpoints carry in their bookkeeping entries.

    Only plain data types: anything else in a file still fails ``weights_only=True`` and is refused.
    """
    import numpy as np
    import numpy.dtypes as np_dtypes
    from numpy._core.multiarray import scalar

    dtypes = [getattr(np_dtypes, n) for n in dir(np_dtypes) if n.endswith("DType")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def read_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)``, memory-mapped where the file format allows (SEER-10B is 40 GB)."""
    with torch.serialization.safe_globals(_harmless_globals()):
        try:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # files written before torch 1.6 cannot be mapped
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... by damage
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CheckpointError(
                f"cannot load {path}: {err.__class__.__name__}: {first} (only plain tensors, containers and "
                "NumPy scalars are accepted; files carrying other pickled objects are refused on purpose)"
            ) from err


def save_weights(weights: Weights, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (safetensors; config, classes, source and notes in its metadata) and ``path``.yaml.

    Returns (weights file, config file). The YAML is the config to pretrain or evaluate with these weights.
    """
    from safetensors.torch import save_file

    from openseer.config import dump_yaml

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        _MAGIC: "1",
        "config": json.dumps(to_dict(weights.config)),
        "source": weights.source,
        "notes": json.dumps(weights.notes),
        "resize": weights.resize,
    }
    if weights.classes is not None:
        metadata["classes"] = json.dumps(weights.classes)
    # safetensors wants dense, unshared storage; memory-mapped or view tensors are copied only if needed
    tensors = {k: v.detach().contiguous() for k, v in weights.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    yaml_path = path.with_suffix(".yaml")
    dump_yaml(weights.config, yaml_path)
    return path, yaml_path


def _split_parts(flat: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, value in flat.items():
        prefix, _, rest = key.partition(".")
        if prefix in _PARTS and rest:
            parts.setdefault(prefix, {})[rest] = value
        else:
            other.append(key)
    return parts, other


def _from_openseer(
    config: PretrainConfig, flat: dict[str, torch.Tensor], classes: list[str] | None, source: str
) -> Weights:
    parts, other = _split_parts(flat)
    if other:
        raise CheckpointError(f"{source}: keys outside backbone/head/classifier: {', '.join(sorted(other))}")
    if "backbone" not in parts:
        raise CheckpointError(f"{source} holds no backbone tensors")
    m = config.model
    check_state(expected_shapes(m.arch, m.stem), parts["backbone"], f"{source} as a {m.arch} backbone")
    if "head" in parts:
        _check_head(config, parts["head"], source)
    classifier = parts.get("classifier")
    if classifier is not None:
        classes = _check_classifier(classifier, expected_dim(m.arch), classes, source)
    return Weights(config, parts["backbone"], parts.get("head"), classifier, classes, source)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err


def _openseer_checkpoint(state: dict[str, Any], source: str) -> Weights:
    """A pretraining checkpoint (``config`` + ``model``), or a fine-tuned one that also stores ``classes``.

    A fine-tuned checkpoint is the state of ``{"backbone": ..., "classifier": nn.Linear}`` (keys ``backbone.*``,
    ``classifier.weight``/``bias``), optionally with a separate ``classifier`` state dict, plus ``classes``.
    """
    config = from_dict(PretrainConfig, state["config"])
    flat = dict(state["model"])
    if isinstance(state.get("classifier"), dict):
        flat.update({f"classifier.{k}": v for k, v in state["classifier"].items()})
    classes = state.get("classes")
    return _from_openseer(config, flat, list(classes) if classes is not None else None, source)


def _sharded_checkpoint(folder: Path) -> Path | None:
    """The newest complete ``dcp-<step>`` folder of an FSDP run (see openseer/train/sharded_checkpoint.py),
    when ``folder`` is one, or a run / checkpoints folder holding only those."""
    from openseer.train.checkpoint import latest_checkpoint

    def complete(p: Path) -> bool:
        return p.name.startswith("dcp-") and (p / "meta.json").is_file() and (p / ".metadata").is_file()

    if complete(folder):
        return folder
    for where in (folder / "checkpoints", folder):
        if latest_checkpoint(where) is not None:
            return None  # a run with ordinary checkpoints
        found = sorted(p for p in where.glob("dcp-*") if complete(p)) if where.is_dir() else []
        if found:
            return found[-1]
    return None


def _read_sharded(path: Path, source: str) -> Weights:
    """The model of a sharded checkpoint, gathered into one process with torch.distributed.checkpoint.

    Only the model's tensors are requested, so none of the checkpoint's pickled entries is read.
    """
    import torch.distributed.checkpoint as dcp

    from openseer.train.pretrain import build_model  # the loop module imports this package's siblings

    config = from_dict(PretrainConfig, json.loads((path / "meta.json").read_text())["config"])
    state = build_model(config).state_dict()  # the targets DCP fills in place
    try:
        with warnings.catch_warnings():  # DCP warns that it reads in one process: that is the point here
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load({"model": state}, checkpoint_id=path)
    except Exception as err:  # DCP reports missing keys and damaged files with assorted exception types
        raise CheckpointError(f"cannot read the sharded checkpoint {path}: {err}") from err
    return _from_openseer(config, {k: v for k, v in state.items()}, None, f"{source} ({path.name})")


CLASSIFIER_KIND = "openseer-classifier"  # the "kind" of openseer/eval/predict.py's classifier checkpoints


def fold_batchnorm(head: dict[str, torch.Tensor], eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """(BatchNorm1d without affine terms, Linear) as one Linear: W' = W / sqrt(var + eps), b' = b - W' mean.

    In eval mode the BatchNorm is a fixed per-feature affine map, so folding it is exact up to rounding, and
    every exporter and :class:`Weights` keep a single classifier layout.
    """
    weight, bias = head["1.weight"].double(), head["1.bias"].double()
    if "0.running_mean" not in head:  # Identity in place of the BatchNorm
        return {"weight": head["1.weight"], "bias": head["1.bias"]}
    scale = (head["0.running_var"].double() + eps).rsqrt()
    folded = weight * scale
    dtype = head["1.weight"].dtype
    return {"weight": folded.to(dtype), "bias": (bias - folded @ head["0.running_mean"].double()).to(dtype)}


def _classifier_checkpoint(state: dict[str, Any], source: str) -> Weights:
    """A checkpoint of ``openseer linear`` / ``openseer finetune``: backbone, (BN, Linear) head, class names."""
    config = from_dict(PretrainConfig, state["pretrain_config"])
    parts, other = _split_parts(dict(state["model"]))
    head = parts.pop("head", {})
    if other or "backbone" not in parts or "1.weight" not in head:
        raise CheckpointError(
            f"{source}: unexpected classifier checkpoint layout (keys {', '.join(sorted(other))})"
        )
    flat = {f"backbone.{k}": v for k, v in parts["backbone"].items()}
    flat |= {f"classifier.{k}": v for k, v in fold_batchnorm(head).items()}
    weights = _from_openseer(config, flat, list(state["classes"]), source)
    notes = ["folded the classifier's BatchNorm into its Linear layer"] if "0.running_mean" in head else []
    return replace(weights, notes=notes, resize=state.get("resize", "center_crop"))


def load_weights(
    path: str | Path,
    fmt: Format = "auto",
    arch: str | None = None,
    classes: list[str] | None = None,
    skip_unknown: bool = False,
) -> Weights:
    """Read weights from any supported file into openseer's layout, checking every key and shape.

    ``path``: an openseer run folder or checkpoint, a safetensors file written by :func:`save_weights` or by timm,
    a VISSL/ClassyVision checkpoint, or a timm/torchvision state dict. ``fmt`` forces the layout of a foreign
    file; ``arch`` forces the architecture (otherwise read off the shapes); ``classes`` names the outputs of an
    imported classifier; ``skip_unknown`` imports despite keys that have no place in openseer's model (they are
    logged and recorded in ``Weights.notes``; otherwise they are an error).
    """
    from openseer.interop import timm_weights, vissl
    from openseer.models.pretrained import resolve_checkpoint

    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"no such file or folder: {path}")
    source = str(path)
    if path.is_dir():
        sharded = _sharded_checkpoint(path)
        if sharded is not None:
            return _read_sharded(sharded, source)
        path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        flat, metadata = _read_safetensors(path)
        if _MAGIC in metadata and fmt in ("auto", "openseer"):
            config = from_dict(PretrainConfig, json.loads(metadata["config"]))
            names = json.loads(metadata["classes"]) if "classes" in metadata else None
            weights = _from_openseer(config, flat, names, source)
            resize = metadata.get("resize", "center_crop")
            return replace(weights, notes=json.loads(metadata.get("notes", "[]")), resize=resize)
        state: Any = flat
    else:
        state = read_torch_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not a dict of tensors")
    if fmt in ("auto", "openseer") and state.get("kind") == CLASSIFIER_KIND:
        return _classifier_checkpoint(state, source)
    if fmt in ("auto", "openseer") and "config" in state and "model" in state:
        return _openseer_checkpoint(state, source)
    if fmt == "openseer":
        raise CheckpointError(f"{source} is not an openseer checkpoint (no 'config'/'model' entries)")
    if fmt == "auto":
        fmt = "vissl" if vissl.looks_like(state) else "timm" if timm_weights.looks_like(state) else "auto"
    if fmt == "vissl":
        return vissl.import_vissl(state, arch=arch, classes=classes, skip_unknown=skip_unknown, source=source)
    if fmt == "timm":
        return timm_weights.import_timm(
            state, arch=arch, classes=classes, skip_unknown=skip_unknown, source=source
        )
    raise CheckpointError(
        f"cannot tell the layout of {source} (not an openseer, VISSL/ClassyVision or timm checkpoint); "
        "name it with --format vissl or --format timm"
    )


def report_unknown(unknown: list[str], skip_unknown: bool, source: str, what: str) -> list[str]:
    """Keys with no place in openseer's model: an error, or with ``skip_unknown`` a logged note."""
    if not unknown:
        return []
    listing = ", ".join(sorted(unknown))
    if not skip_unknown:
        raise CheckpointError(
            f"{source}: {len(unknown)} {what} key(s) have no place in openseer's model: {listing} "
            "(pass --skip-unknown to import without them)"
        )
    log.warning("%s: skipped %d %s key(s): %s", source, len(unknown), what, listing)
    return [f"skipped {len(unknown)} {what} key(s): {listing}"]
