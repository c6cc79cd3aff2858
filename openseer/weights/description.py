"""What a network is, stored with its weights: its architecture and head (:class:`ModelConfig`, the ``model.*``
keys) and how an image becomes its input (:class:`~openseer.data.preprocess.Preprocess`: size, mean, std, resize
mode), as timm keeps a ``pretrained_cfg`` with each model.

The description is not a training recipe. A run's checkpoints keep their whole pretraining config, which resuming
needs; the description is derived from it once, when the weights are read (:func:`describe_recipe`), and the
recipe itself travels beside it as a plain dict, for provenance only. Imported weights (SEER/VISSL, timm) get the
architecture read off their tensors and :data:`IMPORTED_PREPROCESS`.

Stored as ``{"model": {...}, "preprocess": {...}}`` (:func:`description_dict`), in safetensors metadata, its YAML
and classifier checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from openseer.config import from_dict, to_dict
from openseer.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, Resize
from openseer.fileio.checkpoint import CheckpointError
from openseer.models.config import ModelConfig

IMPORTED_PREPROCESS = Preprocess(224)
"""The input of imported weights (SEER's and timm's RegNets and ResNets): a 224-px centre crop, normalised with
ImageNet's statistics, as they were evaluated."""


def describe_recipe(
    recipe: Mapping[str, Any], resize: Resize = "center_crop"
) -> tuple[ModelConfig, Preprocess]:
    """(model, preprocess) of a network pretrained with ``recipe`` (a pretraining config as a plain dict, as runs
    and checkpoints store it): its ``model`` section, and as input the first (global) crop's size with the
    training normalisation (``augment.mean``, ``augment.std``), fitted by ``resize``.

    Only these keys are read, so a recipe holding keys of another version still describes its network; of the
    ``model`` section, only :class:`ModelConfig`'s keys (a run's ``model.init``, what it started from, says nothing
    about what the network is).
    """
    try:
        model_keys = recipe["model"]
        size = int(recipe["crops"][0]["size"])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"the stored pretraining config does not say what the network is (no model section or first crop "
            f"size: {err.__class__.__name__} {err})"
        ) from err
    augment = recipe.get("augment") or {}
    preprocess = Preprocess(
        size, augment.get("mean", IMAGENET_MEAN), augment.get("std", IMAGENET_STD), resize
    )
    return from_dict(ModelConfig, network_keys(model_keys), prefix="model."), preprocess


def network_keys(model_keys: Any) -> Any:
    """The ``model.*`` keys that describe the network (:class:`ModelConfig`'s) of a pretraining config's ``model``
    section: a run's own keys (``init``) are left out."""
    if not isinstance(model_keys, Mapping):
        return model_keys  # from_dict says what is wrong with it
    return {k: v for k, v in model_keys.items() if k not in _RUN_MODEL_KEYS}


_RUN_MODEL_KEYS = frozenset({"init"})
"""Keys of a pretraining config's ``model`` section that belong to the run, not to the network."""


def description_dict(model: ModelConfig, preprocess: Preprocess) -> dict[str, Any]:
    """``{"model": ..., "preprocess": ...}`` as plain values (JSON and YAML): of ``model`` only
    :class:`ModelConfig`'s own fields, whatever subclass it is (a pretraining config's ``model.init`` stays out)."""
    network = {f.name: to_dict(getattr(model, f.name)) for f in dataclasses.fields(ModelConfig)}
    return {"model": network, "preprocess": preprocess.to_dict()}


def read_description(stored: Mapping[str, Any], where: str) -> tuple[ModelConfig, Preprocess]:
    """(model, preprocess) from :func:`description_dict`'s layout; ``where`` names the file in errors."""
    if not isinstance(stored.get("model"), Mapping) or not isinstance(stored.get("preprocess"), Mapping):
        raise CheckpointError(f"{where}: the stored description needs 'model' and 'preprocess' mappings")
    try:
        preprocess = Preprocess.from_dict(stored["preprocess"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{where}: unreadable preprocessing {dict(stored['preprocess'])}: {err}"
        ) from err
    return from_dict(ModelConfig, stored["model"], prefix="model."), preprocess
