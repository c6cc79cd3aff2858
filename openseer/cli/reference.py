"""The reference of a config dataclass, read off the code: every key with its type, default and description.

Descriptions are attribute docstrings (the string literal under a field, as in ``openseer/train/config.py``), so
``openseer COMMAND --help`` and ``docs/config.md`` (written by ``docs/gen_config_reference.py``, which imports
this module) show the defaults the code has, never a copy of them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from openseer.config import to_dict

# Descriptions of PretrainConfig's fields whose dataclass has no attribute docstring (yet), by dotted key. A
# docstring in the code always wins; `docs/gen_config_reference.py --check` (and tests/test_docs.py) report
# entries for keys that no longer exist, so they cannot linger unnoticed.
PRETRAIN_FALLBACK: dict[str, str] = {
    "data.workers": "DataLoader worker processes that decode and augment images (per-image path, evaluation).",
    "crops[i].size": "Output side of these crops in pixels.",
    "crops[i].count": "How many crops of this size are drawn per image.",
    "crops[i].scale": "[min, max] area of a crop as a fraction of the image (RandomResizedCrop).",
    "augment.flip_p": "Probability of a horizontal flip.",
    "augment.color_strength": "SimCLR's colour strength s: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s).",
    "augment.color_p": "Probability of applying the colour jitter.",
    "augment.grayscale_p": "Probability of converting a crop to grey.",
    "augment.blur_p": "Probability of a Gaussian blur.",
    "augment.blur_sigma": "[min, max] of the blur's sigma in pixels.",
    "augment.mean": "Per-channel mean subtracted after scaling to [0, 1] (ImageNet's by default).",
    "augment.std": "Per-channel standard deviation divided by after the mean.",
    "model.head_hidden": "Hidden widths of the projection MLP (SwAV RN50: [2048]; SEER: [8192, 8192]).",
    "model.head_bn": "BatchNorm after each hidden Linear layer of the projection MLP.",
    "model.out_dim": "Dimension of the L2-normalised embedding z that the prototypes score.",
    "model.prototypes": "Number K of prototypes (SwAV ImageNet: 3000; SEER: 16000).",
    "model.channels_last": "NHWC memory format for the backbone (faster convolutions on most hardware).",
    "swav.temperature": "Softmax temperature of the swapped prediction (at the end of the run when "
    "swav.temperature_start is set).",
    "swav.temperature_start": "Temperature at the start of the run, following a cosine to swav.temperature "
    "over the run (steps, or the time budget); null: constant.",
    "swav.epsilon": "Entropic regularisation of Sinkhorn-Knopp; larger gives flatter codes.",
    "swav.sinkhorn_iters": "Sinkhorn-Knopp iterations per batch (SEER: 10).",
    "swav.crops_for_assign": "Indices of the crops whose codes are computed; every other crop predicts them.",
    "swav.queue_start_epoch": "Epoch from which the queue's embeddings join the code computation.",
    "swav.freeze_prototypes_iters": "Steps at the start during which the prototypes get no gradient.",
    "optim.name": "'lars' (SwAV, SEER) or plain 'sgd' with momentum.",
    "optim.epochs": "Length of the schedule in passes over the training images (ignored with run.budget_minutes).",
    "optim.start_lr": "Learning rate at the start of the warm-up, per 256 images (scaled like base_lr).",
    "optim.warmup_epochs": "Linear warm-up from start_lr to base_lr, in epochs.",
    "optim.weight_decay": "L2 weight decay (not applied to biases and normalisation parameters).",
    "optim.momentum": "SGD/LARS momentum.",
    "optim.trust_coefficient": "LARS trust coefficient: each tensor's rate is scaled by this x ||w|| / (||g|| + wd ||w||).",
    "run.out_dir": "Run folder: config.yaml, metrics.jsonl, tensorboard/, checkpoints/, summary.json.",
    "run.seed": "Seed of initialisation, data order and augmentation.",
    "run.precision": "'fp32', or autocast to 'bf16' or 'fp16' (fp16 with loss scaling).",
    "run.compile": "Wrap the model in torch.compile.",
    "run.max_steps": "Stop after this many steps (smoke tests); the schedule keeps its full length.",
    "run.log_every": "Write metrics (and check for collapse) every this many steps.",
    "run.checkpoint_every": "Write a checkpoint every this many steps (and always at the end).",
    "run.keep_checkpoints": "Newest checkpoints kept; older ones are deleted.",
    "run.progress": "Show a progress bar.",
    "run.tensorboard": "Mirror the metrics to TensorBoard in run.out_dir/tensorboard.",
    "run.knn_k": "Neighbours of the kNN evaluation.",
    "run.knn_temperature": "Temperature of the kNN's similarity weighting.",
    "parallel.strategy": "'ddp': every process holds the whole model; 'fsdp': weights, gradients and optimiser state "
    "are sharded over the processes (see docs/scaling.md).",
    "run.dist_timeout_s": "Timeout of every collective across processes: a dead rank ends the job instead of a hang.",
}


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()
"""The default of a key inside a list item (``crops[i].size``): each item gives its own."""


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One row of a config reference."""

    key: str
    """Dotted key as the user writes it; ``crops[i].size`` for a field of each item of a list."""
    type: Any
    """The field's annotation (resolved)."""
    default: Any
    """The default value, or :data:`NO_DEFAULT` for a field of a list item."""
    doc: str
    """The attribute docstring (whitespace collapsed), or ''."""
    kind: Literal["value", "section", "list"] = "value"
    """'section': a nested dataclass, whose keys follow (``features`` then ``features.workers``...); 'list': a list
    of dataclasses, set as a whole, whose item fields follow (``crops`` then ``crops[i].size``...)."""


