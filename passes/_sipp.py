"""SiPP (M6; Baykal, Liebenwein et al., "SiPPing Neural Networks"): empirical sensitivities and their allocator.

The sensitivity of weight ``w_ij`` (output neuron ``i``, input ``j``) at a point ``x`` and patch ``p``
is its share of the neuron's pre-activation among the weights of its sign,
``g_ij = w_ij a_j / Σ_k w_ik a_k`` over the ``k`` with ``w_ik`` of the same sign as ``w_ij``, with
non-negative inputs (``a ← [a⁺; −a⁻]`` stacked as two points when any input is negative). Patches
are reduced by their mean (the deterministic variant), points by their max. A patch where the
neuron's same-sign sum is zero (all inputs zero: 0/0) adds nothing -- the paper's code makes it
infinite, which would keep every weight of a conv whose border patches are blank.

The ``sipp`` allocator is deterministic SiPP: one global top-k over every layer's sensitivities
gives each neuron its keep count, and each neuron keeps its most sensitive weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.passes._allocators import ALLOCATORS, AllocUnit, Curves, GlobalThreshold, Ratio
from onnxprune.passes._gram import gram_requests
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, Stats, WeightImportance, from_neuron_rows, neuron_rows
from onnxprune.passes._select import prune_lowest

__all__ = ["SIPP_POINTS", "SiPP", "SiPPScore", "sensitivities"]

#: calibration points the sensitivities are the max over (the paper's |S| is a few hundred at most)
SIPP_POINTS = 128
#: patches per point a Conv's sensitivity is the mean over (evenly spaced)
SIPP_PATCHES = 64
_EPS = 1e-12


def sensitivities(rows: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Empirical sensitivity ``[neurons, fan-in]`` of a weight's ``rows`` on ``sample [points, patches, fan-in]``."""
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
            np.maximum(best, g.mean(axis=0), out=best)
    return best


@dataclasses.dataclass(frozen=True)
class SiPPScore(WeightImportance):
    """SiPP's empirical sensitivity, from a sample of calibration inputs (Conv: unfolded patches)."""

    name: str = "sipp"
    description: str = "SiPP empirical sensitivity (max over calibration points of the mean patch share); needs data"
    needs_data: bool = True

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
        best = np.maximum.reduce([sensitivities(rows, s) for s in samples])
        return from_neuron_rows(weight, best).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SiPP(GlobalThreshold):
    """Deterministic SiPP: one global top-k over sensitivities → each neuron's keep count."""

    name: str = "sipp"
    description: str = "SiPP (deterministic): global top-k over empirical sensitivities gives each neuron its count"
    needs_data: bool = True
    kinds: tuple[str, ...] = ("unstructured",)
    rows: bool = True
    scores_by: str | None = "sipp"
    ranks: bool = True

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, Ratio]:
        assert all(u.scores is not None for u in units), "sipp needs every weight's sensitivities"
        computed = [u.scores() for u in units]  # type: ignore[misc]
        fns = [lambda rows=rows: rows for rows in computed]
        keep = prune_lowest(fns, int(round(budget * sum(u.cost for u in units))))
        out: dict[str, Ratio] = {}
        for i, (unit, rows) in enumerate(zip(units, computed, strict=True)):
            kept = keep(i).reshape(rows.shape).sum(axis=1)
            out[unit.name] = 1.0 - kept / max(rows.shape[1], 1)
        return out


WEIGHT_IMPORTANCES.register(SiPPScore())
ALLOCATORS.register(SiPP())
