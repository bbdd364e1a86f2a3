"""SiPP (M6; Baykal, Liebenwein et al., "SiPPing Neural Networks"): empirical sensitivities and their allocator.

The sensitivity of weight ``w_ij`` (output neuron ``i``, input ``j``) at a point ``x`` and patch ``p``
is its share of the neuron's pre-activation among the weights of its sign,
``g_ij = w_ij a_j / Σ_k w_ik a_k`` over the ``k`` with ``w_ik`` of the same sign as ``w_ij``, with
non-negative inputs (``a ← [a⁺; −a⁻]`` stacked as two points when any input is negative). Patches
are reduced by their mean (deterministic SiPP, importance ``sipp``) or their max (randomized and
hybrid, importance ``sipp_max``), points by their max. A patch where the neuron's same-sign sum is
zero (all inputs zero) adds nothing: the reference sets that denominator to infinity, so its share is 0.
(torchprune ``method/base_sens/base_sens_tracker.py``, ``sipp/sipp_tracker.py``.)

The ``sipp`` allocator, option ``mode``:

* ``deterministic`` (``sipp/sipp_allocator.py`` ``SiPPAllocator``): one global top-k over every
  layer's raw sensitivities (no per-layer normalization, no per-layer minimum: the reference
  compares a 784-input neuron's shares with a 100-input neuron's as they are) gives each (neuron,
  sign) its count, and each keeps its most sensitive weights, unscaled. The per-sign counts of the
  reference keep the same weights as one per-neuron count, which is what is returned.
* ``random`` (``SiPPRandAllocator`` + ``base/base_pruner.py`` ``RandFeaturePruner`` +
  ``base/base_sparsifier.py`` ``RandFeatureSparsifier``): per (neuron, sign) ``p_ij = s_ij / Σ_j s_ij``,
  sizes from the error-bound program (:func:`~onnxprune.passes._sipp_sample.allocate_sizes`, with
  ``α_i = 2·C·log(8(patches+1)·kernel/δ)·Σ_j s_ij``, ``l_i = 1/#neurons``), rounded up; the draw
  count whose expected distinct samples reach the size; multinomial counts from a numpy Generator
  seeded with ``seed``; kept weights become ``w_ij·c_ij/(m_i p_ij)``.
* ``hybrid`` (``SiPPHybridAllocator``/``SiPPHybridSparsifier``): the random sizes; each (neuron,
  sign) is sampled where the deterministic error ``C·Σ`` (sensitivities not kept) exceeds the random
  bound at that size, else keeps its top entries.

Differences from the reference: the sampled modes meet the budget by bisection on the program's
budget (fixed seed at every step) to within 0.2% of the kept count (the reference: brentq on the
keep ratio to 0.5%); the reference's gradient-based propagation after pruning (``base/base_net.py``
``CompressedNet._propagate_compression``: weights with an exactly zero gradient on S -- e.g. into a
neuron left without outgoing weights -- are zeroed, and the budget search then spends what they
freed) is not done; hybrid compares both errors on the max-reduced sensitivities (the same as the
mean ones for Gemm/MatMul); ``|S|`` is a fixed 128 points (the rule gives 152 for LeNet-300-100).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.errors import RecipeError
from onnxprune.passes._allocators import ALLOCATORS, AllocUnit, Curves, Gains, GlobalThreshold, Ratio
from onnxprune.passes._base import check_choice
from onnxprune.passes._gram import gram_requests
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, Stats, WeightImportance, from_neuron_rows, neuron_rows
from onnxprune.passes._select import prune_lowest
from onnxprune.passes._sipp_sample import (
    allocate_sizes,
    draws_for,
    error_bound,
    log_term,
    probabilities,
    pruned_error,
    sampled_gains,
    top_gains,
)

__all__ = ["SIPP_MODES", "SIPP_POINTS", "SiPP", "SiPPScore", "sensitivities"]

#: calibration points the sensitivities are the max over (the paper's |S| is a few hundred at most)
SIPP_POINTS = 128
#: patches per point a Conv's sensitivity is the mean over (evenly spaced)
SIPP_PATCHES = 64
_EPS = 1e-12
SIPP_MODES = ("deterministic", "random", "hybrid")
#: the sampled modes stop the budget search this close to the kept count (relative)
BUDGET_TOLERANCE = 0.002


def sensitivities(rows: np.ndarray, sample: np.ndarray, reduce: str = "mean") -> np.ndarray:
    """Empirical sensitivity ``[neurons, fan-in]`` of a weight's ``rows`` on ``sample [points, patches, fan-in]``.

    ``reduce``: over patches, ``mean`` (deterministic SiPP) or ``max`` (randomized).
    """
    patches = np.mean if reduce == "mean" else np.max
    w = np.asarray(rows, dtype=np.float64)
    a = np.asarray(sample, dtype=np.float64)
    if (a < 0).any():
        a = np.concatenate([np.maximum(a, 0), np.maximum(-a, 0)])
    best = np.zeros_like(w)
    for sign in (w > 0, w < 0):
        part = np.where(sign, np.abs(w), 0.0)
        for point in a:  # [patches, fan-in]
            share = part[None, :, :] * point[:, None, :]  # [patches, neurons, fan-in]
            total = share.sum(axis=2, keepdims=True)
            g = np.divide(share, total, out=np.zeros_like(share), where=total > _EPS)
            np.maximum(best, patches(g, axis=0), out=best)
    return best


@dataclasses.dataclass(frozen=True)
class SiPPScore(WeightImportance):
    """SiPP's empirical sensitivity, from a sample of calibration inputs (Conv: unfolded patches)."""

    name: str = "sipp"
    description: str = "SiPP empirical sensitivity (max over calibration points of the mean patch share); needs data"
    needs_data: bool = True
    reduce: str = "mean"

    def requests(self, weight: Weight) -> list[StatRequest]:
        found = gram_requests(weight, "sipp")
        if isinstance(found, str):
            return []
        return [
            dataclasses.replace(r, gram=False, sums=frozenset(), sample=SIPP_POINTS, positions=SIPP_PATCHES)
            for r in found
        ]

    def score(self, weight: Weight, values: np.ndarray, stats: Stats | None) -> np.ndarray:
        samples = [stats[r.name].sample for r in self.requests(weight)] if stats is not None else []
        samples = [s for s in samples if s is not None]
        rows = neuron_rows(weight, values)
        if not samples:  # no unfoldable input (grouped Conv, ...): magnitude
            return np.abs(values.astype(np.float32, copy=False))
        best = np.maximum.reduce([sensitivities(rows, s, self.reduce) for s in samples])
        return from_neuron_rows(weight, best).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SiPP(GlobalThreshold):
    """SiPP: deterministic (global top-k), randomized (sampled, reweighted) or hybrid, option ``mode``."""

    name: str = "sipp"
    description: str = (
        "SiPP: empirical sensitivities; mode deterministic (global top-k gives each neuron its count), random"
        " (error-bound sample sizes, reweighted samples) or hybrid; needs data"
    )
    needs_data: bool = True
    kinds: tuple[str, ...] = ("unstructured",)
    rows: bool = True
    scores_by: str | None = "sipp"
    ranks: bool = True
    mode: str = "deterministic"
    C: float = 3.0  # noqa: N815 -- the paper's name
    delta: float = 1e-16
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores_by", "sipp" if self.mode == "deterministic" else "sipp_max")

    def validate(self) -> None:
        check_choice("mode", self.mode, SIPP_MODES)
        if not self.C > 0 or not 0.0 < self.delta < 1.0 or self.seed < 0:
            raise RecipeError(f"sipp needs C > 0, 0 < delta < 1 and seed >= 0, got C={self.C:g}, "
                              f"delta={self.delta:g}, seed={self.seed}")  # fmt: skip

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, Ratio]:
        assert all(u.scores is not None for u in units), "sipp needs every weight's sensitivities"
        if budget <= 0:
            return {u.name: 0.0 for u in units}
        computed = [np.asarray(u.scores(), dtype=np.float64) for u in units]  # type: ignore[misc]
        if self.mode != "deterministic":
            return _Sampler(self, units, computed).fit(int(round(budget * sum(u.cost for u in units))))
        fns = [lambda rows=rows: rows for rows in computed]
        keep = prune_lowest(fns, int(round(budget * sum(u.cost for u in units))))
        out: dict[str, Ratio] = {}
        for i, (unit, rows) in enumerate(zip(units, computed, strict=True)):
            kept = keep(i).reshape(rows.shape).sum(axis=1)
            out[unit.name] = 1.0 - kept / max(rows.shape[1], 1)
        return out


