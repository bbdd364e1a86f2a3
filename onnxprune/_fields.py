"""Type checks of frozen dataclass configs against their annotations: one helper for every config.

Recipes come from YAML, where ``samples: "ten"``, ``lr: .nan`` or ``verify: "yes"`` parse fine; the
configs' ``__post_init__`` call :func:`check_fields` first, so every field gets the CLI's checks:
integers are integers (not booleans), floats are finite numbers, booleans are booleans, strings are
strings, tuples hold items of their type. Failures are one-line ``RecipeError`` lines that name the
field and echo a shortened value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

from onnxprune.errors import RecipeError

__all__ = ["check_at_least", "check_choices", "check_fields", "short"]

#: Longest echo of a user's value in an error message.
_ECHO = 60


def short(value: object, limit: int = _ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters, on one line (for error messages)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a finite number"
    if kind is str:
        return "a string"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is None and isinstance(kind, type):
        return f"a {kind.__name__}"
    return "a mapping"


def _fits(kind: Any, value: Any) -> bool:  # noqa: PLR0911 - one case per kind
    if kind is Any or kind is object:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is None and isinstance(kind, type):
        return isinstance(value, kind)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(a, value) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], v) for v in value)
        return len(args) == len(value) and all(_fits(a, v) for a, v in zip(args, value, strict=True))
    if origin in (Mapping, dict, typing.Mapping) or kind is dict:
        if not isinstance(value, Mapping):
            return False
        key, item = args if len(args) == 2 else (Any, Any)
        return all(_fits(key, k) and _fits(item, v) for k, v in value.items())
    return True  # a type this checker does not know: left to the config's own checks


def check_fields(config: Any, prefix: str = "") -> None:
    """Refuse a dataclass instance whose field values do not fit their annotations (:class:`RecipeError`)."""
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        kind = hints.get(field.name, Any)
        if not _fits(kind, value):
            raise RecipeError(f"{prefix}{field.name} must be {_describe(kind)}, got {short(value)}")


def check_at_least(config: Any, bounds: Mapping[str, int], prefix: str = "") -> None:
    """Refuse integer fields below their bound (``None`` values pass: the field is optional)."""
    for name, low in bounds.items():
        value = getattr(config, name)
        if value is not None and value < low:
            raise RecipeError(f"{prefix}{name} must be >= {low}, got {short(value)}")


def check_choices(config: Any, prefix: str = "") -> None:
    """Make every field with a vocabulary (``metadata["choices"]``, a registry) hold its canonical word.

    An unknown word is refused with the choices; a deprecated alias logs a warning and is replaced.
    Call it from ``__post_init__`` after :func:`check_fields`.
    """
    for field in dataclasses.fields(config):
        choices = field.metadata.get("choices")
        if choices is not None:
            value = choices.canonical(prefix + field.name, getattr(config, field.name))
            object.__setattr__(config, field.name, value)
