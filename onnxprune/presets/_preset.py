"""A preset: a seed method by name, expanding to a recipe's passes (never a copy of a pass)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from onnxprune.passes._registry import Registry

__all__ = ["NEEDS", "PRESETS", "Preset", "ordered"]

#: What a preset may need beyond the model: calibration inputs, labels aligned with them, torch.
NEEDS = ("calibration", "labels", "torch")

#: What a pass needs whatever its config: fine-tuning trains in torch on the calibration inputs.
_PASS_NEEDS = {"finetune": ("calibration", "torch")}


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
        if not self.passes or not all(isinstance(p, Mapping) and isinstance(p.get("name"), str) for p in self.passes):
            raise ValueError(f"preset {self.name}: passes must be a non-empty tuple of {{name, config}} mappings")

    @property
    def requirements(self) -> tuple[str, ...]:
        """What the preset needs: its ``needs`` plus what its passes always need (``finetune``: torch, data)."""
        implied = {need for entry in self.passes for need in _PASS_NEEDS.get(entry["name"], ())}
        return tuple(need for need in NEEDS if need in implied or need in self.needs)

    def recipe_passes(self) -> list[dict[str, Any]]:
        """The passes as a recipe's ``passes:`` entries (fresh plain data: lists, not tuples)."""
        return [{"name": p["name"], "config": _plain(p.get("config") or {})} for p in self.passes]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (``onnxprune presets --json``)."""
        return {
            "name": self.name,
            "method": self.method,
            "paper": self.paper,
            "description": self.description,
            "needs": list(self.requirements),
            "notes": self.notes,
            "passes": self.recipe_passes(),
        }


def _plain(value: Any) -> Any:
    """A deep copy of ``value`` as YAML-friendly data (mappings as dicts, tuples as lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


PRESETS: Registry[Preset] = Registry("preset")


def ordered() -> list[Preset]:
    """The registered presets by METHODS.md id (M1, M2, ..., then those of no seed method), then name."""

    def key(preset: Preset) -> tuple[int, str]:
        digits = preset.method.removeprefix("M")
        return (int(digits) if digits.isdigit() else 10_000, preset.name)

    return sorted(PRESETS, key=key)
