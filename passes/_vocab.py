"""The option vocabulary shared by the passes: each concept named once, with its help text.

``scope``, ``normalize`` and ``aggregate`` mean the same in every pass that takes them, with the same
words. A config field names its vocabulary in its metadata (:func:`choice_field`), so config checks,
CLI choices, ``--help`` and ``onnxprune passes`` all read the words and their descriptions from here.
Old spellings stay loadable as deprecated aliases (a warning, then the new word).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from onnxprune.passes._registry import Registry

__all__ = ["AGGREGATES", "NORMALIZERS", "SCOPES", "Word", "choice_field", "choices_of"]


@dataclasses.dataclass(frozen=True)
class Word:
    """One value of a vocabulary, with the line ``--help`` shows for it."""

    name: str
    description: str


SCOPES: Registry[Word] = Registry("scope")
SCOPES.register(Word("layer", "every weight tensor (or channel group) loses the same fraction"))
SCOPES.register(Word("global", "one threshold over all (normalized) scores; the same as allocation global"))
SCOPES.alias("uniform", "layer", deprecated=True)  # the channels pass's old word

NORMALIZERS: Registry[Word] = Registry("normalize")
NORMALIZERS.register(Word("none", "raw scores"))
NORMALIZERS.register(Word("mean", "divide by the mean score"))
NORMALIZERS.register(Word("max", "divide by the largest score"))
NORMALIZERS.register(Word("l2", "divide by the L2 norm of the scores"))
NORMALIZERS.register(Word("sum", "divide by the sum of the scores"))

AGGREGATES: Registry[Word] = Registry("aggregate")
AGGREGATES.register(Word("sum", "sum of the members' scores"))
AGGREGATES.register(Word("mean", "mean of the members' scores"))
AGGREGATES.register(Word("max", "largest of the members' scores"))


def choice_field(default: str, choices: Registry[Any]) -> Any:
    """A config field taking a word (or current alias) of ``choices``, made canonical by ``check_choices``."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def choices_of(config_class: type, name: str) -> Registry[Any] | None:
    """The vocabulary (a registry) of a config field, if it has one."""
    for field in dataclasses.fields(config_class):
        if field.name == name:
            return field.metadata.get("choices")
    return None
