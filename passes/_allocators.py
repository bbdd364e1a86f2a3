"""Allocators, registered by name: per-unit ratios that spend one global budget.

A unit is a prunable weight (unstructured, SparseGPT) or a channel group (structured). An allocator
declares what it needs -- calibration statistics (``needs_data``), a sensitivity table
(``needs_sensitivity``) -- and which kinds of pruning it serves, and returns a ratio per unit whose
cost-weighted mean is the budget (sparsity over the prunable parameters, or the fraction of channels).

* ``uniform``: every unit gets the budget.
* ``global``: one threshold over the units' (normalized) scores.
* ``sensitivity``: the ratios minimizing the summed measured output error (Lagrangian: each unit's
  error curve is made monotone and convex, its segments are taken cheapest-first across units until
  the budget is met, the last one partially). A unit whose error rises steeply stays dense.
* ``owl``: outlier-weighed layer-wise sparsity (Yin et al., 2023): layers with more Wanda outliers
  (scores above ``M`` times the layer mean) get less sparsity, within ``budget ± λ``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxprune._fields import short
from onnxprune.analysis.weights import Weight, read_weight
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes._registry import Registry
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, neuron_rows, normalizer, score
from onnxprune.passes._select import prune_lowest

if TYPE_CHECKING:
    from onnxprune.analysis.sensitivity import Settings, Table

__all__ = [
    "ALLOCATORS",
    "AllocUnit",
    "Allocator",
    "Gains",
    "Ratio",
    "allocator",
    "check_allocation",
    "hull_segments",
    "nm_coverage",
    "owl_ratios",
    "scope_allocation",
    "sensitivity_curves",
    "sensitivity_ratios",
    "weight_ratios",
]

#: OWL's outlier threshold (times the layer's mean Wanda score) and sparsity spread (paper defaults)
OWL_M = 5.0
OWL_LAMBDA = 0.08


@dataclasses.dataclass(frozen=True)
class AllocUnit:
    """A unit to allocate: its name, its cost (elements or channels) and, lazily, its scores.

    For an allocator with ``rows`` also, lazily, the weight's values as ``[neurons, fan-in]`` rows,
    its kernel size (``kh·kw``; 1 for Gemm/MatMul) and its output positions per sample (a Conv's
    ``H·W`` where the shape is known, else 1).
    """

    name: str
    cost: float
    scores: Callable[[], np.ndarray] | None = None
    values: Callable[[], np.ndarray] | None = None
    kernel: int = 1
    patches: int = 1


@dataclasses.dataclass(frozen=True)
class Gains:
    """Per-weight multipliers as ``[neurons, fan-in]`` rows (0: pruned).

    The ratio of an allocator that rewrites the kept values too (randomized SiPP's reweighted samples).
    """

    rows: np.ndarray


Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]
#: a unit's ratio: one for the unit, or (allocators with ``rows``) one per neuron, or multipliers
Ratio = float | np.ndarray | Gains


@dataclasses.dataclass(frozen=True)
class Allocator:
    """``uniform``: the budget for every unit.

    Attributes:
        name: Registry name (``--allocation``).
        description: One line for ``--help``.
        needs_data: Needs calibration statistics (Wanda feature norms).
        needs_sensitivity: Needs a sensitivity table (measured on the calibration data).
        kinds: Pruning kinds it serves (``unstructured``, ``channels``).
        rows: Its units' scores come as ``[neurons, fan-in]`` rows and a unit's ratio may be one per
            neuron (an array).
        scores_by: The importance its scores are (``None``: the pass's).
        ranks: Those scores also choose the weights pruned (the pass's importance becomes ``scores_by``).
    """

    name: str = "uniform"
    description: str = "the same ratio for every layer or group"
    needs_data: bool = False
    needs_sensitivity: bool = False
    kinds: tuple[str, ...] = ("unstructured", "channels")
    rows: bool = False
    scores_by: str | None = None
    ranks: bool = False

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, Ratio]:
        """Ratio per unit name, cost-weighted mean ``budget``.

        An allocator with ``rows`` gets each unit's scores as ``[neurons, fan-in]`` rows and may give a
        unit an array of per-neuron ratios (``scores_by``: the importance those scores are, ``ranks``:
        they also choose which weights go).
        """
        return {u.name: budget for u in units}

    @property
    def uses_budget(self) -> bool:
        """Whether the ratios follow the budget (``False``: they follow from the allocator's own rule)."""
        return True

    def check(self, kind: str) -> None:
        """Refuse a pruning kind this allocator does not serve."""
        if kind not in self.kinds:
            raise RecipeError(f"allocation '{self.name}' is for {' and '.join(self.kinds)} pruning, not {kind}")

    def option_names(self) -> tuple[str, ...]:
        """Its options (``--allocation-option KEY=VALUE``): the fields a subclass adds."""
        base = {f.name for f in dataclasses.fields(Allocator)}
        return tuple(f.name for f in dataclasses.fields(self) if f.name not in base)

    def configured(self, options: Mapping[str, Any]) -> Allocator:
        """A copy with ``options`` set; unknown options or values of the wrong type are refused."""
        known = self.option_names()
        for key, value in options.items():
            if key not in known:
                hint = ", ".join(known) or "none"
                raise RecipeError(f"allocation '{self.name}' has no option {short(key)} (its options: {hint})")
            default = getattr(self, key)
            wanted = float if isinstance(default, float) else type(default)
            if wanted is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise RecipeError(f"allocation option {key} must be a {wanted.__name__}, got {short(value)}")
        configured = dataclasses.replace(self, **options)
        configured.validate()
        return configured

    def validate(self) -> None:
        """Refuse option values out of range (one line)."""


@dataclasses.dataclass(frozen=True)
class GlobalThreshold(Allocator):
    """One threshold over every unit's scores: each unit's ratio is its share below it."""

    name: str = "global"
    description: str = "one threshold over all (normalized) scores"

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, float]:
        fns = [u.scores for u in units if u.scores is not None]
        if len(fns) != len(units):
            raise ValueError("global allocation needs every unit's scores")
        n = int(round(budget * sum(u.cost for u in units)))
        keep = prune_lowest(fns, n)
        return {u.name: 1.0 - float(np.count_nonzero(keep(i))) / max(u.cost, 1) for i, u in enumerate(units)}


@dataclasses.dataclass(frozen=True)
class Sensitivity(Allocator):
    """Minimize the summed measured output error under the budget."""

    name: str = "sensitivity"
    description: str = "per-unit ratios minimizing the summed measured output error (sensitivity analysis)"
    needs_data: bool = True
    needs_sensitivity: bool = True

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, float]:
        if curves is None:
            raise ValueError("sensitivity allocation needs a sensitivity table")
        return sensitivity_ratios(units, budget, curves)


@dataclasses.dataclass(frozen=True)
class OWL(Allocator):
    """Outlier-weighed layer-wise sparsity (OWL) from each layer's Wanda outlier ratio."""

    name: str = "owl"
    description: str = f"outlier-weighed layer-wise sparsity (OWL, M={OWL_M:g}, lambda={OWL_LAMBDA:g}); needs data"
    needs_data: bool = True
    kinds: tuple[str, ...] = ("unstructured",)
    scores_by: str | None = "wanda"

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, float]:
        outliers = []
        for unit in units:
            assert unit.scores is not None, "owl needs every unit's Wanda scores"
            scores = unit.scores()
            outliers.append(float(np.mean(scores > OWL_M * scores.mean())) if scores.size else 0.0)
        return owl_ratios(units, budget, np.asarray(outliers))


ALLOCATORS: Registry[Allocator] = Registry("allocation")
ALLOCATORS.register(Allocator())
ALLOCATORS.register(GlobalThreshold())
ALLOCATORS.register(Sensitivity())
ALLOCATORS.register(OWL())


def _weighted_mean(ratios: np.ndarray, costs: np.ndarray) -> float:
    return float((ratios * costs).sum() / max(costs.sum(), 1e-12))


def owl_ratios(
    units: Sequence[AllocUnit], budget: float, outliers: np.ndarray, lam: float = OWL_LAMBDA, high: float = 0.99
) -> dict[str, float]:
    """``s_l = budget - λ·d_l`` with ``d`` the outlier ratios centred and scaled to [-1, 1]; mean held at ``budget``."""
    costs = np.asarray([u.cost for u in units], dtype=np.float64)
    centred = outliers - _weighted_mean(outliers, costs)
    spread = np.abs(centred).max(initial=0.0)
    ratios = budget - lam * (centred / spread if spread > 0 else centred)
    for _ in range(20):  # re-centre after clipping until the weighted mean is the budget
        ratios = np.clip(ratios + budget - _weighted_mean(ratios, costs), 0.0, high)
        if abs(_weighted_mean(ratios, costs) - budget) < 1e-9:
            break
    return {u.name: float(r) for u, r in zip(units, ratios, strict=True)}


def hull_segments(ratios: np.ndarray, errors: np.ndarray) -> list[tuple[float, float, float]]:
    """The lower convex hull of a monotone-made error curve from (0, 0): (start, end, slope) segments."""
    errors = np.maximum.accumulate(np.maximum(np.asarray(errors, dtype=np.float64), 0.0))
    points = sorted(zip(np.asarray(ratios, dtype=np.float64), errors, strict=True))
    hull: list[tuple[float, float]] = []
    for p in points:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):  # hull[-1] lies on or above the chord
                hull.pop()
            else:
                break
        if not hull or p[0] > hull[-1][0]:
            hull.append(p)
    return [(x1, x2, (y2 - y1) / (x2 - x1)) for (x1, y1), (x2, y2) in zip(hull[:-1], hull[1:], strict=True)]


