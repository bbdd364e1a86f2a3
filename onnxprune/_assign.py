"""``KEY=VALUE`` command-line assignments (``--method-option``, preset overrides), values read as YAML scalars."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from onnxprune._fields import short
from onnxprune.errors import RecipeError

__all__ = ["parse_assignments"]

#: A number in exponent form without a dot (``1e-3``), which YAML 1.1 reads as a string.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_assignments(items: Iterable[str], what: str) -> dict[str, Any]:
    """``{"key": value}`` from ``KEY=VALUE`` strings; ``VALUE`` is a YAML scalar or list (``0.3``, ``[a, b]``).

    ``1e-3`` is a number, as on the command line elsewhere (YAML 1.1 alone would read a string).

    ``what`` names the option in errors (one line each: no ``=``, an empty key, a repeated key, bad YAML).
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"{what} takes KEY=VALUE, got {short(item)}")
        if key in result:
            raise RecipeError(f"{what} sets '{key}' twice")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise RecipeError(f"{what} {key}: cannot read the value {short(text)}") from None
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, dict):
            raise RecipeError(f"{what} {key}: the value must be a number, word, or list, got {short(text)}")
        result[key] = value
    return result
