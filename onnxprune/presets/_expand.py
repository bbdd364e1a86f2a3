"""A preset by name, expanded into a recipe's passes, with ``PASS.FIELD`` overrides and its needs checked.

Used by ``onnxprune prune --preset NAME --set PASS.FIELD=VALUE`` and by a recipe's ``preset:`` with
``overrides:``; both end as the same ``passes:`` list, which the recipe then validates pass by pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any

from onnxprune._fields import short
from onnxprune.errors import CalibrationError, OnnxPruneError, RecipeError
from onnxprune.passes import PASSES
from onnxprune.presets._preset import PRESETS, Preset, ordered

__all__ = ["apply_overrides", "check_needs", "expand", "find_preset", "has_torch"]


def _close(name: str, choices: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)


def find_preset(name: str) -> Preset:
    """The registered preset ``name``; an unknown name is refused with the close names (or all of them)."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    close = _close(name, PRESETS.names()) if isinstance(name, str) else []
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(p.name for p in ordered()) or 'none'}"
    raise RecipeError(f"unknown preset {short(name)} ({hint}; see 'onnxprune presets')")


def expand(name: str, overrides: Mapping[str, Any] | None = None, *, what: str = "overrides") -> list[dict[str, Any]]:
    """The preset's passes (``{"name", "config"}`` dicts, fresh copies) with ``overrides`` applied.

    ``what`` names the overrides in errors (``--set`` on the command line, ``overrides`` in a recipe).
    """
    preset = find_preset(name)
    return apply_overrides(preset, preset.recipe_passes(), overrides or {}, what=what)


def apply_overrides(
    preset: Preset, passes: list[dict[str, Any]], overrides: Mapping[str, Any], *, what: str
) -> list[dict[str, Any]]:
    """Set ``PASS.FIELD`` (every pass of that name in the preset) or ``PASS.FIELD.KEY`` (one key of a mapping field).

    A pass the preset does not have, or a field its config does not have, is refused with the names
    it does have.
    """
    if not isinstance(overrides, Mapping):
        raise RecipeError(f"{what} must map PASS.FIELD to values, got {short(overrides)}")
    names = list(dict.fromkeys(p["name"] for p in passes))
    for key, value in overrides.items():
        parts = key.split(".") if isinstance(key, str) else []
        if len(parts) not in (2, 3) or not all(parts):
            raise RecipeError(f"{what} {short(key)}: expected PASS.FIELD (or PASS.FIELD.KEY for a mapping field)")
        pass_name, field, *sub = parts
        if pass_name not in names:
            raise RecipeError(
                f"{what} {key}: preset '{preset.name}' has no pass '{pass_name}' (its passes: {', '.join(names)})"
            )
        fields = {f.name: f for f in dataclasses.fields(PASSES[pass_name].config_class)} if pass_name in PASSES else {}
        if field not in fields:
            close = _close(field, fields)
            hint = f"did you mean {', '.join(close)}?" if close else f"fields: {', '.join(fields)}"
            raise RecipeError(f"{what} {key}: pass '{pass_name}' has no field '{field}' ({hint})")
        for entry in passes:
            if entry["name"] != pass_name:
                continue
            if not sub:
                entry["config"][field] = value
                continue
            current = entry["config"].get(field, _default(fields[field]))
            if not isinstance(current, Mapping):
                raise RecipeError(f"{what} {key}: '{pass_name}.{field}' is not a mapping; set {pass_name}.{field}")
            entry["config"][field] = {**current, sub[0]: value}
    return passes


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None


def has_torch() -> bool:
    """Whether torch can be imported (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def check_needs(preset: Preset, *, calibration: bool, labels: bool | None) -> None:
    """Refuse to run ``preset`` without what it needs (one line each): calibration data, torch, labels.

    ``calibration``: whether calibration data was given; ``labels``: whether labels were (a finetune
    pass's ``labels`` file or labels stored in the calibration data), ``None``: not known yet (not checked).
    """
    needs = preset.requirements
    if "calibration" in needs and not calibration:
        raise CalibrationError(
            f"preset '{preset.name}' needs calibration data: give --calib PATH (calibration.path in a recipe)"
        )
    if "torch" in needs and not has_torch():
        raise OnnxPruneError(f"preset '{preset.name}' needs torch (it fine-tunes): pip install onnxprune[torch]")
    if "labels" in needs and labels is False:
        raise CalibrationError(
            f"preset '{preset.name}' needs labels: give --labels PATH (an .npz holding one integer array, one label "
            "per calibration sample) or calibration data with labels (an .npz array 'labels')"
        )