class _Sampler:
    """Randomized/hybrid SiPP over all units' (neuron, sign) sides: gains for a budget, the budget for a count."""

    def __init__(self, config: SiPP, units: Sequence[AllocUnit], scores: list[np.ndarray]) -> None:
        self.config, self.names = config, [u.name for u in units]
        self.values, self.sides, self.alpha, self.lead, self.nnz = [], [], [], [], []
        for unit, sens in zip(units, scores, strict=True):
            assert unit.values is not None, "sipp needs every weight's values"
            w = np.asarray(unit.values(), dtype=np.float64)
            side = np.concatenate([np.where(w > 0, sens, 0.0), np.where(w < 0, sens, 0.0)])
            self.values.append(w)
            self.sides.append(side)
            self.alpha.append(log_term(config.C, config.delta, unit.patches, unit.kernel) * side.sum(axis=1))
            self.lead.append(np.full(side.shape[0], 1.0 / max(w.shape[0], 1)))
            self.nnz.append(np.count_nonzero(side, axis=1).astype(np.float64))
        self.bounds = np.cumsum([0] + [s.shape[0] for s in self.sides])

    def gains(self, budget: int) -> tuple[dict[str, Ratio], int]:
        """Multipliers per unit for the program's ``budget`` and the number of weights they keep."""
        sizes = np.ceil(allocate_sizes(*map(np.concatenate, (self.alpha, self.lead, self.nnz)), budget) - 1e-9)
        rng = np.random.default_rng(self.config.seed)
        out: dict[str, Ratio] = {}
        kept = 0
        for i, (name, w, side) in enumerate(zip(self.names, self.values, self.sides, strict=True)):
            size = sizes[self.bounds[i] : self.bounds[i + 1]].astype(np.int64)
            signed = np.concatenate([w > 0, w < 0])
            nonzero = np.count_nonzero(signed, axis=1)
            sample = np.ones(size.shape, dtype=bool)
            if self.config.mode == "hybrid":
                at = np.maximum(size, 1)
                sample = pruned_error(side, at, self.config.C) > error_bound(at, self.alpha[i])
            p = probabilities(side)
            gains = top_gains(side, size)
            gains[size >= nonzero] = 1.0  # the reference leaves a side alone when its sample is not smaller
            gains[sample] = sampled_gains(p[sample], draws_for(p[sample], size[sample]), nonzero[sample], rng)
            gains = np.where(signed, gains, 0.0)
            rows = gains[: w.shape[0]] + gains[w.shape[0] :]
            kept += int(np.count_nonzero(rows * w))
            out[name] = Gains(rows)
        return out, kept

    def fit(self, pruned: int) -> dict[str, Ratio]:
        """The gains whose kept count is nearest ``total − pruned`` (bisection on the program's budget)."""
        target = max(sum(w.size for w in self.values) - pruned, 0)
        lo, hi = 0, int(sum(n.sum() for n in self.nnz))
        best, best_gap = None, None
        budget = min(target, hi)
        for _ in range(40):
            out, kept = self.gains(budget)
            gap = kept - target
            if best_gap is None or abs(gap) < abs(best_gap):
                best, best_gap = out, gap
            if abs(gap) <= max(1.0, BUDGET_TOLERANCE * target) or hi - lo <= 1:
                break
            lo, hi = (budget, hi) if gap < 0 else (lo, budget)
            budget = (lo + hi) // 2
        assert best is not None
        return best


WEIGHT_IMPORTANCES.register(SiPPScore())
WEIGHT_IMPORTANCES.register(
    SiPPScore(
        name="sipp_max",
        description="SiPP empirical sensitivity, max over patches (randomized SiPP); needs data",
        reduce="max",
    )
)
ALLOCATORS.register(SiPP())
