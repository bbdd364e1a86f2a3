"""Accuracy budget: the strongest compression whose measured drop on the validation data stays within a limit.

The recipe's budget pass (the first pass that sets a global compression level) is run at several levels
by bisection between "no compression" and the level the recipe gives, each result validated on the data;
the strongest level whose drop is at most ``max_drop`` wins. The drop is in points: top-1 points with
labels, the task metric's drop times 100 with ``--metric``, and argmax-agreement points otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from onnxprune.errors import RecipeError

__all__ = ["Budget", "BudgetSearch", "budget_of", "drop_points", "search_budget"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The config field that sets a pass's global compression level.

    Attributes:
        index: Position of the pass in the recipe.
        field: The config field (``sparsity``, ``ratio``, ``target_flops``, ...).
        weakest: The value that compresses nothing (or least).
        strongest: The value the recipe gives: the search never compresses more than this.
    """

    index: int
    field: str
    weakest: float
    strongest: float

    def at(self, fraction: float) -> float:
        """The value a fraction of the way from ``weakest`` (0) to ``strongest`` (1)."""
        return self.weakest + fraction * (self.strongest - self.weakest)


#: Per pass: the budget fields it may carry, in order of precedence, with the value that compresses least.
_FIELDS: Mapping[str, Sequence[tuple[str, float]]] = {
    "unstructured": (("sparsity", 0.0),),
    "sparsegpt": (("sparsity", 0.0),),
    "channels": (("target_flops", 1.0), ("target_params", 1.0), ("ratio", 0.0)),
    "lowrank": (("target_flops", 1.0), ("target_params", 1.0), ("energy", 1.0)),
    "depth": (("target_flops", 1.0), ("target_params", 1.0)),
}


def budget_of(passes: Sequence[Any]) -> Budget:
    """The budget of the first pass that has one (``passes``: :class:`~onnxprune.recipe.PassSpec`)."""
    for index, spec in enumerate(passes):
        if spec.name == "channels" and spec.config.get("target_latency") is not None:
            raise RecipeError(
                "--max-drop cannot search a latency budget (target_latency); give --channels or --target-flops"
            )
        for field, weakest in _FIELDS.get(spec.name, ()):
            value = spec.config.get(field)
            if value is not None and not (spec.name == "sparsegpt" and spec.config.get("m")):
                return Budget(index, field, weakest, float(value))
    names = ", ".join(f"{name} ({'/'.join(f for f, _ in fields)})" for name, fields in _FIELDS.items())
    raise RecipeError(f"--max-drop needs a pass with a global budget to search: {names}; N:M has none")


def drop_points(validation: Mapping[str, Any]) -> tuple[float, str]:
    """The measured drop in points and what it measures, from a validation report."""
    metric = validation.get("metric")
    if metric:
        return 100 * (metric["reference"] - metric["candidate"]), f"{metric['spec']} (x100)"
    outputs = validation.get("outputs") or []
    labelled = [o for o in outputs if o.get("accuracy_ref") is not None]
    if labelled:
        return max(100 * (o["accuracy_ref"] - o["accuracy_cand"]) for o in labelled), "top-1 points"
    agreeing = [o["argmax_agreement"] for o in outputs if o.get("argmax_agreement") is not None]
    if agreeing:
        return 100 * (1 - min(agreeing)), "argmax-agreement points"
    raise RecipeError("--max-drop needs labels, --metric or a class output to measure a drop on")


@dataclasses.dataclass(frozen=True)
class BudgetSearch(Generic[T]):
    """The outcome: the value found, its drop and result, and every trial as (value, drop)."""

    budget: Budget
    value: float
    drop: float
    measure: str
    result: T
    trials: tuple[tuple[float, float], ...]

    def as_dict(self, max_drop: float) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "field": self.budget.field,
            "found": self.value,
            "measured_drop": self.drop,
            "max_drop": max_drop,
            "measure": self.measure,
            "trials": [{"value": v, "drop": d} for v, d in self.trials],
        }


def search_budget(
    budget: Budget,
    evaluate: Callable[[float], tuple[float, str, T]],
    max_drop: float,
    *,
    steps: int = 6,
) -> BudgetSearch[T]:
    """Bisect between the weakest and the strongest value for the strongest one within ``max_drop``.

    ``evaluate(value)`` runs the recipe at ``value`` and returns (drop in points, what it measures,
    result). The strongest value is tried first; the drop is assumed to grow with compression.
    """
    trials: list[tuple[float, float]] = []
    best: tuple[float, float, str, T] | None = None

    def attempt(fraction: float) -> bool:
        nonlocal best
        value = budget.at(fraction)
        drop, measure, result = evaluate(value)
        trials.append((value, drop))
        logger.info("budget %s=%.4g: drop %.3g %s (limit %.3g)", budget.field, value, drop, measure, max_drop)
        if drop <= max_drop:
            best = (value, drop, measure, result)
            return True
        return False

    if not attempt(1.0):
        low, high = 0.0, 1.0
        for _ in range(steps):
            middle = (low + high) / 2
            if attempt(middle):
                low = middle
            else:
                high = middle
    if best is None:
        drops = ", ".join(f"{v:.3g}: {d:.2f}" for v, d in trials)
        raise RecipeError(f"no {budget.field} keeps the drop within {max_drop:g} points (tried {drops})")
    value, drop, measure, result = best
    return BudgetSearch(budget, value, drop, measure, result, tuple(trials))
