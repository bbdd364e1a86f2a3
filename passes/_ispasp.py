"""i-SpaSP (Wolfe et al., 2021; M24): channel selection as sparse signal recovery, from calibration sums.

For a group whose consumers are linear (Conv/Gemm/MatMul, weight ``W`` as ``[outputs, features]``),
keeping the units of a support ``S`` changes each consumer's output by ``Y − Ŷ = U_¬S Wᵀ`` (``U`` the
rows the weight multiplies, im2col patches for a Conv; ``¬S`` the features of the removed units). The
official code takes ``R = ½‖Y − Ŷ‖²`` and the importance of unit c as ``Σ_samples ∂R/∂H_c`` (a signed
sum), which for a linear consumer is the closed form ``((Σ_rows U_¬S) Wᵀ W)_c``: only the column sums
of ``U`` (the calibration statistics' ``gram_sum``) and the weights are needed. Then, ``iterations``
times (CoSaMP-like): ``Ω`` = the ``2s`` most important units ∪ ``S``; ``S`` = the ``s`` units of ``Ω``
with the largest summed hidden activation ``Σ H_c``; it stops early once the support is stable or
the residual gradient vanishes. Several consumers add their residuals.

Exact for Gemm/MatMul and unpadded Conv consumers; with padding, the gradient landing on the zero
border is counted too. The residual is taken at the consumer's output (before a BatchNorm that was
not folded). A group with another consumer (non-linear, grouped Conv, a coarse head axis) or units
removed in blocks is scored by the fallback (L2 magnitude) and reported so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from onnxprune.analysis.channels import ChannelAnalysis, ParamUse
from onnxprune.calibration.collect import StatRequest, conv_geometry
from onnxprune.passes._importance import CHANNEL_IMPORTANCES, ChannelImportance, Stats
from onnxprune.passes._reconstruct import _as_matrix

__all__ = ["ISpaSP", "Consumer", "ispasp_support"]

_LINEAR = ("Conv", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class Consumer:
    """One linear consumer of a group.

    ``weight`` is ``[outputs, features]``, ``column_sums`` the sums of its input rows (im2col patches
    for a Conv, ``kernel`` taps per channel), ``unit_of`` the group unit of each feature (−1: a channel
    of another group or a fixed one).
    """

    weight: np.ndarray
    column_sums: np.ndarray
    unit_of: np.ndarray
    kernel: int = 1

    def residual_gradient(self, removed: np.ndarray, units: int) -> np.ndarray:
        """Per-unit ``Σ ∂R/∂H`` when the units flagged in ``removed`` are left out."""
        inside = self.unit_of >= 0
        dropped = inside & removed[np.where(inside, self.unit_of, 0)]
        grad = ((self.column_sums * dropped) @ self.weight.T) @ self.weight
        return np.bincount(self.unit_of[inside], weights=grad[inside], minlength=units)

    def hidden_sums(self, units: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit ``Σ H`` (a Conv's patch columns averaged over the kernel) and which units this consumer sees."""
        per_channel = self.column_sums.reshape(-1, self.kernel).mean(axis=1)
        unit = self.unit_of.reshape(-1, self.kernel)[:, 0]
        inside = unit >= 0
        seen = np.bincount(unit[inside], minlength=units) > 0
        return np.bincount(unit[inside], weights=per_channel[inside], minlength=units), seen


