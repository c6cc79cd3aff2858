"""Weights files: openseer run folders, checkpoints and safetensors, classifier checkpoints, and (through
``openseer.weights.vissl`` / ``timm_weights``) foreign checkpoints, read into :class:`~openseer.weights.Weights`;
:func:`save_weights` writes one back as safetensors plus its description as YAML.

Runs and their checkpoints keep the whole pretraining config (resuming needs it); the network's description is
derived from it here, once, as the weights are read (:func:`~openseer.weights.description.describe_recipe`).
Files written by :func:`save_weights` and classifier checkpoints store the description itself; those written
before it was (safetensors holding a whole config, classifier checkpoints holding ``pretrain_config``) are read
through the same derivation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from openseer.data.preprocess import Preprocess
from openseer.fileio.atomic import atomic_path
from openseer.fileio.checkpoint import CheckpointError, latest_checkpoint, resolve_checkpoint, save_checkpoint
from openseer.fileio.sharded import latest_sharded, list_sharded, read_meta, read_sharded_tensors
from openseer.models.config import ModelConfig
from openseer.weights.core import (
    PARTS,
    Format,
    Weights,
    check_classifier,
    check_head,
    check_state,
    expected_dim,
    expected_shapes,
)
from openseer.weights.description import describe_recipe, description_dict, read_description

_MAGIC = "openseer-weights"  # safetensors metadata key marking a file written by save_weights
_LAYOUT = "2"  # its value: "1" held a whole pretraining config ("config", "resize"), "2" the description
_IMPORT_NOTES = ("format: vissl", "format: timm")  # the first note of weights finish_import made


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
    """Write ``path`` (safetensors; the description, classes, source, notes and any recipe in its metadata) and
    ``path``.yaml (the description, and the recipe when there is one, for people to read).

    Returns (weights file, YAML file).
    """
    from safetensors.torch import save_file

    from openseer.config import dump_yaml

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    described = description_dict(weights.model, weights.preprocess)
    if weights.recipe is not None:
        described["recipe"] = weights.recipe
    metadata = {
        _MAGIC: _LAYOUT,
        **{key: json.dumps(value) for key, value in described.items()},
        "source": weights.source,
        "notes": json.dumps(weights.notes),
    }
    if weights.classes is not None:
        metadata["classes"] = json.dumps(weights.classes)
    # safetensors wants dense, unshared storage; memory-mapped or view tensors are copied only if needed
    tensors = {k: v.detach().contiguous() for k, v in weights.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    yaml_path = path.with_suffix(".yaml")
    dump_yaml(described, yaml_path)
    return path, yaml_path


def _split_parts(flat: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for key, value in flat.items():
        prefix, _, rest = key.partition(".")
        if prefix in PARTS and rest:
            parts.setdefault(prefix, {})[rest] = value
        else:
            other.append(key)
    return parts, other


def _from_openseer(
    model: ModelConfig,
    preprocess: Preprocess,
    flat: dict[str, torch.Tensor],
    classes: list[str] | None,
    source: str,
    recipe: dict[str, Any] | None,
) -> Weights:
    parts, other = _split_parts(flat)
    if other:
        raise CheckpointError(f"{source}: keys outside backbone/head/classifier: {', '.join(sorted(other))}")
    if "backbone" not in parts:
        raise CheckpointError(f"{source} holds no backbone tensors")
    check_state(
        expected_shapes(model.arch, model.stem), parts["backbone"], f"{source} as a {model.arch} backbone"
    )
    if "head" in parts:
        check_head(model, parts["head"], source)
    classifier = parts.get("classifier")
    if classifier is not None:
        classes = check_classifier(classifier, expected_dim(model.arch), classes, source)
    head = parts.get("head")
    return Weights(model, preprocess, parts["backbone"], head, classifier, classes, source, recipe=recipe)


def _from_safetensors(flat: dict[str, torch.Tensor], metadata: dict[str, str], source: str) -> Weights:
    """A file of :func:`save_weights`, in the layout of its metadata (``openseer-weights``: "2", or "1")."""
    notes = json.loads(metadata.get("notes", "[]"))
    if "model" in metadata:
        stored = {key: json.loads(metadata[key]) for key in ("model", "preprocess") if key in metadata}
        model, preprocess = read_description(stored, source)
        recipe = json.loads(metadata["recipe"]) if "recipe" in metadata else None
    else:  # layout 1: the whole pretraining config, defaults with model.* read off the tensors for imports
        config = json.loads(metadata["config"])
        model, preprocess = describe_recipe(config, metadata.get("resize", "center_crop"))
        recipe = None if notes[:1] and notes[0] in _IMPORT_NOTES else config
    names = json.loads(metadata["classes"]) if "classes" in metadata else None
    return replace(_from_openseer(model, preprocess, flat, names, source, recipe), notes=notes)


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
    model, preprocess = describe_recipe(state["config"])
    flat = dict(state["model"])
    if isinstance(state.get("classifier"), dict):
        flat.update({f"classifier.{k}": v for k, v in state["classifier"].items()})
    classes = list(state["classes"]) if state.get("classes") is not None else None
    return _from_openseer(model, preprocess, flat, classes, source, dict(state["config"]))


def _sharded_checkpoint(folder: Path) -> Path | None:
    """The newest complete ``dcp-<step>`` folder of an FSDP run (:mod:`openseer.fileio.sharded`), when
    ``folder`` is one, or a run / checkpoints folder holding only those."""
    if folder.name.startswith("dcp-") and folder in list_sharded(folder.parent):
        return folder
    for where in (folder / "checkpoints", folder):
        if latest_checkpoint(where) is not None:
            return None  # a run with ordinary checkpoints
        found = latest_sharded(where)
        if found is not None:
            return found
    return None


def _read_sharded(path: Path, source: str) -> Weights:
    """The model of a sharded checkpoint, gathered into one process (only its tensors are read), described by
    the config the run saved beside it."""
    recipe = read_meta(path)["config"]
    model, preprocess = describe_recipe(recipe)
    weights = _from_openseer(model, preprocess, read_sharded_tensors(path, "model"), None, source, recipe)
    return replace(weights, notes=[f"read the sharded checkpoint {path.name}"])


CLASSIFIER_KIND = "openseer-classifier"  # the "kind" of a classifier checkpoint (write_classifier)


def is_classifier_state(state: dict[str, Any]) -> bool:
    return state.get("kind") == CLASSIFIER_KIND


def write_classifier(
    folder: Path,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    classes: list[str],
    head_bn: bool,
    model: ModelConfig,
    preprocess: Preprocess,
    recipe: dict[str, Any] | None,
    protocol: str,
    source: str,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """A classifier checkpoint, ``folder/ckpt-<step>.pt``: an ordinary openseer checkpoint (atomic, checksummed)
    whose ``model`` holds ``backbone.*`` and ``head.*`` ((BatchNorm1d or Identity, Linear)), with the class names,
    the description of the network (``description``: its ``model`` config and the ``preprocess`` the head was
    trained with) and the pretraining ``recipe`` it came from (None for imported weights); ``extra`` carries
    training state (optimiser, step...)."""
    state = {
        "kind": CLASSIFIER_KIND,
        "protocol": protocol,
        "classes": list(classes),
        "head_bn": head_bn,
        "description": description_dict(model, preprocess),
        "recipe": recipe,
        "source": source,
        "model": model_state,
        **(extra or {}),
    }
    return save_checkpoint(state, folder, step, keep=keep)


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
    if "description" in state:
        model, preprocess = read_description(state["description"], source)
        recipe = state.get("recipe")
    else:  # written before the description was stored: the pretraining config and the resize mode
        recipe = state["pretrain_config"]
        model, preprocess = describe_recipe(recipe, state.get("resize", "center_crop"))
    parts, other = _split_parts(dict(state["model"]))
    head = parts.pop("head", {})
    if other or "backbone" not in parts or "1.weight" not in head:
        raise CheckpointError(
            f"{source}: unexpected classifier checkpoint layout (keys {', '.join(sorted(other))})"
        )
    flat = {f"backbone.{k}": v for k, v in parts["backbone"].items()}
    flat |= {f"classifier.{k}": v for k, v in fold_batchnorm(head).items()}
    weights = _from_openseer(model, preprocess, flat, list(state["classes"]), source, recipe)
    notes = ["folded the classifier's BatchNorm into its Linear layer"] if "0.running_mean" in head else []
    return replace(weights, notes=notes)


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
    from openseer.weights import timm_weights, vissl

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
            return _from_safetensors(flat, metadata, source)
        state: Any = flat
    else:
        state = read_torch_file(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not a dict of tensors")
    if fmt in ("auto", "openseer") and is_classifier_state(state):
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
        "name it: format=vissl or format=timm"
    )
