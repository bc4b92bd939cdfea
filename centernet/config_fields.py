"""One declaration per configuration: dataclass fields that carry their documentation.

A config is a frozen dataclass whose fields are made with :func:`setting` (help text, flag name,
choices, whether the value is a user path). :func:`from_mapping` builds it from a plain mapping (a
YAML file, command-line values), checking every key and value against the field's type: unknown
keys and wrong types are a ``ValueError`` naming the key. A field whose type is itself such a
dataclass is a nested section (a nested mapping). The command line (``workflows/cli_options.py``)
turns the same fields into options. Supported field types: ``int``, ``float``, ``str``, ``bool``,
``tuple[int, ...]``, ``tuple[float, ...]``, ``dict[str, float]``, nested config dataclasses, and
``X | None`` of those. Pure Python: every layer may use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

_META = "centernet"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    default_text: str | None = None,
    choices: tuple[str, ...] | None = None,
    path: bool = False,
    cli: bool = True,
    metavar: str | None = None,
) -> Any:
    """A config field with its documentation.

    Args:
        default: the default value (a dict default is copied per instance).
        help: one sentence for ``--help`` and the README.
        flag: the option name(s), e.g. ``"--workers"`` or ``"--gpu/--cpu"`` (default: the field
            name with dashes).
        default_text: how the default is shown when it is computed (e.g. from other fields).
        choices: the valid values of a string field.
        path: the value is a path or URI a user types (resolved against the working directory).
        cli: whether the field is a command-line option (all are YAML keys).
    """
    meta = {_META: dict(help=help, flag=flag, default_text=default_text, choices=choices, path=path,
                        cli=cli, metavar=metavar)}
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclasses.field(default_factory=lambda: dict(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_info(f: dataclasses.Field) -> dict[str, Any]:
    """The :func:`setting` metadata of a field (empty help for plain fields)."""
    return dict(f.metadata.get(_META, {"help": "", "flag": None, "default_text": None, "choices": None,
                                       "path": False, "cli": True, "metavar": None}))


def path_fields(cls: type) -> list[str]:
    """Names of the (leaf) fields declared as user paths."""
    return [f.name for f, _ in leaf_fields(cls) if field_info(f)["path"]]


def strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if args and type(None) in args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _split_items(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def coerce(name: str, tp: Any, value: Any) -> Any:
    """``value`` checked and converted to the field type ``tp``; ``ValueError`` naming ``name``."""
    base, optional = strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{name}: a value is required")
    origin = typing.get_origin(base)
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        return from_mapping(base, value, source=name)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        with contextlib.suppress(ValueError, TypeError):
            if isinstance(value, str):
                return float(value)
        _bad(name, "a number", value)
    if base is str:
        if isinstance(value, str):
            return value
        _bad(name, "a string", value)
    if origin is tuple:
        item = typing.get_args(base)[0]
        items = _split_items(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            _bad(name, "a list", value)
        return tuple(coerce(f"{name}[{i}]", item, v) for i, v in enumerate(items))
    if origin is dict:
        return _coerce_mapping(name, typing.get_args(base)[1], value)
    raise TypeError(f"{name}: unsupported config field type {tp!r}")


def _coerce_mapping(name: str, value_type: Any, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        pairs = {}
        for part in _split_items(value):
            key, sep, text = part.partition("=")
            if not sep:
                raise ValueError(f"{name}: expected name=value pairs like hm=1,wh=0.1, got {part!r}")
            pairs[key.strip()] = text
        value = pairs
    if not isinstance(value, Mapping):
        _bad(name, "a mapping", value)
    return {str(k): coerce(f"{name}.{k}", value_type, v) for k, v in value.items()}


def _bad(name: str, what: str, value: Any) -> Any:
    raise ValueError(f"{name}: expected {what}, got {value!r}")


def from_mapping(cls: type, data: Mapping[str, Any], *, source: str = "config") -> Any:
    """An instance of ``cls`` from a plain mapping; unknown keys and wrong types are a
    ``ValueError`` that names them (``source`` says where they came from)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r}" + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
                         + f"; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {k: coerce(f"{source}: {k}", hints[k], v) for k, v in data.items()}
    return cls(**values)




def leaf_fields(cls: type) -> list[tuple[dataclasses.Field, type]]:
    """``(field, owner class)`` of every non-section field, nested sections flattened in order."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[dataclasses.Field, type]] = []
    for f in dataclasses.fields(cls):
        base, _ = strip_optional(hints[f.name])
        if dataclasses.is_dataclass(base):
            out += leaf_fields(base)
        else:
            out.append((f, cls))
    return out


def nest_values(cls: type, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``{leaf field name: value}`` (as options give them) -> the nested mapping of ``cls``."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        base, _ = strip_optional(hints[f.name])
        if dataclasses.is_dataclass(base):
            inner = nest_values(base, flat)
            if inner:
                out[f.name] = inner
        elif f.name in flat:
            out[f.name] = flat[f.name]
    return out


def to_plain(obj: Any) -> Any:
    """A config (nested dataclasses, tuples) as plain JSON/YAML data (dicts, lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