def sensitivity_ratios(units: Sequence[AllocUnit], budget: float, curves: Curves) -> dict[str, float]:
    """Ratios minimizing the summed (convexified) error with ``Σ cost·ratio = budget · Σ cost``.

    Segments of every unit's hull are taken in order of error per unit of cost removed; the last
    one is taken partially, so the budget is met exactly. Raises if it needs ratios beyond the grid.
    """
    costs = {u.name: float(u.cost) for u in units}
    missing = [u.name for u in units if u.name not in curves]
    if missing:
        raise RecipeError(f"the sensitivity table has no curve for '{missing[0]}' (was it measured on this model?)")
    # a segment's price: error added per unit of cost removed, Δerror / (Δratio · cost)
    segments = [
        (slope / max(costs[unit.name], 1e-12), start, unit.name, end)
        for unit in units
        for start, end, slope in hull_segments(*curves[unit.name])
    ]
    segments.sort()
    need = budget * sum(costs.values())
    ratios = dict.fromkeys(costs, 0.0)
    for _, start, name, end in segments:
        if need <= 1e-12:
            break
        step = min(end - start, need / costs[name])
        ratios[name] = float(start + step)
        need -= step * costs[name]
    if need > 1e-6 * sum(costs.values()):
        top = max(float(np.max(curves[u.name][0])) for u in units)
        raise RecipeError(f"budget {budget:g} needs ratios beyond the measured grid (largest {top:g}): extend --grid")
    return ratios


