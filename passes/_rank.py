"""Rank selection: energy thresholds, the break-even rank, rounding, and budgets across layers.

A rank-``r`` factorization of ``M [m, n]`` costs ``r(m+n)`` parameters and MACs per input vector
against ``mn`` dense, so it only pays where ``r < mn/(m+n)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Candidate",
    "allocate_ranks",
    "break_even",
    "energy_kept",
    "energy_rank",
    "rank_for_saving",
    "round_rank",
    "saved_fraction_curve",
    "saves",
]


def break_even(m: int, n: int) -> float:
    """The rank at which a factorization costs as much as the dense matrix: ``mn/(m+n)``."""
    return m * n / (m + n)


def saves(rank: int, m: int, n: int) -> bool:
    """True where a rank-``rank`` factorization is cheaper than the dense ``[m, n]`` matrix."""
    return rank * (m + n) < m * n


def energy_kept(sigma: np.ndarray, rank: int) -> float:
    """Fraction of ``Σσ²`` held by the first ``rank`` singular values (1 for an all-zero spectrum)."""
    squares = np.asarray(sigma, dtype=np.float64) ** 2
    total = float(squares.sum())
    return float(squares[:rank].sum()) / total if total > 0 else 1.0


def energy_rank(sigma: np.ndarray, energy: float) -> int:
    """Smallest rank (at least 1) whose singular values hold ``energy`` of ``Σσ²``."""
    squares = np.asarray(sigma, dtype=np.float64) ** 2
    total = float(squares.sum())
    if total <= 0:
        return 1
    cumulative = np.cumsum(squares) / total
    return int(min(np.searchsorted(cumulative, energy - 1e-12) + 1, squares.size))


def round_rank(rank: int, multiple: int, full: int) -> int:
    """``rank`` rounded up to a multiple of ``multiple``, at most ``full``."""
    return min(full, math.ceil(rank / multiple) * multiple)


def saved_fraction_curve(ratios: np.ndarray, errors: np.ndarray, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An error curve over "rank fraction removed" as one over "fraction of the dense cost saved".

    A rank-``r`` factorization saves ``1 − r(m+n)/(mn)`` of the dense cost; points that save nothing
    are dropped, and the dense layer is the point (0, 0).
    """
    full = min(m, n)
    points = [(0.0, 0.0)]
    for ratio, error in zip(np.asarray(ratios, dtype=np.float64), np.asarray(errors, dtype=np.float64), strict=True):
        rank = max(1, int(round((1.0 - ratio) * full)))
        saved = 1.0 - rank * (m + n) / (m * n)
        if ratio > 0 and saved > 0:
            points.append((saved, float(error)))
    points.sort()
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def rank_for_saving(fraction: float, m: int, n: int, multiple: int) -> int:
    """The largest rank saving at least ``fraction`` of the dense ``[m, n]`` cost (0: stay dense).

    The rank is rounded down to a multiple of ``multiple`` where one fits; 0 where nothing is to be
    saved or no rank saves anything.
    """
    if fraction <= 0:
        return 0
    rank = math.floor((1.0 - fraction) * m * n / (m + n))
    rank = max(1, rank // multiple * multiple if rank >= multiple else rank)
    return rank if saves(rank, m, n) else 0


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A layer that may be factorized: its spectrum and its dense cost (parameters or MACs)."""

    sigma: np.ndarray
    m: int
    n: int
    cost: float

    def energy_at(self, rank: int | None) -> float:
        """Fraction of ``Σσ²`` kept at ``rank`` (``None``: dense, all of it)."""
        return 1.0 if rank is None else energy_kept(self.sigma, rank)

    def cost_at(self, rank: int | None) -> float:
        """Cost at ``rank`` (``None``: left dense)."""
        return self.cost if rank is None else self.cost * rank * (self.m + self.n) / (self.m * self.n)


def _ranks_at(candidates: Sequence[Candidate], energy: float, multiple: int) -> list[int | None]:
    ranks: list[int | None] = []
    for c in candidates:
        rank = round_rank(energy_rank(c.sigma, energy), multiple, c.sigma.size)
        ranks.append(rank if saves(rank, c.m, c.n) else None)
    return ranks


def allocate_ranks(
    candidates: Sequence[Candidate], budget: float, multiple: int, *, iterations: int = 60
) -> tuple[list[int | None], float, bool]:
    """Ranks meeting a cost budget with one energy threshold shared by all layers.

    Bisection finds the highest energy fraction whose ranks (rounded, and ``None`` where a layer
    would not save anything) keep ``Σ cost_at(rank) ≤ budget``. Returns the ranks, that energy,
    and whether the budget was met (if not, the cheapest ranks the threshold can reach).
    """

    def total(ranks: list[int | None]) -> float:
        return sum(c.cost_at(r) for c, r in zip(candidates, ranks, strict=True))

    low, high = 0.0, 1.0
    best = _ranks_at(candidates, low, multiple)
    if total(best) > budget:
        return best, low, False
    for _ in range(iterations):
        mid = (low + high) / 2
        ranks = _ranks_at(candidates, mid, multiple)
        if total(ranks) <= budget:
            low, best = mid, ranks
        else:
            high = mid
    top = _ranks_at(candidates, 1.0, multiple)
    if total(top) <= budget:
        return top, 1.0, True
    return _top_up(candidates, best, budget - total(best), multiple), low, True


def _top_up(candidates: Sequence[Candidate], ranks: list[int | None], spare: float, multiple: int) -> list[int | None]:
    """Spend what the shared threshold left of the budget, one rank step at a time.

    Each step raises the rank that buys the most energy per unit of cost; a rank that would stop
    saving work makes the layer dense.
    """
    ranks = list(ranks)
    while True:
        best: tuple[float, int, int | None, float] | None = None
        for i, (c, rank) in enumerate(zip(candidates, ranks, strict=True)):
            if rank is None:
                continue
            step = min(c.sigma.size, (rank // multiple + 1) * multiple)
            new = step if saves(step, c.m, c.n) else None
            extra = c.cost_at(new) - c.cost_at(rank)
            if step == rank or extra > spare:
                continue
            value = (c.energy_at(new) - c.energy_at(rank)) / max(extra, 1e-12)
            if best is None or value > best[0]:
                best = (value, i, new, extra)
        if best is None:
            return ranks
        _, i, ranks[i], extra = best
        spare -= extra
