"""More references for a result: INT8 compared with the original and with the pruned float model.

A recipe's validation compares the result with its input model. When it also names the original
(``reference``, the ``quantize --reference`` option) or prunes before it quantizes, the result is
compared with those as well: parameters, bytes on disk, interleaved latency and fidelity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import onnx_ir as ir

from onnxprune import _io
from onnxprune.calibration.sources import input_specs
from onnxprune.errors import RecipeError
from onnxprune.report import ModelStats, model_stats
from onnxprune.verify import Validation

__all__ = [
    "Reference",
    "check_reference_inputs",
    "compare_references",
    "load_reference",
    "pruned_before_quantize",
]

#: Passes that change no weight values: a recipe with only these before ``quantize`` did not prune.
_NOT_PRUNING = frozenset({"cleanup"})


@dataclasses.dataclass(frozen=True)
class Reference:
    """A model the result is compared with, besides the input: ``what`` it is, its file (``None``: in memory)."""

    what: str
    model: ir.Model
    path: str | None = None


def pruned_before_quantize(pass_names: Sequence[str]) -> bool:
    """Whether a pass list prunes (changes weights) before its ``quantize`` pass."""
    if "quantize" not in pass_names:
        return False
    return any(name not in _NOT_PRUNING for name in pass_names[: pass_names.index("quantize")])


def check_reference_inputs(reference: ir.Model, model: ir.Model, path: str) -> None:
    """Refuse a reference model whose inputs differ (by name) from the model's: they cannot share data."""
    ours, theirs = [s.name for s in input_specs(model)], [s.name for s in input_specs(reference)]
    if sorted(ours) != sorted(theirs):
        raise RecipeError(f"{path}: the reference model's inputs ({', '.join(theirs)}) differ from ({', '.join(ours)})")


def compare_references(
    references: Sequence[Reference],
    result: ir.Model,
    shapes: Mapping[str, tuple[int, ...]],
    validate: Callable[[ir.Model, ir.Model], Validation],
) -> list[dict[str, Any]]:
    """Each reference's size and cost (``stats``) and the result's validation against it.

    ``validate(reference, result)`` runs the same validation as the recipe's (data, latency runs, threads).
    """
    found = []
    for reference in references:
        stats: ModelStats = model_stats(reference.model, shapes)
        found.append(
            {
                "what": reference.what,
                "model": reference.path,
                "stats": stats.as_dict(),
                "validation": validate(reference.model, result).as_dict(),
            }
        )
    return found


def load_reference(path: str, model: ir.Model) -> Reference:
    """The original model given as ``reference``, checked against ``model``'s inputs."""
    original = _io.load(path)
    check_reference_inputs(original, model, path)
    return Reference("original model", original, path)