# --------------------------------------------------------------------------- #
# what the passes call
# --------------------------------------------------------------------------- #


def check_allocation(name: str, kind: str, options: Mapping[str, Any] | None = None) -> None:
    """Refuse an unknown allocation, one that does not serve ``kind``, or bad options (config validation)."""
    ALLOCATORS.check("allocation", name)
    ALLOCATORS[name].check(kind)
    if options:
        ALLOCATORS[name].configured(options)


def allocator(name: str, options: Mapping[str, Any] | None = None) -> Allocator:
    """The registered allocator ``name`` with ``options`` set."""
    return ALLOCATORS[name].configured(options or {})


def scope_allocation(scope: str, allocation: str, global_scope: str = "global") -> str:
    """The allocation a (``scope``, ``allocation``) pair means: ``scope=global`` is ``allocation=global``."""
    if scope == global_scope:
        if allocation not in ("uniform", "global"):
            raise RecipeError(f"scope '{scope}' and allocation '{allocation}' disagree; give allocation alone")
        return "global"
    return allocation


def _require_data(context: PassContext, allocation: str) -> None:
    if context.calibration is None or getattr(context.calibration, "random", False):
        raise CalibrationError(f"allocation '{allocation}' needs calibration data (--calib PATH)")


def _table(model: ir.Model, context: PassContext, settings: Settings) -> Table:
    from onnxprune.analysis.sensitivity import analyze, cache_dir

    assert context.calibration is not None
    return analyze(
        model, context.calibration, settings=settings, threads=context.threads, cache=cache_dir(), any_data=True
    )


def sensitivity_curves(context: PassContext, model: ir.Model, kind: str, method: str = "magnitude") -> Curves:
    """Measured error curves of ``kind``'s units (analysed now, or read from the cache).

    They are also recorded in ``context.sensitivity`` for the pass's report.
    """
    from onnxprune.analysis.sensitivity import Settings

    _require_data(context, "sensitivity")
    settings = Settings(kinds=(kind,), method=method, batch_size=context.batch_size)
    table = context.analyses.get(_table, model, context, settings, key=("sensitivity", settings))
    curves = {u.name: u.curve() for u in table.of_kind(kind)}
    context.sensitivity.setdefault(kind, {}).update(
        {name: {"ratios": xs.tolist(), "errors": ys.tolist()} for name, (xs, ys) in curves.items()}
    )
    return curves


