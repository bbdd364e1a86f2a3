"""Channel-group importance: per-unit scores aggregated over a group's members.

Magnitude (L1/L2 of producer rows and consumer columns), BatchNorm |γ|, mean activation
(DropNet), activation density (1 - APoZ) and structured Wanda (‖W_col‖·‖X_c‖ at each consumer),
all computed from the parameters the channel rules record and the calibration statistics.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels import ChannelAnalysis, ParamUse
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.passes._registry import Registry
from onnxprune.passes._scores import normalizer
from onnxprune.passes._vocab import AGGREGATES, NORMALIZERS

if TYPE_CHECKING:
    from onnxprune.context import PassContext

__all__ = [
    "CHANNEL_IMPORTANCES",
    "ChannelImportance",
    "group_scores",
    "importance_requests",
    "param_channels",
    "per_unit",
    "stat_key",
]

_WEIGHTS = ("out", "in")
Stats = Mapping[str, Any]  # calibration statistics (ChannelStats) by default; an importance's own data otherwise


def stat_key(value: ir.Value) -> str:
    return value.name or ""


def per_unit(
    analysis: ChannelAnalysis, value: ir.Value, channel_scores: np.ndarray, mean: bool
) -> dict[int, np.ndarray]:
    """Fold per-channel scores of ``value`` into per-unit scores of each group it carries."""
    layout = analysis.layout(value)
    out: dict[int, np.ndarray] = {}
    if layout is None:
        return out
    pos = 0
    for seg in layout.segments:
        if seg.group is not None:
            root = analysis.groups.find(seg.group)
            block = channel_scores[pos : pos + seg.channels].reshape(seg.units // seg.per, seg.size)
            per_block = block.mean(axis=1) if mean else block.sum(axis=1) / seg.per
            units = out.setdefault(root, np.zeros(analysis.groups[root].units))
            units[seg.start : seg.start + seg.units] += np.repeat(per_block, seg.per)
        pos += seg.channels
    return out


def param_channels(analysis: ChannelAnalysis, use: ParamUse, power: int) -> np.ndarray | None:
    """Σ|w|^power over all axes but the channel axis, expanded to ``use.by``'s channels."""
    array = analysis.const(use.node.inputs[use.index])
    if array is None:
        return None
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), use.axis, 0).reshape(array.shape[use.axis], -1)
    per_index = np.abs(moved).sum(axis=1) if power == 1 else np.square(moved).sum(axis=1)
    return np.repeat(per_index, use.per)


@dataclasses.dataclass(frozen=True)
class ChannelImportance:
    """L2 magnitude: the root of Σw² of every producer row and consumer column of a channel.

    An entry scores the channels of one parameter use (``member``); a group sums its members'
    per-unit scores. ``sums`` names the running sum of each consumer's input it needs (``None``:
    no calibration data).
    """

    name: str = "l2"
    description: str = "L2 norm of the channel's weights (producer rows and consumer columns)"
    sums: str | None = None
    roles: tuple[str, ...] = _WEIGHTS
    power: int = 2
    mean: bool = False  # fold a unit's channels by their mean instead of their sum
    root: bool = True  # square root of each unit's folded score (L2)

    @property
    def needs_data(self) -> bool:
        """Whether calibration statistics are needed."""
        return self.sums is not None

    def requests(self, analysis: ChannelAnalysis, uses: Sequence[ParamUse]) -> list[StatRequest]:
        """Per-channel sums of every consumer's input, if this importance needs them."""
        if self.sums is None:
            return []
        seen: dict[str, StatRequest] = {}
        for use in uses:
            layout = analysis.layout(use.by) if use.role == "in" else None
            if layout is not None:
                seen[stat_key(use.by)] = StatRequest(stat_key(use.by), layout.axis, sums=frozenset({self.sums}))
        return list(seen.values())

    def member(self, analysis: ChannelAnalysis, use: ParamUse, stats: Stats | None) -> np.ndarray | None:
        """Scores of ``use.by``'s channels from this one use (``None``: the use says nothing)."""
        if use.role not in self.roles:
            return None
        return param_channels(analysis, use, self.power)

    def group(
        self, analysis: ChannelAnalysis, uses: Sequence[ParamUse], gid: int, stats: Stats | None, ratio: float
    ) -> np.ndarray | None:
        """Per-unit scores of group ``gid`` computed over the whole group at once (``None``: from its members).

        ``ratio`` is the fraction to be removed, for a selection such as i-SpaSP.
        """
        return None

    def gather(
        self, context: PassContext, model: ir.Model, analysis: ChannelAnalysis, uses: Sequence[ParamUse]
    ) -> Stats | None:
        """The data :meth:`member` reads: calibration statistics of :meth:`requests` (``None`` without need)."""
        if not self.needs_data:
            return None
        return context.stats(model, self.requests(analysis, uses), needed_by=f"importance '{self.name}'")

    def summary(self, stats: Stats | None) -> dict[str, Any]:
        """What the pass's report shows about the gathered data (nothing by default)."""
        return {}


