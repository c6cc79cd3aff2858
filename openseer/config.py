"""Typed configuration: dataclass defaults, YAML overrides, ``key=value`` overrides, strict validation.

Each command owns one dataclass tree, every field described by its attribute docstring (:func:`field_docs`, the
text of ``--help`` and of the docs). A YAML file (or a named preset shipped in ``openseer/presets``) holds only
the keys it changes; command-line ``a.b=value`` pairs come last. :func:`load_config` is the one merge, of the
command line and of the Python API alike. A misspelt key or a value of the wrong type is a :class:`ConfigError`
naming the key and what is allowed, raised before any work starts.

Hand-written rather than OmegaConf: ~150 lines give exact, user-facing messages ("unknown key optim.lrr, did you
mean optim.lr?") and plain dataclasses as the result, with no extra runtime dependency.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from openseer.fileio.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, phrased for the user."""


Auto = Literal["auto"]
"""A value sized from the data when pretraining starts (``openseer.train.sizing``): ``optim.batch_size: auto``."""


def resolved(value: T, key: str) -> T:
    """``value``, or a ConfigError naming ``key`` while it is still 'auto' (only pretraining sizes it)."""
    if value == "auto":
        raise ConfigError(
            f"config key '{key}' is 'auto': pretraining sizes it from the data when it starts "
            "(openseer.train.sizing); give a number to use it elsewhere"
        )
    return value


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (list, Sequence):
        return f"a list of {_describe(get_args(tp)[0])}"
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if _is_dataclass_type(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    bad = ConfigError(f"config key '{key}': got {value!r}, expected {_describe(tp)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise bad
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise bad
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, Sequence):
        if not isinstance(value, list | tuple):
            raise bad
        (elem,) = get_args(tp)
        return [_coerce(elem, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise ConfigError(f"config key '{key}': unsupported type {tp!r}")


def key_paths(cls: type) -> list[str]:
    """Every settable key of dataclass ``cls`` in dotted form (``optim.base_lr``); a list of dataclasses is one
    key (``crops``), set as a whole."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        keys += [f"{f.name}.{k}" for k in key_paths(tp)] if _is_dataclass_type(tp) else [f.name]
    return keys


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
    """The description of every documented field of dataclass ``cls``: its attribute docstring (the string
    literal under the field), whitespace collapsed, inherited ones included (a subclass's own docstring for a
    field replaces its base's). The one source of every config key's help text (``openseer COMMAND --help``,
    docs/cli.md, docs/config.md)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def closest_key(key: str, keys: Sequence[str]) -> str | None:
    """The key of ``keys`` that ``key`` most likely meant: a near spelling of the whole dotted key, else a key
    whose last part is (nearly) ``key``'s last part (``workers`` -> ``features.workers``)."""
    close = difflib.get_close_matches(key, keys, n=1)
    if close:
        return close[0]
    leaf = key.rsplit(".", 1)[-1]
    by_leaf: dict[str, str] = {}
    for k in keys:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], k)
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1)
    return by_leaf[close[0]] if close else None


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and value."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            # a close name at this level first; else any key below it (a top-level `workers` that belongs
            # in `features`)
            close = difflib.get_close_matches(str(key), names, n=1) or [closest_key(str(key), key_paths(cls))]
            hint = f"; did you mean '{prefix}{close[0]}'?" if close[0] else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{hint} (allowed under '{prefix or '<top>'}': {', '.join(names)})"
            )
    kwargs = {name: _coerce(hints[name], data[name], prefix + name) for name in names if name in data}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Plain YAML-friendly structure (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def deep_merge(base: dict, override: Mapping) -> dict:
    """Recursive dict merge; lists and scalars in ``override`` replace those in ``base``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def nested(key: str, value: Any) -> dict:
    """``"optim.base_lr", 0.6`` -> ``{"optim": {"base_lr": 0.6}}``: a dotted key as the nested mapping of a
    YAML config file."""
    *parents, leaf = key.split(".")
    out: dict = {leaf: value}
    for part in reversed(parents):
        out = {part: out}
    return out


def parse_override(pair: str) -> tuple[str, Any]:
    """``"optim.lr=0.3"`` -> ``("optim.lr", 0.3)``; the value is parsed as YAML (a scalar, a list, a mapping)."""
    if "=" not in pair:
        raise ConfigError(f"override '{pair}' is not of the form key=value (e.g. optim.base_lr=0.6)")
    key, raw = pair.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{pair}' has an empty key")
    try:
        return key, yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{pair}': cannot parse the value ({err})") from err


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["optim.lr=0.3", "crops=[...]"]`` -> nested dict, later pairs over earlier ones."""
    out: dict = {}
    for pair in pairs:
        out = deep_merge(out, nested(*parse_override(pair)))
    return out


def preset_names() -> list[str]:
    root = resources.files("openseer") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path) -> dict:
    """A YAML file by path, or a shipped preset by name (``cpu``, ``swav-rn50``...)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():  # a folder named like a preset is no config
        if not path.exists():
            raise ConfigError(f"config file does not exist: {path}")
        text = path.read_text()
    else:
        preset = resources.files("openseer") / "presets" / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(f"unknown preset '{name_or_path}' (available: {', '.join(preset_names())})")
        text = preset.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse {name_or_path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: the top level must be a mapping of config keys")
    return data


Override = str | tuple[str, Any]
"""One ``key=value`` override: a string whose value is YAML, or a (dotted key, value) pair of a typed value."""


def load_config(
    base: type[T] | T,
    sources: Sequence[str | os.PathLike] = (),
    overrides: Sequence[Override] = (),
    values: Mapping[str, Any] | None = None,
) -> T:
    """The one merge of every config: ``base`` (a config dataclass, for its defaults, or an instance of one), then
    each YAML source in order (a file, or a preset's name), then ``values``, then each override in order.

    ``values``: typed values by dotted key (``{"features.workers": 0}``) that must not be read as YAML, such as
    the command line's positional paths. ``overrides``: ``"key=value"`` strings (the value parsed as YAML) or
    ``(key, value)`` pairs of typed values (the Python API's keyword options, applied after its strings);
    a value may be a dataclass instance or a nested mapping, which is merged into the section it names.
    """
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got the string {overrides!r}")
    cls: type[T] = base if isinstance(base, type) else type(base)
    merged: dict = to_dict(base() if isinstance(base, type) else base)
    for source in sources:
        merged = deep_merge(merged, read_yaml(source))
    layers = [*(values or {}).items(), *(parse_override(o) if isinstance(o, str) else o for o in overrides)]
    for key, value in layers:
        merged = deep_merge(merged, nested(key, to_dict(value)))
    return from_dict(cls, merged)


def dump_yaml(obj: Any, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
