"""Channel-group importance: per-unit scores aggregated over a group's members.

Magnitude (L1/L2 of producer rows and consumer columns), BatchNorm |γ|, mean activation
(DropNet), activation density (1 - APoZ) and structured Wanda (‖W_col‖·‖X_c‖ at each consumer),
all computed from the parameters the channel rules record and the calibration statistics.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels import ChannelAnalysis, ParamUse
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.passes._base import check_choice
from onnxprune.passes._scores import normalizer

__all__ = ["IMPORTANCES", "group_scores", "importance_requests", "stat_key"]

IMPORTANCES = ("l1", "l2", "bn", "act_mean", "apoz", "density", "wanda")
AGGREGATES = ("sum", "mean", "max")
NORMALIZERS = ("mean", "max", "sum", "none")
_WEIGHTS = ("out", "in")
_SUMS = {"act_mean": "abs", "apoz": "nonzero", "density": "nonzero", "wanda": "sq"}


def stat_key(value: ir.Value) -> str:
    return value.name or ""


def _consumers(uses: Sequence[ParamUse]) -> list[ParamUse]:
    return [u for u in uses if u.role == "in"]


def importance_requests(analysis: ChannelAnalysis, uses: Sequence[ParamUse], importance: str) -> list[StatRequest]:
    """Statistics the importance needs: per-channel sums of every consumer's input."""
    if importance not in _SUMS:
        return []
    seen: dict[str, StatRequest] = {}
    for use in _consumers(uses):
        layout = analysis.layout(use.by)
        if layout is not None:
            seen[stat_key(use.by)] = StatRequest(stat_key(use.by), layout.axis, sums=frozenset({_SUMS[importance]}))
    return list(seen.values())


def _per_unit(
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
            block = channel_scores[pos : pos + seg.channels].reshape(seg.units, seg.size)
            units = out.setdefault(root, np.zeros(analysis.groups[root].units))
            units[seg.start : seg.start + seg.units] += block.mean(axis=1) if mean else block.sum(axis=1)
        pos += seg.channels
    return out


def _param_channels(analysis: ChannelAnalysis, use: ParamUse, power: int) -> np.ndarray | None:
    """Σ|w|^power over all axes but the channel axis, expanded to ``use.by``'s channels."""
    array = analysis.const(use.node.inputs[use.index])
    if array is None:
        return None
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), use.axis, 0).reshape(array.shape[use.axis], -1)
    per_index = np.abs(moved).sum(axis=1) if power == 1 else np.square(moved).sum(axis=1)
    return np.repeat(per_index, use.per)


def _member_scores(
    analysis: ChannelAnalysis, uses: Sequence[ParamUse], importance: str, stats: Mapping[str, ChannelStats] | None
) -> dict[int, list[np.ndarray]]:
    members: dict[int, list[np.ndarray]] = defaultdict(list)

    def add(value: ir.Value, channels: np.ndarray, mean: bool = False, root: bool = False) -> None:
        for gid, units in _per_unit(analysis, value, channels, mean).items():
            members[gid].append(np.sqrt(units) if root else units)

    for use in uses:
        if importance in ("l1", "l2") and use.role in _WEIGHTS:
            channels = _param_channels(analysis, use, 1 if importance == "l1" else 2)
            if channels is not None:
                add(use.by, channels, root=importance == "l2")
        elif importance == "bn" and use.role == "scale" and use.node.op_type == "BatchNormalization":
            gamma = analysis.const(use.node.inputs[use.index])
            if gamma is not None:
                add(use.by, np.abs(np.asarray(gamma, dtype=np.float64)))
        elif importance in _SUMS and use.role == "in" and stats is not None:
            entry = stats[stat_key(use.by)]
            if importance == "act_mean":
                add(use.by, entry.mean_abs, mean=True)
            elif importance in ("apoz", "density"):
                add(use.by, entry.nonzero_fraction, mean=True)
            else:
                weight = _param_channels(analysis, use, 2)
                if weight is not None:
                    add(use.by, np.sqrt(weight) * entry.norm)
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
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Per-unit scores of each group in ``groups`` (root ids), and the importance each one used.

    A group with nothing to score by the chosen importance (no BatchNorm for ``bn``, no consumer
    for the activation scores) falls back to L2 magnitude.
    """
    check_choice("importance", importance, IMPORTANCES)
    check_choice("aggregate", aggregate, AGGREGATES)
    check_choice("normalize", normalize, NORMALIZERS)
    members = _member_scores(analysis, uses, importance, stats)
    fallback = _member_scores(analysis, uses, "l2", None) if importance != "l2" else members
    scores: dict[int, np.ndarray] = {}
    used: dict[int, str] = {}
    for gid in groups:
        parts, used[gid] = members.get(gid), importance
        if not parts:
            parts, used[gid] = fallback.get(gid), "l2"
        if not parts:
            parts, used[gid] = [np.ones(analysis.groups[gid].units)], "none"
        combined = _combine(parts, aggregate)
        scores[gid] = combined / normalizer(combined, normalize)
    return scores, used
