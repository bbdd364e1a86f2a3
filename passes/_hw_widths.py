"""Kept widths from a latency table: fast steps, and the most importance kept within a latency budget.

Both work on a group's measured widths only. The predicted latency of a model is its measured dense
latency minus every group's saving (its subgraph's latency at full width minus at the kept width):
additive, so that groups can be chosen independently; the caller measures the result to correct it.

* :func:`fast_steps`: the widths where latency steps up, each the widest of its plateau;
  :func:`fast_step`: near a wanted width, the fastest measured one (ties: the most aligned, the widest).
* :func:`fit_saving`: per group a width, minimizing the summed importance removed while the summed
  saving reaches a need (a multiple-choice knapsack: Lagrangian relaxation, then a greedy fill).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from onnxprune.passes._allocate import GroupScores
from onnxprune.passes._latency_table import ALIGNMENTS, GroupLatency

__all__ = ["NOISE", "Options", "fast_step", "fast_steps", "fit_saving", "options_for", "removal_loss"]

#: latency differences within this fraction (of a latency, or of a group's latency range) are taken as timing noise
NOISE = 0.03


@dataclasses.dataclass(frozen=True)
class Options:
    """A group's choices: widths (ascending), the latency each saves (ms) and the importance each removes."""

    widths: tuple[int, ...]
    saving: np.ndarray
    loss: np.ndarray


def removal_loss(group: GroupScores, widths: tuple[int, ...]) -> np.ndarray:
    """Squared fraction of the group's importance removed at each width (the lowest-scoring blocks go first).

    A fraction, so that groups compare whatever their width and score scale (a per-group
    normalization of the scores does not change it): half of a narrow bottleneck weighs as much as
    half of a wide expansion, as uniform pruning assumes. Squared, so that the knapsack spreads the
    cuts: with latency and scores both nearly linear in the width, the plain fraction makes a linear
    program whose optimum empties the groups with the cheapest channels and leaves the others whole
    (measured on MobileNetV2: bottlenecks of 96, 144 and 160 channels cut to 16).
    """
    blocks = np.sort(np.maximum(group.block_scores, 0.0))
    total = np.concatenate([[0.0], np.cumsum(blocks, dtype=np.float64)])
    removed = [(group.units - w) // group.block for w in widths]
    scale = total[-1] if total[-1] > 0 else 1.0
    return (total[np.asarray(removed, dtype=np.int64)] / scale) ** 2


def fast_steps(table: GroupLatency, noise: float = NOISE) -> tuple[int, ...]:
    """The widths where latency steps up: each is the widest of its plateau (the full width always)."""
    ms = table.ms
    return tuple(w for i, w in enumerate(table.widths) if i == len(ms) - 1 or ms[i + 1] > ms[i] * (1 + noise))


def options_for(table: GroupLatency, group: GroupScores, lowest: int = 0, noise: float = NOISE) -> Options:
    """The group's fast steps of at least ``lowest`` units (the full width always), with savings and losses."""
    widths = tuple(w for w in fast_steps(table, noise) if w >= lowest or w == table.units)
    saving = np.asarray([table.saving(w) for w in widths], dtype=np.float64)
    return Options(widths, saving, removal_loss(group, widths))


def _alignment(width: int) -> int:
    """The largest power of two dividing ``width``."""
    return width & -width


def fast_step(table: GroupLatency, wanted: float, noise: float = NOISE) -> int:
    """The width to keep instead of ``wanted`` units: the widest one that is no slower than it.

    The wanted width is taken to the nearest measured width (the most aligned of equally near ones).
    Of the widths no slower than it (by at most ``noise`` of the group's latency range) -- any wider
    one, or a narrower one within the widest alignment step of at most a quarter of it (8, 16, 32 or
    64; the table's own spacing for small groups) -- multiples of 8 come first (an unaligned width
    that times as fast is most likely a timing accident), then the widest: the channels it adds cost
    no time (a group whose pruned widths time no faster than its full width is left whole).
    """
    widths = table.widths
    spacing = min((b - a for a, b in zip(widths, widths[1:], strict=False)), default=table.units)
    reach = max([spacing, *(a for a in ALIGNMENTS if 4 * a <= wanted)])
    start = min(range(len(widths)), key=lambda i: (abs(widths[i] - wanted), -_alignment(widths[i])))
    bound = table.ms[start] + noise * (max(table.ms) - min(table.ms))
    near = [w for w, ms in zip(widths, table.ms, strict=True) if w >= wanted - reach and ms <= bound]
    return max([widths[start], *near], key=lambda w: (min(_alignment(w), ALIGNMENTS[0]), w))


def _pick(options: Options, price: float) -> int:
    """Index of the width minimizing loss − price·saving (ties: the widest)."""
    cost = options.loss - price * options.saving
    best = np.flatnonzero(cost <= cost.min() + 1e-12)
    return int(best[-1])


def fit_saving(choices: Mapping[int, Options], need: float) -> tuple[dict[int, int], float]:
    """Per group the kept width (by group id) minimizing the summed loss with summed saving ≥ ``need``.

    Returns the widths and their summed saving; when even the largest savings fall short of ``need``,
    the widths with the largest savings (the caller reports the shortfall).
    """
    if need <= 0 or not choices:
        return {gid: o.widths[-1] for gid, o in choices.items()}, 0.0

    def at(price: float) -> dict[int, int]:
        return {gid: _pick(o, price) for gid, o in choices.items()}

    def saving(picked: Mapping[int, int]) -> float:
        return float(sum(choices[g].saving[i] for g, i in picked.items()))

    low, high = 0.0, 1.0
    while saving(at(high)) < need and high < 1e12:
        low, high = high, high * 4
    if saving(at(high)) < need:
        picked = {gid: int(np.argmax(o.saving)) for gid, o in choices.items()}
        return {g: choices[g].widths[i] for g, i in picked.items()}, saving(picked)
    for _ in range(60):
        middle = (low + high) / 2
        if saving(at(middle)) >= need:
            high = middle
        else:
            low = middle
    picked = at(high)
    slack = saving(picked) - need
    while True:  # greedy fill: give importance back where the slack allows, cheapest first
        best = None
        for gid, index in picked.items():
            o = choices[gid]
            for j in range(len(o.widths)):
                gain = o.loss[index] - o.loss[j]
                cost = o.saving[index] - o.saving[j]
                if gain > 1e-12 and cost <= slack + 1e-12:
                    rate = gain / max(cost, 1e-12)
                    if best is None or rate > best[0]:
                        best = (rate, gid, j, cost)
        if best is None:
            break
        _, gid, j, cost = best
        picked[gid] = j
        slack -= cost
    return {g: choices[g].widths[i] for g, i in picked.items()}, saving(picked)