def ispasp_support(
    consumers: Sequence[Consumer], units: int, keep: int, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``keep`` selected units (sorted) and the last residual importance of every unit."""
    keep = max(1, min(keep, units))
    hidden = np.zeros(units)
    seen = np.zeros(units)
    for consumer in consumers:
        sums, where = consumer.hidden_sums(units)
        hidden += sums
        seen += where
    hidden /= np.maximum(seen, 1)
    support = np.zeros(units, dtype=bool)
    importance = np.zeros(units)
    for _ in range(iterations):
        importance = sum(c.residual_gradient(~support, units) for c in consumers)
        if support.any() and not np.any(np.abs(importance) > 1e-12 * np.abs(hidden).max(initial=1.0)):
            break  # the kept units reproduce every consumer's output: nothing left to recover
        omega = support.copy()
        omega[np.argsort(-importance, kind="stable")[: 2 * keep]] = True
        candidates = np.flatnonzero(omega)
        chosen = candidates[np.argsort(-hidden[candidates], kind="stable")[:keep]]
        new = np.zeros(units, dtype=bool)
        new[chosen] = True
        if np.array_equal(new, support):
            break
        support = new
    return np.flatnonzero(support), importance


def _unit_of_channels(analysis: ChannelAnalysis, use: ParamUse, gid: int) -> np.ndarray | None:
    """Group unit of each channel of ``use.by`` (−1 outside the group); None for coarse (head) segments."""
    layout = analysis.layout(use.by)
    if layout is None:
        return None
    parts = []
    for seg in layout.segments:
        if seg.group is None or analysis.groups.find(seg.group) != gid:
            parts.append(np.full(seg.channels, -1))
        elif seg.per != 1:
            return None
        else:
            parts.append(seg.start + np.arange(seg.channels) // seg.size)
    return np.concatenate(parts) if parts else None


def _key(use: ParamUse) -> str:
    return f"{use.by.name}@{use.node.name}:ispasp"


def _consumer(analysis: ChannelAnalysis, use: ParamUse, gid: int, stats: Stats) -> Consumer | None:
    weight = analysis.const(use.node.inputs[use.index])
    unit_of = _unit_of_channels(analysis, use, gid)
    entry = stats.get(_key(use))
    if weight is None or unit_of is None or entry is None or entry.gram_sum is None or use.per != 1:
        return None
    kernel = int(np.prod(weight.shape[2:])) if use.node.op_type == "Conv" else 1
    matrix = _as_matrix(use.node, np.asarray(weight, dtype=np.float64)).T  # [outputs, features]
    if weight.ndim not in (2, 4) or matrix.shape[1] != len(unit_of) * kernel:
        return None  # a grouped Conv, a batched MatMul weight
    return Consumer(matrix, np.asarray(entry.gram_sum, dtype=np.float64), np.repeat(unit_of, kernel), kernel)


@dataclasses.dataclass(frozen=True)
class ISpaSP(ChannelImportance):
    """i-SpaSP support selection; scores rank the selected units first (see the module docstring).

    Attributes:
        iterations: Rounds of support selection (the paper's T = 20).
    """

    name: str = "ispasp"
    description: str = (
        "i-SpaSP: CoSaMP-like support selection from the consumers' output residual (T=20; linear consumers, "
        "else L2); needs calibration data"
    )
    sums: str | None = "abs"
    roles: tuple[str, ...] = ("in",)
    root: bool = False
    iterations: int = 20

    def requests(self, analysis: ChannelAnalysis, uses: Sequence[ParamUse]) -> list[StatRequest]:
        """Column sums of every linear consumer's input rows (im2col patches for a Conv)."""
        found = []
        for use in uses:
            layout = analysis.layout(use.by) if use.role == "in" else None
            if layout is None or use.node.op_type not in _LINEAR:
                continue
            geometry = None
            if use.node.op_type == "Conv":
                weight = analysis.const(use.node.inputs[use.index])
                if weight is None or weight.ndim != 4:
                    continue
                geometry = conv_geometry(use.node, tuple(weight.shape[2:]))  # type: ignore[arg-type]
                if isinstance(geometry, str):
                    continue
            found.append(
                StatRequest(use.by.name or "", layout.axis, gram=True, conv=geometry, sums=frozenset(), key=_key(use))
            )
        return found

    def member(self, analysis: ChannelAnalysis, use: ParamUse, stats: Stats | None) -> np.ndarray | None:
        return None  # the selection is over the whole group: see ``group``

    def group(
        self, analysis: ChannelAnalysis, uses: Sequence[ParamUse], gid: int, stats: Stats | None, ratio: float
    ) -> np.ndarray | None:
        """Per-unit scores ranking the i-SpaSP support for removing ``ratio`` first; None: unsupported group."""
        group = analysis.groups[gid]
        if stats is None or group.block != 1:
            return None
        consumers = []
        for use in uses:
            layout = analysis.layout(use.by) if use.role == "in" else None
            if layout is None or all(analysis.groups.find(g) != gid for g in layout.groups()):
                continue
            consumer = _consumer(analysis, use, gid, stats) if use.node.op_type in _LINEAR else None
            if consumer is None:
                return None
            consumers.append(consumer)
        if not consumers:
            return None
        keep = max(1, int(round(group.units * (1.0 - ratio))))
        support, importance = ispasp_support(consumers, group.units, keep, self.iterations)
        return support_scores(group.units, support, importance)


def support_scores(units: int, support: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """Scores in (0, 2]: the support's units above 1 (in its order), the others by their residual importance."""
    scores = np.empty(units)
    rest = np.setdiff1d(np.arange(units), support)
    order = rest[np.argsort(-importance[rest], kind="stable")]
    scores[order] = 1.0 - (np.arange(len(order)) + 1) / (len(order) + 1)
    scores[support] = 2.0 - np.arange(len(support)) / max(len(support), 1) * 1e-3
    return scores


CHANNEL_IMPORTANCES.register(ISpaSP())
