"""A preset: a seed method by name, expanding to a recipe's passes (never a copy of a pass)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from onnxprune.passes._registry import Registry

__all__ = ["NEEDS", "PRESETS", "Preset"]

#: What a preset may need beyond the model: calibration inputs, labels aligned with them, torch.
NEEDS = ("calibration", "labels", "torch")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One seed method as a named recipe.

    Attributes:
        name: Registry name (``--preset NAME``, ``preset: NAME`` in a recipe).
        method: Its id in ``docs/METHODS.md`` (``M23``).
        paper: Authors, title, venue and year.
        description: One line: what it does.
        passes: The recipe passes it expands to, in order: ``{"name": PASS, "config": {...}}``.
        needs: Items of :data:`NEEDS` it cannot run without.
        notes: What differs from the paper (e.g. a training-time method approximated during fine-tuning).
    """

    name: str
    method: str
    paper: str
    description: str
    passes: tuple[Mapping[str, Any], ...]
    needs: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"preset {self.name}: unknown needs {sorted(unknown)}")


PRESETS: Registry[Preset] = Registry("preset")