def nm_coverage(
    context: PassContext, model: ir.Model, weights: Sequence[Weight], n: int, m: int, budget: float, curves_by: str
) -> set[str]:
    """The weights to prune N:M so that the mean sparsity (weighted by size) reaches ``budget``.

    N:M cannot be spread partially, so a weight is either N:M or dense: the measured error of each
    weight at sparsity ``1 − n/m`` (its sensitivity curve, by ``curves_by`` pruning) is divided by the
    zeros it brings, and the cheapest weights are taken until the budget is reached (at least it; the
    most sensitive stay dense). Weights without a measured curve come last.
    """
    ratio = 1.0 - n / m
    if budget > ratio + 1e-9:
        raise RecipeError(f"sparsity {budget:g} is more than {n}:{m} can give ({ratio:g})")
    curves = sensitivity_curves(context, model, "unstructured", curves_by)

    def price(weight: Weight) -> float:
        if weight.name not in curves:
            return float("inf")
        xs, ys = curves[weight.name]
        return float(np.interp(ratio, xs, np.maximum.accumulate(ys))) / max(weight.size * ratio, 1e-12)

    need = budget * sum(w.size for w in weights)
    chosen: set[str] = set()
    for weight in sorted(weights, key=price):
        if need <= 1e-9:
            break
        chosen.add(weight.name)
        need -= weight.size * ratio
    return chosen


def _geometry(weight: Weight) -> tuple[int, int]:
    """A weight's kernel size and output positions per sample (1 where unknown or not a Conv)."""
    if weight.op_type != "Conv":
        return 1, 1
    kernel = int(np.prod(weight.shape[2:]))
    shape = weight.uses[0].node.outputs[0].shape
    dims = list(shape)[2:] if shape is not None else []
    return kernel, int(np.prod(dims)) if dims and all(isinstance(d, int) for d in dims) else 1


def weight_ratios(
    context: PassContext,
    model: ir.Model,
    weights: Sequence[Weight],
    allocation: str,
    budget: float,
    *,
    importance: str = "magnitude",
    normalize: str = "none",
    curves_by: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Ratio]:
    """Sparsity per weight name for ``allocation`` at mean sparsity ``budget`` (weighted by size).

    An allocator with ``rows`` may give a weight one sparsity per neuron (an array) or multipliers
    (:class:`Gains`); ``options`` are the allocator's (``--allocation-option``).

    ``global`` thresholds ``importance`` scores (normalized per tensor); ``owl`` uses Wanda scores;
    ``sensitivity`` measures (or reads) the per-weight curves with ``curves_by`` (default: magnitude
    pruning, or Wanda when ``importance`` is data-aware).
    """
    allocator = ALLOCATORS[allocation].configured(options or {})
    if allocator.needs_data:
        _require_data(context, allocation)
    stats = None
    scored = allocator.scores_by or importance
    if (allocation == "global" or allocator.scores_by) and WEIGHT_IMPORTANCES[scored].needs_data:
        requests = [r for w in weights for r in WEIGHT_IMPORTANCES[scored].requests(w)]
        stats = context.stats(model, requests, needed_by=f"allocation '{allocation}'")

    def scores_of(weight: Weight) -> Callable[[], np.ndarray]:
        def fn() -> np.ndarray:
            values = score(weight, read_weight(weight), scored, stats)
            values = values / np.float32(normalizer(values, normalize))
            return neuron_rows(weight, values) if allocator.rows else values

        return fn

    def values_of(weight: Weight) -> Callable[[], np.ndarray]:
        return lambda: neuron_rows(weight, read_weight(weight))

    units = [
        AllocUnit(w.name, w.size, scores_of(w), values_of(w), *_geometry(w)) if allocator.rows
        else AllocUnit(w.name, w.size, scores_of(w))
        for w in weights
    ]  # fmt: skip
    curves = None
    if allocator.needs_sensitivity:
        method = curves_by or ("wanda" if WEIGHT_IMPORTANCES[importance].needs_data else "magnitude")
        curves = sensitivity_curves(context, model, "unstructured", method)
    return allocator.ratios(units, budget, curves)
