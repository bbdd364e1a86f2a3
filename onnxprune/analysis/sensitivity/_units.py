"""What one sensitivity unit changes at a ratio: a prunable weight, a channel group, a factorizable weight.

A unit names the tensors it changes and gives, per ratio, their replaced values (same shapes: weights
are zeroed or truncated in place, channels are masked rather than removed), so that every
measurement feeds the same suffix session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels import analyze_channels, masked_values, record
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.weights import Weight, constant_behind, find_weights, read_weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.passes._allocate import Allocation, GroupScores, allocate
from onnxprune.passes._gram import from_matrix, to_matrix
from onnxprune.passes._importance import group_scores, importance_requests
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, score
from onnxprune.passes.lowrank import unsupported
from onnxprune.passes.sparsify import layer_keep

__all__ = ["UnitSpec", "channel_units", "lowrank_units", "requests_for", "weight_units"]

Values = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class UnitSpec:
    """A unit: its kind and name, the nodes it touches, its size (elements or channels), its perturbation."""

    kind: str
    name: str
    nodes: tuple[str, ...]
    size: int
    tensors: tuple[str, ...]
    at: Callable[[float], Values]


def _main_weights(model: ir.Model) -> list[Weight]:
    return [w for w in find_weights(model) if not any(u.in_subgraph for u in w.uses)]


def weight_units(model: ir.Model, method: str, stats: Mapping[str, ChannelStats] | None) -> list[UnitSpec]:
    """Every prunable weight, zeroed by ``method``'s scores (magnitude or Wanda) at each sparsity."""
    units = []
    for weight in _main_weights(model):
        values = read_weight(weight)

        def at(ratio: float, weight: Weight = weight, values: np.ndarray = values) -> Values:
            keep = layer_keep(weight, score(weight, values, method, stats), ratio, method)
            return {weight.name: np.where(keep, values, 0).astype(values.dtype)}

        units.append(UnitSpec("unstructured", weight.name, weight.node_names, weight.size, (weight.name,), at))
    return units


def lowrank_units(model: ir.Model) -> list[UnitSpec]:
    """Every factorizable weight, truncated (plain SVD) to keep a fraction ``1 - ratio`` of its full rank."""
    units = []
    for weight in _main_weights(model):
        if unsupported(weight) is not None or (weight.op_type == "MatMul" and len(weight.shape) != 2):
            continue
        values = read_weight(weight)
        u, s, vt = np.linalg.svd(to_matrix(weight, values.astype(np.float64)), full_matrices=False)

        def at(
            ratio: float, weight: Weight = weight, factors: tuple = (u, s, vt), dtype: np.dtype = values.dtype
        ) -> Values:
            u, s, vt = factors
            rank = max(1, int(round((1.0 - ratio) * s.size)))
            approx = (u[:, :rank] * s[:rank]) @ vt[:rank]
            return {weight.name: from_matrix(weight, approx).astype(dtype)}

        units.append(UnitSpec("lowrank", weight.name, weight.node_names, weight.size, (weight.name,), at))
    return units


def channel_units(model: ir.Model, importance: str, stats: Mapping[str, ChannelStats] | None) -> list[UnitSpec]:
    """Every prunable channel group, masked (its lowest-scoring channels zeroed) at each ratio."""
    analysis = analyze_channels(model, complete_shapes(model))
    uses = record(analysis)
    groups = [g.id for g in analysis.groups.roots() if g.prunable]
    scores, _ = group_scores(analysis, uses, groups, importance=importance, stats=stats)
    values = {v.name: v for node in model.graph for v in (*node.inputs, *node.outputs) if v is not None and v.name}
    units = []
    for gid in groups:
        group = analysis.groups[gid]
        if group.units <= group.block:
            continue
        scored = {gid: GroupScores(group.units, group.block, scores[gid])}
        names = masked_values(analysis, {gid: np.arange(group.units - group.block)})
        dense = {n: constant_behind(values[n]).numpy() for n in names}  # type: ignore[union-attr]

        def at(ratio: float, scored: dict = scored, dense: Values = dense) -> Values:
            return {**dense, **masked_values(analysis, allocate(scored, ratio, Allocation()))}

        units.append(UnitSpec("channels", group.producers[0], tuple(group.producers), group.units, tuple(dense), at))
    return units


def requests_for(model: ir.Model, kinds: Sequence[str], method: str, channel_importance: str) -> list[StatRequest]:
    """Calibration statistics the data-aware scores need (Wanda feature norms, channel activations)."""
    requests = []
    if "unstructured" in kinds:
        requests += [r for w in _main_weights(model) for r in WEIGHT_IMPORTANCES[method].requests(w)]
    if "channels" in kinds:
        analysis = analyze_channels(model, complete_shapes(model))
        requests += importance_requests(analysis, record(analysis), channel_importance)
    return requests
