"""``pqi`` allocator: ℓq compressibility by the PQ index (M33; Diao et al., ICLR'23, after Yang et al.).

For a vector ``w`` with ``d`` nonzero entries, ``I = 1 − (‖w‖_p^p/d)^{1/p} / (‖w‖_q^q/d)^{1/q}``
(``0 < p < q``), the retained bound ``m = ⌈d·(1+η)^{q/(p−q)}·(1 − I)^{qp/(q−p)}⌉`` and the prune count
``⌊d·clip(γ(1 − m/d), 0, β)⌋``: the smallest-|w| entries go. The vector is each neuron's row
(``scope: neuron``), each tensor (``layer``) or all tensors together (``global``). The sparsity follows
from the index (the pass's ``sparsity`` is ignored and the achieved one reported) unless ``fit`` is set:
then γ is scaled (bisection) so the mean sparsity meets the pass's ``sparsity``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from onnxprune.errors import RecipeError
from onnxprune.passes._allocators import ALLOCATORS, Allocator, AllocUnit, Curves, Ratio
from onnxprune.passes._base import check_choice
from onnxprune.passes._select import prune_lowest

__all__ = ["PQI", "PQI_SCOPES", "pq_index", "pqi_prune_count"]

PQI_SCOPES = ("neuron", "layer", "global")


def pq_index(w: np.ndarray, p: float = 0.5, q: float = 1.0) -> float:
    """The PQ index of the nonzero entries of ``w`` (0: all equal in magnitude; towards 1: sparse)."""
    a = np.abs(np.asarray(w, dtype=np.float64).ravel())
    a = a[a > 0]
    if a.size == 0:
        return 0.0
    d = a.size
    norm_p = (np.sum(a**p) / d) ** (1.0 / p)
    norm_q = (np.sum(a**q) / d) ** (1.0 / q)
    return float(1.0 - norm_p / norm_q)


def pqi_prune_count(w: np.ndarray, p: float, q: float, eta: float, gamma: float, beta: float) -> int:
    """How many of the nonzero entries of ``w`` the PQ-index rule prunes."""
    d = int(np.count_nonzero(w))
    if d == 0:
        return 0
    index = pq_index(w, p, q)
    m = math.ceil(d * (1.0 + eta) ** (q / (p - q)) * (1.0 - index) ** (q * p / (q - p)))
    return int(math.floor(d * min(max(gamma * (1.0 - m / d), 0.0), beta)))


@dataclasses.dataclass(frozen=True)
class PQI(Allocator):
    """PQ-index compressibility (p, q, eta, gamma, beta per the paper's code), by magnitude.

    Attributes:
        p: The small norm's order (0 < p < q).
        q: The large norm's order.
        eta: Slack of the retained bound (0: the bound itself).
        gamma: Scale of the prune fraction ``1 − m/d``.
        beta: Largest fraction pruned from one vector.
        scope: The vectors indexed: ``neuron`` (each output unit's row), ``layer`` or ``global``.
        fit: Scale ``gamma`` so the mean sparsity is the pass's ``sparsity`` (default: it follows from the index).
    """

    name: str = "pqi"
    description: str = "PQ-index bound per neuron (or layer/global) of |W| (M33); the sparsity follows from the index"
    kinds: tuple[str, ...] = ("unstructured",)
    rows: bool = True
    scores_by: str | None = "magnitude"
    ranks: bool = True
    p: float = 0.5
    q: float = 1.0
    eta: float = 0.0
    gamma: float = 1.0
    beta: float = 0.9
    scope: str = "neuron"
    fit: bool = False

    @property
    def uses_budget(self) -> bool:
        return self.fit

    def validate(self) -> None:
        if not 0.0 < self.p < self.q:
            raise RecipeError(f"pqi needs 0 < p < q, got p={self.p:g}, q={self.q:g}")
        if self.eta < 0 or self.gamma < 0 or not 0.0 <= self.beta < 1.0:
            raise RecipeError("pqi needs eta >= 0, gamma >= 0 and beta in [0, 1)")
        check_choice("scope", self.scope, PQI_SCOPES)

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, Ratio]:
        rows = {u.name: _magnitudes(u) for u in units}
        if not self.fit:
            return self._at(rows, self.gamma)
        lo, hi = 0.0, 1.0
        while _mean(self._at(rows, hi), rows) < budget and hi < 1e6:
            hi *= 2
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _mean(self._at(rows, mid), rows) < budget else (lo, mid)
        return self._at(rows, hi)

    def _at(self, rows: dict[str, np.ndarray], gamma: float) -> dict[str, Ratio]:
        """Ratios at ``gamma``: per neuron arrays (``neuron``) or one per tensor."""
        args = (self.p, self.q, self.eta, gamma, self.beta)
        if self.scope == "neuron":
            return {
                name: np.asarray([_zeros(r) + pqi_prune_count(r, *args) for r in matrix], dtype=np.float64)
                / max(matrix.shape[1], 1)
                for name, matrix in rows.items()
            }
        if self.scope == "layer":
            return {name: (_zeros(m) + pqi_prune_count(m, *args)) / max(m.size, 1) for name, m in rows.items()}
        flat = [m.ravel() for m in rows.values()]
        whole = np.concatenate(flat) if flat else np.zeros(0)
        n = _zeros(whole) + pqi_prune_count(whole, *args)
        keep = prune_lowest([lambda f=f: f for f in flat], n)
        return {
            name: 1.0 - float(np.count_nonzero(keep(i))) / max(m.size, 1) for i, (name, m) in enumerate(rows.items())
        }


def _magnitudes(unit: AllocUnit) -> np.ndarray:
    assert unit.scores is not None, "pqi needs every weight's magnitudes"
    return np.abs(np.asarray(unit.scores(), dtype=np.float64))


def _zeros(w: np.ndarray) -> int:
    return int(w.size - np.count_nonzero(w))


def _mean(ratios: dict[str, Ratio], rows: dict[str, np.ndarray]) -> float:
    total = sum(m.size for m in rows.values())
    pruned = sum(float(np.mean(r)) * rows[name].size for name, r in ratios.items())
    return pruned / max(total, 1)


ALLOCATORS.register(PQI())
