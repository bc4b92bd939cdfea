"""Command-line options from config declarations (:mod:`centernet.config_fields`).

:func:`cli_parameters` turns a config dataclass's fields into Typer options for a command, each
defaulting to ``None`` so that only the flags a user gave override the YAML file and the declared
defaults; ``--help`` shows each field's help and declared default. Nested sections are flattened
into their fields' options.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from centernet.config_fields import field_info, leaf_fields, nest_values, strip_optional


def _option_type(tp: Any) -> Any:
    base, _ = strip_optional(tp)
    return base if base in (int, float, bool, str) else str


def _default_text(f: dataclasses.Field, info: dict[str, Any]) -> str:
    if info["default_text"]:
        return info["default_text"]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def cli_parameters(cls: type, *, skip: tuple[str, ...] = (), rename: Mapping[str, str] | None = None
                   ) -> list[inspect.Parameter]:
    """Typer options for every command-line field of ``cls`` (each ``None`` unless given)."""
    import typer

    params = []
    for f, owner in leaf_fields(cls):
        hints = typing.get_type_hints(owner)
        info = field_info(f)
        if not info["cli"] or f.name in skip:
            continue
        flag = (rename or {}).get(f.name) or info["flag"] or "--" + f.name.replace("_", "-")
        text = info["help"]
        if info["choices"]:
            text += f" One of: {', '.join(info['choices'])}."
        text += f" [default: {_default_text(f, info)}]"
        if flag.split("/")[0] != "--" + f.name.replace("_", "-"):
            text += f" (config key: {f.name})"
        metavar = info["metavar"] or ("|".join(info["choices"]) if info["choices"] else None)
        option = typer.Option(None, flag, help=text, show_default=False, metavar=metavar)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=_option_type(hints[f.name]) | None))
    return params


def given_values(cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields among ``kwargs`` that a user gave (not ``None``), nested as ``cls`` is."""
    names = {f.name for f, _ in leaf_fields(cls)}
    return nest_values(cls, {k: v for k, v in kwargs.items() if k in names and v is not None})


def with_signature(fn: Callable[..., Any], params: list[inspect.Parameter]) -> Callable[..., Any]:
    """``fn(**kwargs)`` presented to Typer with the parameters ``params``."""
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return fn


def option(name: str, annotation: Any, default: Any, *flags: str, help: str, **kwargs: Any) -> inspect.Parameter:
    """A keyword-only Typer option parameter for commands whose signature is assembled
    (:func:`with_signature`)."""
    import typer

    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *flags, help=help, **kwargs))