@cache
def _own_field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings written in ``cls``'s own body: the string literal right after ``name: type = ...``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a REPL or generated: no source to read
        return {}
    body = ast.parse(textwrap.dedent(source)).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of every field of dataclass ``cls``, inherited ones included (a subclass's own
    docstring for a field replaces its base's)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def class_doc(cls: type) -> str:
    """The class docstring on one line, or '' (not the signature dataclasses make up when there is none)."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(cls.__name__ + "(") else " ".join(doc.split())


def _fallback(cls: type) -> Mapping[str, str]:
    from openseer.train.config import PretrainConfig

    return PRETRAIN_FALLBACK if cls is PretrainConfig else {}


def _list_item(tp: Any) -> type | None:
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        if dataclasses.is_dataclass(item):
            return item
    return None


def key_docs(
    cls: type, instance: Any = NO_DEFAULT, prefix: str = "", fallback: Mapping[str, str] | None = None
) -> list[KeyDoc]:
    """Every key of dataclass ``cls`` in declaration order, nested dataclasses flattened after a 'section' row;
    defaults are read off ``instance`` (``cls()`` when not given; a list item has none)."""
    if instance is NO_DEFAULT and not prefix:
        instance = cls()
    fallback = _fallback(cls) if fallback is None else fallback
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = prefix + f.name
        default = getattr(instance, f.name) if instance is not NO_DEFAULT else NO_DEFAULT
        doc = docs.get(f.name) or fallback.get(key, "")
        item = _list_item(tp)
        if dataclasses.is_dataclass(tp):
            rows.append(KeyDoc(key, tp, default, doc or class_doc(tp), "section"))
            rows += key_docs(tp, default, key + ".", fallback)
        elif item is not None:
            rows.append(KeyDoc(key, tp, default, doc or class_doc(item), "list"))
            rows += key_docs(item, NO_DEFAULT, key + "[i].", fallback)
        else:
            rows.append(KeyDoc(key, tp, default, doc))
    return rows


def type_text(tp: Any, markdown: bool = False) -> str:
    """A type for people: ``int or null``, ``list of float``, ``fp32|bf16`` (markdown: code-quoted, escaped)."""
    origin = get_origin(tp)
    if origin is Literal:
        if markdown:
            return " \\| ".join(f"`{a}`" for a in get_args(tp))
        return "|".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        named = [type_text(a, markdown) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        (elem,) = get_args(tp)
        return f"list of {type_text(elem, markdown)}"
    if origin is tuple:
        return "[" + ", ".join(type_text(a, markdown) for a in get_args(tp)) + "]"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def value_text(value: Any) -> str:
    """A default as one would write it on the command line or in YAML (flow style: ``[0.01, 0.1]``, ``null``)."""
    text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def format_keys(
    rows: list[KeyDoc], width: int, notes: Mapping[str, str] | None = None, indent: int = 2
) -> str:
    """Plain-text listing for ``--help``: ``key: type = default`` (plus ``notes[key]``), its description
    wrapped beneath."""
    notes = notes or {}
    lines = []
    pad = " " * indent
    for row in rows:
        if row.kind == "section":
            head = f"{row.key}.*"
        elif row.default is NO_DEFAULT:
            head = f"{row.key}: {type_text(row.type)}"
        else:
            head = f"{row.key}: {type_text(row.type)} = {value_text(row.default)}"
        if row.key in notes:
            head += f"  ({notes[row.key]})"
        lines.append(pad + head)
        if row.doc:
            lines += textwrap.wrap(
                row.doc,
                width,
                initial_indent=pad + "    ",
                subsequent_indent=pad + "    ",
                break_on_hyphens=False,
            )
    return "\n".join(lines)
