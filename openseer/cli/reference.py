"""The reference of a config dataclass, read off the code: every key with its type, default and description.

Descriptions are the fields' attribute docstrings (the string literal under a field, as in
``openseer/train/config.py``), read by :func:`openseer.config.field_docs` and nowhere written twice, so
``openseer COMMAND --help``, ``docs/cli.md`` and ``docs/config.md`` (written by ``docs/gen_cli_reference.py`` and
``docs/gen_config_reference.py``, which import this module) show the defaults and descriptions the code has.
:func:`undocumented_keys` names the fields that still lack one.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from openseer.config import field_docs, to_dict


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


def class_doc(cls: type) -> str:
    """The class docstring on one line, or '' (not the signature dataclasses make up when there is none)."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(cls.__name__ + "(") else " ".join(doc.split())


def _list_item(tp: Any) -> type | None:
    if get_origin(tp) is list:
        (item,) = get_args(tp)
        if dataclasses.is_dataclass(item):
            return item
    return None


def key_docs(cls: type, instance: Any = NO_DEFAULT, prefix: str = "") -> list[KeyDoc]:
    """Every key of dataclass ``cls`` in declaration order, nested dataclasses flattened after a 'section' row;
    defaults are read off ``instance`` (``cls()`` when not given; a list item has none), descriptions are the
    fields' docstrings (:func:`openseer.config.field_docs`)."""
    if instance is NO_DEFAULT and not prefix:
        instance = cls()
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = prefix + f.name
        default = getattr(instance, f.name) if instance is not NO_DEFAULT else NO_DEFAULT
        doc = docs.get(f.name, "")
        item = _list_item(tp)
        if dataclasses.is_dataclass(tp):
            rows.append(KeyDoc(key, tp, default, doc, "section"))
            rows += key_docs(tp, default, key + ".")
        elif item is not None:
            rows.append(KeyDoc(key, tp, default, doc, "list"))
            rows += key_docs(item, NO_DEFAULT, key + "[i].")
        else:
            rows.append(KeyDoc(key, tp, default, doc))
    return rows


def undocumented_keys(cls: type) -> list[str]:
    """The keys of dataclass ``cls`` (sections and list items included) whose field has no docstring."""
    return [row.key for row in key_docs(cls) if not row.doc]


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