@dataclasses.dataclass(frozen=True)
class BatchNormGamma(ChannelImportance):
    """|γ| of the BatchNormalization that scales the channel (network slimming)."""

    name: str = "bn"
    description: str = "|gamma| of the channel's BatchNormalization"
    roles: tuple[str, ...] = ("scale",)
    root: bool = False

    def member(self, analysis: ChannelAnalysis, use: ParamUse, stats: Stats | None) -> np.ndarray | None:
        if use.role != "scale" or use.node.op_type != "BatchNormalization":
            return None
        gamma = analysis.const(use.node.inputs[use.index])
        return None if gamma is None else np.abs(np.asarray(gamma, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class Activation(ChannelImportance):
    """A per-channel statistic of each consumer's input: mean |a| (DropNet) or density (1 - APoZ)."""

    name: str = "act_mean"
    description: str = "mean |activation| of the channel (DropNet); needs calibration data"
    sums: str | None = "abs"
    roles: tuple[str, ...] = ("in",)
    mean: bool = True
    root: bool = False

    def member(self, analysis: ChannelAnalysis, use: ParamUse, stats: Stats | None) -> np.ndarray | None:
        if use.role != "in" or stats is None:
            return None
        entry = stats[stat_key(use.by)]
        return entry.mean_abs if self.sums == "abs" else entry.nonzero_fraction


@dataclasses.dataclass(frozen=True)
class StructuredWanda(ChannelImportance):
    """Structured Wanda: ‖W_col‖·‖X_c‖ at every consumer."""

    name: str = "wanda"
    description: str = "‖W column‖·‖X channel‖ at every consumer (structured Wanda); needs calibration data"
    sums: str | None = "sq"
    roles: tuple[str, ...] = ("in",)
    root: bool = False

    def member(self, analysis: ChannelAnalysis, use: ParamUse, stats: Stats | None) -> np.ndarray | None:
        if use.role != "in" or stats is None:
            return None
        weight = param_channels(analysis, use, 2)
        return None if weight is None else np.sqrt(weight) * stats[stat_key(use.by)].norm


CHANNEL_IMPORTANCES: Registry[ChannelImportance] = Registry("importance")
CHANNEL_IMPORTANCES.register(
    ChannelImportance("l1", "L1 norm of the channel's weights (rows and columns)", power=1, root=False)
)
CHANNEL_IMPORTANCES.register(ChannelImportance())
CHANNEL_IMPORTANCES.register(BatchNormGamma())
CHANNEL_IMPORTANCES.register(Activation())
CHANNEL_IMPORTANCES.register(
    Activation("apoz", "1 - APoZ: fraction of nonzero activations of the channel; needs calibration data", "nonzero")
)
CHANNEL_IMPORTANCES.register(
    Activation("density", "activation density (= 1 - APoZ); needs calibration data", "nonzero")
)
CHANNEL_IMPORTANCES.register(StructuredWanda())
CHANNEL_IMPORTANCES.alias("magnitude", "l2")  # the word unstructured pruning uses: a channel's magnitude is its L2


def importance_requests(analysis: ChannelAnalysis, uses: Sequence[ParamUse], importance: str) -> list[StatRequest]:
    """Statistics the registered importance ``importance`` needs."""
    return CHANNEL_IMPORTANCES[importance].requests(analysis, uses)


def _member_scores(
    analysis: ChannelAnalysis, uses: Sequence[ParamUse], importance: str, stats: Stats | None
) -> dict[int, list[np.ndarray]]:
    entry = CHANNEL_IMPORTANCES[importance]
    members: dict[int, list[np.ndarray]] = defaultdict(list)
    for use in uses:
        channels = entry.member(analysis, use, stats)
        if channels is not None:
            for gid, units in per_unit(analysis, use.by, channels, entry.mean).items():
                members[gid].append(np.sqrt(units) if entry.root else units)
    return members


def _combine(parts: list[np.ndarray], aggregate: str) -> np.ndarray:
    stacked = np.stack(parts)
    return {"sum": stacked.sum, "mean": stacked.mean, "max": stacked.max}[aggregate](axis=0)


def group_scores(
    analysis: ChannelAnalysis,
    uses: Sequence[ParamUse],
    groups: Sequence[int],
    *,
    importance: str = "l2",
    aggregate: str = "sum",
    normalize: str = "mean",
    stats: Mapping[str, ChannelStats] | None = None,
    ratio: float = 0.0,
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Per-unit scores of each group in ``groups`` (root ids), and the importance each one used.

    A group with nothing to score by the chosen importance (no BatchNorm for ``bn``, no consumer
    for the activation scores, a consumer i-SpaSP cannot model) falls back to L2 magnitude.
    ``ratio`` is the fraction to be removed, for importances that select over a whole group.
    """
    importance = CHANNEL_IMPORTANCES.canonical("importance", importance)
    aggregate = AGGREGATES.canonical("aggregate", aggregate)
    normalize = NORMALIZERS.canonical("normalize", normalize)
    members = _member_scores(analysis, uses, importance, stats)
    fallback = _member_scores(analysis, uses, "l2", None) if importance != "l2" else members
    scores: dict[int, np.ndarray] = {}
    used: dict[int, str] = {}
    entry = CHANNEL_IMPORTANCES[importance]
    for gid in groups:
        whole = entry.group(analysis, uses, gid, stats, ratio)
        parts, used[gid] = [whole] if whole is not None else members.get(gid), importance
        if not parts:
            parts, used[gid] = fallback.get(gid), "l2"
        if not parts:
            parts, used[gid] = [np.ones(analysis.groups[gid].units)], "none"
        combined = _combine(parts, aggregate)
        scores[gid] = combined / normalizer(combined, normalize)
    return scores, used
