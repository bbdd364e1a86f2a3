"""How many channels each group keeps, and which.

Uniform or global allocation, rounding, minimums, and a search for the ratio that meets a FLOPs or
params target.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["Allocation", "GroupScores", "allocate", "search_ratio"]


@dataclasses.dataclass(frozen=True)
class GroupScores:
    """A prunable group: its unit count, block size (units removed together) and per-unit scores."""

    units: int
    block: int
    scores: np.ndarray

    @property
    def block_scores(self) -> np.ndarray:
        return self.scores.reshape(-1, self.block).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Allocation:
    """Rounding and limits applied to every group's kept count."""

    round_to: int = 1
    min_channels: int = 1
    max_ratio: float = 0.9

    def step(self, group: GroupScores) -> int:
        return math.lcm(max(self.round_to, 1), group.block)

    def rounded(self, group: GroupScores, keep: float) -> int:
        """``keep`` units rounded to the step, at least the minimum, at most all units."""
        step = self.step(group)
        if step >= group.units:
            return group.units
        lowest = max(step, -(-self.min_channels // step) * step)
        kept = max(lowest, int(round(keep / step)) * step)
        return min(kept, group.units)


def _top(group: GroupScores, keep_units: int) -> np.ndarray:
    """The kept units: the best-scoring blocks, in order."""
    blocks = group.block_scores
    n = keep_units // group.block
    order = np.argsort(-blocks, kind="stable")[:n]
    chosen = np.sort(order)
    return (chosen[:, None] * group.block + np.arange(group.block)[None, :]).ravel()


def _uniform_counts(groups: Mapping[int, GroupScores], ratio: float, alloc: Allocation) -> dict[int, int]:
    return {gid: alloc.rounded(g, g.units * (1.0 - ratio)) for gid, g in groups.items()}


def _global_counts(groups: Mapping[int, GroupScores], ratio: float, alloc: Allocation) -> dict[int, int]:
    """One threshold over the (per-group normalized) block scores, capped per group."""
    entries = [(s, gid, g.block) for gid, g in groups.items() for s in g.block_scores / g.block]
    entries.sort(key=lambda e: e[0])
    total = sum(g.units for g in groups.values())
    removed = {gid: 0 for gid in groups}
    budget = ratio * total
    done = 0
    for _, gid, block in entries:
        if done + block / 2 > budget:
            break
        g = groups[gid]
        if removed[gid] + block > alloc.max_ratio * g.units:
            continue
        removed[gid] += block
        done += block
    return {gid: alloc.rounded(g, g.units - removed[gid]) for gid, g in groups.items()}


def allocate(
    groups: Mapping[int, GroupScores],
    ratio: float,
    alloc: Allocation,
    scope: str = "layer",
    ratios: Mapping[int, float] | None = None,
) -> dict[int, np.ndarray]:
    """Kept units of each group when a fraction ``ratio`` of channels is removed.

    With ``ratios`` (per group, from an allocator), each group loses its own fraction instead.
    """
    if ratios is not None:
        counts = {gid: alloc.rounded(g, g.units * (1.0 - ratios.get(gid, 0.0))) for gid, g in groups.items()}
        return {gid: _top(groups[gid], counts[gid]) for gid in groups}
    if ratio <= 0:
        return {gid: np.arange(g.units) for gid, g in groups.items()}
    counts = _global_counts(groups, ratio, alloc) if scope == "global" else _uniform_counts(groups, ratio, alloc)
    return {gid: _top(groups[gid], counts[gid]) for gid in groups}


def search_ratio(
    measure: Callable[[float], float], target: float, *, tolerance: float = 0.01, high: float = 0.99
) -> tuple[float, float]:
    """The ratio whose measured fraction (FLOPs or params kept, decreasing in ratio) is nearest ``target``.

    Bisection; stops once within ``tolerance``. Returns (ratio, measured fraction).
    """
    lo, hi = 0.0, high
    best = (0.0, measure(0.0))
    for _ in range(24):
        mid = (lo + hi) / 2
        got = measure(mid)
        if abs(got - target) < abs(best[1] - target):
            best = (mid, got)
        if abs(got - target) <= tolerance / 4:
            break
        if got > target:
            lo = mid
        else:
            hi = mid
    return best
