"""Cumulative-importance pruning (NNrelief): each neuron keeps the connections carrying ``alpha`` of its importance.

The sparsity is not given: it follows from ``alpha`` and is reported. The rule and the ``relief``
score live in ``_relief``; this pass selects the weights, collects the statistics and writes the masks.
Then, as the paper's backward pass, a neuron left with no outgoing connection (every consumer column
zero, e.g. a neuron that never fires: its flows are all zero) loses its incoming weights and bias too,
through the channel-dependency analysis (exact: nothing reads it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune._fields import check_choices, check_fields
from onnxprune.analysis.channels import analyze_channels, mask, record
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.weights import Weight, constant_behind, find_weights, read_weight, write_tensor, write_weight
from onnxprune.calibration.stats import ChannelStats
from onnxprune.errors import RecipeError
from onnxprune.passes._base import OnnxPrunePass, PruneResult
from onnxprune.passes._importance import param_channels, per_unit
from onnxprune.passes._relief import cumulative_keep, kernel_scores
from onnxprune.passes._scores import WEIGHT_IMPORTANCES
from onnxprune.passes._steps import each_weight
from onnxprune.passes._vocab import choice_field
from onnxprune.passes.sparsify import _entry, _Selection, check_score_importance, finish, select_weights

__all__ = ["CumulativePruneConfig", "CumulativePrunePass"]

#: ops whose input 2 is a bias along the weight's output axis
_BIASED = ("Gemm", "Conv")


@dataclasses.dataclass(frozen=True)
class CumulativePruneConfig(_Selection):
    """Cumulative-importance pruning (NNrelief): per neuron, the fewest connections carrying ``alpha``.

    Attributes:
        importance: How a connection is scored: ``relief`` (mean |x·w|, NNrelief; needs calibration
            data) or any other weight importance of ``unstructured`` (``magnitude``, ``wanda``).
        alpha_conv: Fraction of each Conv filter's importance kept (whole input kernels are kept or
            dropped, scored by their sum).
        alpha_fc: Fraction of each Gemm/MatMul neuron's importance kept.
        include_bias: The bias competes with the connections (``|b_i|``, the paper's rule): a bias
            below the cut is zeroed too. Off: biases are left alone and not counted.
        backward: Then zero the incoming weights and bias of every neuron left with no outgoing
            connection (the paper's backward pass; exact).
        include/exclude: Node- or tensor-name globs.
        keep_first/keep_last: Leave the first/last prunable layer dense.
    """

    importance: str = choice_field("relief", WEIGHT_IMPORTANCES)
    alpha_conv: float = 0.9
    alpha_fc: float = 0.95
    include_bias: bool = True
    backward: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        check_score_importance(self.importance)
        for name in ("alpha_conv", "alpha_fc"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise RecipeError(f"{name} must be in (0, 1], got {getattr(self, name)}")


def _bias(weight: Weight) -> ir.Value | None:
    """The bias initializer of a single-use Gemm/Conv weight (along its output axis), if any."""
    if len(weight.uses) != 1:
        return None
    node = weight.uses[0].node
    if node.op_type not in _BIASED or len(node.inputs) < 3 or node.inputs[2] is None:
        return None
    value = node.inputs[2]
    tensor = value.const_value
    if tensor is None or tuple(tensor.shape) != (weight.shape[weight.out_axis],):
        return None
    return value


class CumulativePrunePass(OnnxPrunePass):
    """Per neuron, keep the fewest connections carrying ``alpha`` of its importance (NNrelief)."""

    name = "cumulative"
    config_class = CumulativePruneConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        config: CumulativePruneConfig = self.config
        report = self.new_report()
        importance = WEIGHT_IMPORTANCES[config.importance]
        weights = select_weights(self, model, config, report, needs_data=importance.needs_data)

        def prune(weight: Weight, stats: Mapping[str, ChannelStats] | None) -> None:
            values = read_weight(weight)
            scores = kernel_scores(weight, importance.score(weight, values, stats))
            bias_value = _bias(weight) if config.include_bias else None
            bias = None if bias_value is None else constant_behind(bias_value).numpy()  # type: ignore[union-attr]
            alpha = config.alpha_conv if weight.op_type == "Conv" else config.alpha_fc
            keep, keep_bias = cumulative_keep(scores, bias, alpha)
            mask = _expand(weight, keep)
            write_weight(weight, np.where(mask, values, 0))
            extra = {"alpha": alpha, "dead_neurons": int(np.count_nonzero(~keep.any(axis=1)))}
            if bias_value is not None and keep_bias is not None and bias is not None:
                write_tensor(bias_value, np.where(keep_bias, bias, 0), bias_value.name or "")
                extra["bias_zeroed"] = int(np.count_nonzero(~keep_bias & (bias != 0)))
            report.changed.append(_entry(weight, int(np.count_nonzero(~mask)), extra))

        report.summary["blocks"] = each_weight(
            self.context, model, weights, importance.requests, prune, needed_by=self.name, sequential=False
        )
        if config.backward and weights:
            report.summary["neurons_without_outputs"] = prune_backward(model, self.context.data_shapes(model))
            zeros = {w.name: int(np.count_nonzero(read_weight(w) == 0)) for w in find_weights(model)}
            for entry in report.changed:
                entry["zeros"] = zeros.get(entry["tensor"], entry["zeros"])
                entry["sparsity"] = entry["zeros"] / max(entry["numel"], 1)
        head = {"alpha_conv": config.alpha_conv, "alpha_fc": config.alpha_fc, "importance": config.importance}
        return finish(self, model, report, start, head, modified=bool(weights))


def _expand(weight: Weight, keep: np.ndarray) -> np.ndarray:
    """A ``[out, in]`` keep mask broadcast over the weight's kernel axes, in the weight's layout."""
    moved_shape = [weight.shape[weight.out_axis], weight.shape[weight.in_axis]] + [
        d for i, d in enumerate(weight.shape) if i not in (weight.out_axis, weight.in_axis)
    ]
    full = np.broadcast_to(keep.reshape(*keep.shape, *([1] * (len(moved_shape) - 2))), moved_shape)
    return np.moveaxis(full, (0, 1), (weight.out_axis, weight.in_axis))


def prune_backward(model: ir.Model, inputs: Mapping[str, tuple[int, ...]]) -> int:
    """Zero the producer rows and biases of channel units no consumer reads any more; how many units.

    A unit is unread when every consumer weight's columns for it are zero; groups that cannot be
    pruned (a graph output, an op that mixes channels) are left alone.
    """
    analysis = analyze_channels(model, complete_shapes(model, inputs))
    read: dict[int, np.ndarray] = {}
    for use in record(analysis):
        if use.role != "in":
            continue
        columns = param_channels(analysis, use, 1)
        if columns is None:
            continue
        for gid, units in per_unit(analysis, use.by, columns, mean=False).items():
            read[gid] = read.get(gid, 0) + units
    keep = {}
    for group in analysis.groups.roots():
        seen = read.get(group.id)
        if group.prunable and seen is not None and group.block == 1 and not np.all(seen > 0):
            keep[group.id] = np.flatnonzero(seen > 0)
    if keep:
        mask(analysis, keep)
    return sum(analysis.groups[gid].units - len(k) for gid, k in keep.items())
