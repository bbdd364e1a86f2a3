"""``pca`` allocator: (Pen-)Ultimate DNN Pruning's width rule (M4).

A channel group keeps ``k = min{k : Σ_{i≤k} λ_i / Σ λ_i ≥ ρ}`` channels, ``λ`` the eigenvalues of the
covariance of its activations on the calibration data (the value its consumers read, e.g. after the
ReLU; streamed as a Gram matrix, so memory grows with channels, not samples; a channel spread over
several features -- a Conv flattened into a Gemm -- pools its features' positions). Which channels
stay is the pass's importance. The paper is budget-free: with the default ``fit: false`` the widths
follow from ``variance`` and the pass's ratio is not used (a FLOPs/params target is refused); with
``fit: true``, ρ is solved (bisection) so the channel-weighted mean ratio is the pass's ratio, which
``target_flops``/``target_params`` search as usual.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels import ChannelAnalysis, ParamUse
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.errors import RecipeError
from onnxprune.passes._allocators import ALLOCATORS, Allocator, AllocUnit, Curves, Ratio
from onnxprune.passes._importance import stat_key

__all__ = ["PCAWidth", "group_spectra", "pca_width", "spectrum_requests"]

logger = logging.getLogger(__name__)


def pca_width(eigenvalues: np.ndarray, variance: float) -> int:
    """The fewest leading components whose eigenvalues explain ``variance`` of their sum (0 for none)."""
    lam = np.clip(np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1], 0.0, None)
    total = lam.sum()
    if total <= 0:
        return 0
    explained = np.cumsum(lam) / total
    return int(min(np.searchsorted(explained, variance - 1e-12) + 1, lam.size))


def _consumed(analysis: ChannelAnalysis, uses: Sequence[ParamUse]) -> dict[str, ir.Value]:
    return {stat_key(u.by): u.by for u in uses if u.role == "in" and analysis.layout(u.by) is not None}


def spectrum_requests(analysis: ChannelAnalysis, uses: Sequence[ParamUse]) -> list[StatRequest]:
    """A Gram request for every value a consumer reads along a channel layout."""
    return [
        StatRequest(key, analysis.layout(value).axis, gram=True, sums=frozenset())  # type: ignore[union-attr]
        for key, value in _consumed(analysis, uses).items()
    ]


def _unit_covariance(entry: ChannelStats, pos: int, units: int, size: int) -> np.ndarray | None:
    if entry.gram is None or entry.gram_sum is None or entry.rows == 0:
        return None
    span = slice(pos, pos + units * size)
    mean = entry.gram_sum[span] / entry.rows
    cov = entry.gram[span, span].astype(np.float64) / entry.rows - np.outer(mean, mean)
    return np.einsum("isjs->ij", cov.reshape(units, size, units, size))


def group_spectra(
    analysis: ChannelAnalysis, uses: Sequence[ParamUse], groups: Sequence[int], stats: Mapping[str, ChannelStats]
) -> dict[int, np.ndarray]:
    """Covariance eigenvalues (descending) of each group's activations, from the first consumer read whole."""
    wanted = set(groups)
    spectra: dict[int, np.ndarray] = {}
    for key, value in _consumed(analysis, uses).items():
        layout = analysis.layout(value)  # type: ignore[arg-type]
        entry = stats.get(key)
        if layout is None or entry is None:
            continue
        pos = 0
        for seg in layout.segments:
            root = None if seg.group is None else analysis.groups.find(seg.group)
            whole = root is not None and seg.start == 0 and seg.units == analysis.groups[root].units
            if whole and seg.per == 1 and root in wanted and root not in spectra:
                cov = _unit_covariance(entry, pos, seg.units, seg.size)
                if cov is not None:
                    spectra[root] = np.linalg.eigvalsh(cov)[::-1]
            pos += seg.channels
    return spectra


@dataclasses.dataclass(frozen=True)
class PCAWidth(Allocator):
    """PCA width: each group keeps the components explaining ``variance`` of its activations' variance.

    Attributes:
        variance: The variance ρ the kept width explains (the paper: 0.95 to 0.999).
        fit: Solve ρ so the mean ratio is the pass's ratio (or its FLOPs/params target).
    """

    name: str = "pca"
    description: str = "PCA width (M4): the components explaining 'variance' of each group's activations; needs data"
    needs_data: bool = True
    kinds: tuple[str, ...] = ("channels",)
    variance: float = 0.99
    fit: bool = False

    @property
    def uses_budget(self) -> bool:
        return self.fit

    def validate(self) -> None:
        if not 0.0 < self.variance <= 1.0:
            raise RecipeError(f"pca variance must be in (0, 1], got {self.variance:g}")

    def ratios(self, units: Sequence[AllocUnit], budget: float, curves: Curves | None = None) -> dict[str, Ratio]:
        spectra = {u.name: np.asarray(u.scores(), dtype=np.float64) for u in units if u.scores is not None}
        if not self.fit:
            return self._at(units, spectra, self.variance)
        costs = np.asarray([u.cost for u in units], dtype=np.float64)

        def mean(rho: float) -> float:
            ratios = self._at(units, spectra, rho)
            return float(np.dot([ratios[u.name] for u in units], costs) / max(costs.sum(), 1e-12))

        lo, hi = 0.0, 1.0  # the mean ratio falls as ρ grows
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mean(mid) > budget else (lo, mid)
        rho = hi if abs(mean(hi) - budget) <= abs(mean(lo) - budget) else lo
        logger.info("pca: variance %.6f gives mean ratio %.4f (budget %.4f)", rho, mean(rho), budget)
        return self._at(units, spectra, rho)

    @staticmethod
    def _at(units: Sequence[AllocUnit], spectra: Mapping[str, np.ndarray], rho: float) -> dict[str, Ratio]:
        out: dict[str, Ratio] = {}
        for unit in units:
            lam = spectra.get(unit.name)
            out[unit.name] = 0.0 if lam is None else 1.0 - pca_width(lam, rho) / max(unit.cost, 1)
        return out


ALLOCATORS.register(PCAWidth())
