"""Weight importances, registered by name: each declares the statistics it needs and scores every element.

An importance is a small frozen object with ``requests`` (what calibration must collect) and ``score``
(weight-shaped scores from the current values and those statistics). ``method`` names the pass that
implements it: plain scores select inside ``unstructured``/``nm``; ``sparsegpt`` selects and
reconstructs in its own pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.passes._registry import Registry

__all__ = [
    "WEIGHT_IMPORTANCES",
    "WeightImportance",
    "feature_means",
    "feature_norms",
    "from_neuron_rows",
    "from_rows",
    "input_requests",
    "neuron_rows",
    "normalizer",
    "score",
    "to_rows",
]

Stats = Mapping[str, ChannelStats]


def input_requests(weight: Weight, *, gram: bool = False, sums: str = "sq") -> list[StatRequest]:
    """Statistics requests for the activations multiplied by ``weight`` (one per use).

    Only the one running sum ``sums`` is requested: the sum of squares is all that ‖X_j‖ needs.
    """
    return [
        StatRequest(use.activation.name or "", use.feature_axis, gram=gram, sums=frozenset({sums}))
        for use in weight.uses
        if use.activation is not None
    ]


def feature_norms(weight: Weight, stats: Stats) -> np.ndarray:
    """‖X_j‖ per input feature of the weight, broadcastable to the weight's shape.

    A tensor shared by several nodes combines the activations of all its uses.
    """
    sum_sq = sum(stats[use.activation.name or ""].sum_sq for use in weight.uses if use.activation is not None)
    return _per_feature(weight, np.sqrt(np.asarray(sum_sq, dtype=np.float64)))


def feature_means(weight: Weight, stats: Stats) -> np.ndarray:
    """Mean |X_j| per input feature of the weight (over every sample and position of all its uses), broadcastable."""
    used = [stats[use.activation.name or ""] for use in weight.uses if use.activation is not None]
    total = sum(s.sum_abs for s in used)
    count = max(sum(s.count for s in used), 1)
    return _per_feature(weight, np.asarray(total, dtype=np.float64) / count)


def _per_feature(weight: Weight, norms: np.ndarray) -> np.ndarray:
    """A per-input-channel vector shaped to broadcast against the weight (grouped Conv: per row's group)."""
    ndim = len(weight.shape)
    if weight.op_type == "Conv" and weight.groups > 1:
        out, per_group = weight.shape[0], weight.shape[1]
        group_of_row = np.arange(out) // (out // weight.groups)
        table = norms.reshape(weight.groups, per_group)[group_of_row]
        return table.reshape(out, per_group, *([1] * (ndim - 2)))
    shape = [1] * ndim
    shape[weight.in_axis] = weight.shape[weight.in_axis]
    return norms.reshape(shape)


@dataclasses.dataclass(frozen=True)
class WeightImportance:
    """Magnitude |W|: needs no data.

    Attributes:
        name: Registry name (``--importance``).
        description: One line for ``--help`` and ``onnxprune passes``.
        needs_data: Whether calibration statistics are needed.
        per_row: Layer-wise selection compares scores within each output row (Wanda) instead of
            over the whole tensor.
        method: The pass that implements it.
    """

    name: str = "magnitude"
    description: str = "|W|; needs no data"
    needs_data: bool = False
    per_row: bool = False
    method: str = "unstructured"

    def requests(self, weight: Weight) -> list[StatRequest]:
        """Statistics to collect for ``weight``."""
        return input_requests(weight) if self.needs_data else []

    def score(self, weight: Weight, values: np.ndarray, stats: Stats | None) -> np.ndarray:
        """Importance of every element of ``values`` (the weight's current values)."""
        return np.abs(values.astype(np.float32, copy=False))


@dataclasses.dataclass(frozen=True)
class Wanda(WeightImportance):
    """Wanda: |W|·‖X_j‖, compared within each output row."""

    name: str = "wanda"
    description: str = "|W|·‖X‖ of the input feature (Wanda), per output row; needs calibration data"
    needs_data: bool = True
    per_row: bool = True

    def score(self, weight: Weight, values: np.ndarray, stats: Stats | None) -> np.ndarray:
        assert stats is not None
        return (super().score(weight, values, stats) * feature_norms(weight, stats)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SparseGPTScore(WeightImportance):
    """SparseGPT's OBS saliency w²/[H⁻¹]²_jj, selected and reconstructed by the ``sparsegpt`` pass."""

    name: str = "sparsegpt"
    description: str = "OBS saliency with weight reconstruction from the calibration Gram (SparseGPT)"
    needs_data: bool = True
    method: str = "sparsegpt"


WEIGHT_IMPORTANCES: Registry[WeightImportance] = Registry("importance")
WEIGHT_IMPORTANCES.register(WeightImportance())
WEIGHT_IMPORTANCES.register(Wanda())
WEIGHT_IMPORTANCES.register(SparseGPTScore())


def score(weight: Weight, values: np.ndarray, importance: str, stats: Stats | None) -> np.ndarray:
    """Importance of every element of ``values`` by the registered importance ``importance``."""
    return WEIGHT_IMPORTANCES[importance].score(weight, values, stats)


def to_rows(weight: Weight, array: np.ndarray) -> np.ndarray:
    """View ``array`` (weight-shaped) as ``[rows, in]`` with the input-feature axis last.

    Rows run over the output axis and any kernel axes: Conv ``[out, in, kh, kw]`` becomes
    ``[out*kh*kw, in]``; MatMul ``[in, out]`` becomes ``[out, in]``.
    """
    moved = np.moveaxis(array, (weight.out_axis, weight.in_axis), (0, -1))
    return moved.reshape(-1, moved.shape[-1])


def from_rows(weight: Weight, rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_rows`."""
    shape = list(weight.shape)
    moved_shape = (
        [shape[weight.out_axis]]
        + [d for i, d in enumerate(shape) if i not in (weight.out_axis, weight.in_axis)]
        + [shape[weight.in_axis]]
    )
    return np.moveaxis(rows.reshape(moved_shape), (0, -1), (weight.out_axis, weight.in_axis))


def neuron_rows(weight: Weight, array: np.ndarray) -> np.ndarray:
    """View ``array`` (weight-shaped) as ``[neurons, fan-in]``: one row per output unit.

    Conv ``[out, in, kh, kw]`` becomes ``[out, in*kh*kw]`` (im2col column order); MatMul ``[in, out]``
    becomes ``[out, in]``.
    """
    moved = np.moveaxis(array, weight.out_axis, 0)
    return moved.reshape(moved.shape[0], -1)


def from_neuron_rows(weight: Weight, rows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`neuron_rows`."""
    moved_shape = [weight.shape[weight.out_axis]] + [d for i, d in enumerate(weight.shape) if i != weight.out_axis]
    return np.moveaxis(rows.reshape(moved_shape), 0, weight.out_axis)


def normalizer(scores: np.ndarray, how: str) -> float:
    """The scale that normalizes a tensor's or group's scores: mean, max, L2 norm, sum or none (1)."""
    if how == "none":
        return 1.0
    value = {"mean": np.mean, "max": np.max, "l2": np.linalg.norm, "sum": np.sum}[how](scores)
    return float(value) if value > 0 else 1.0
