"""The files a run reads and writes, checked against each other before any work (see :mod:`onnxprune._paths`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune import _io
from onnxprune._paths import check_outputs, data_files
from onnxprune.metric import metric_file

if TYPE_CHECKING:
    from onnxprune.recipe import Recipe

__all__ = ["check_recipe_paths", "model_inputs"]

InputFiles = dict[str, list[Path]]


def model_inputs(model: ir.Model, what: str = "the input model") -> InputFiles:
    """A loaded model's files: its ``.onnx`` and its external data."""
    source = _io.source_path(model)
    return {what: [source] if source else [], f"{what}'s external data": sorted(_io.external_files(model))}


def _pass_inputs(recipe: Recipe) -> InputFiles:
    """Files the passes read: a fine-tune teacher (with its external data) and labels."""
    found: InputFiles = {}
    for spec in recipe.passes:
        teacher, labels = spec.config.get("teacher"), spec.config.get("labels")
        if isinstance(teacher, str | os.PathLike):
            model, *data = _io.model_input_files(teacher)
            found.setdefault("the teacher model", []).append(model)
            found.setdefault("the teacher model's external data", []).extend(data)
        if isinstance(labels, str | os.PathLike):
            found.setdefault("the labels", []).append(Path(labels))
    return found


def _tokenizer_file(path: str) -> Path:
    """The ``tokenizer.json`` a tokenizer path names (the file, or the one in the folder)."""
    return Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)


def check_recipe_paths(
    recipe: Recipe, model: ir.Model, extra_inputs: Mapping[str, str | os.PathLike] | None = None
) -> None:
    """Refuse a run whose output or report would overwrite a file it reads, or cannot be written.

    ``extra_inputs``: files read before the recipe existed (the recipe file itself).

    Raises:
        OutputPathError: one line naming the output and the input it would overwrite.
    """
    inputs: InputFiles = {
        **model_inputs(model),
        "the calibration data": data_files(recipe.calibration.path),
        "the validation data": data_files(recipe.validation_data),
        **_pass_inputs(recipe),
    }
    if recipe.calibration.text is not None:
        inputs["the tokenizer"] = [_tokenizer_file(recipe.calibration.text.tokenizer)]
    if recipe.reference is not None:
        original, *data = _io.model_input_files(recipe.reference)
        inputs["the reference model"] = [original]
        inputs["the reference model's external data"] = data
    module = metric_file(recipe.metric) if recipe.metric else None
    if module is not None:
        inputs["the metric module"] = [module]
    for what, path in (extra_inputs or {}).items():
        inputs.setdefault(what, []).append(Path(path))
    check_outputs(
        {"-o": recipe.output, "--report": recipe.report},
        inputs,
        external_data=("-o",) if _io.writes_external(model, recipe.external_data) else (),
    )
