"""NNrelief (Dekhovich et al., 2021): connection importance from its mean contribution, kept cumulatively.

* Score ``relief``: ``s_ij = mean_x |x_j·w_ij|`` -- the mean absolute flow through connection (i, j) on
  the calibration data, which is ``|w_ij|·mean|x_j|`` (exact for Gemm/MatMul). For a Conv, each kernel
  element scores ``|w_kcuv|·mean|x_c|`` with the mean over every sample and position of input channel
  c; the paper sums ``|patch|·|W|`` over the positions each kernel element actually sees, so the two
  differ only at the zero padding of the borders.
* Rule ``cumulative``: per output neuron, sort its connections' importances (and its bias's, ``|b_i|``)
  and keep the smallest prefix whose sum reaches ``alpha`` of the total (the pivot included); a Conv
  filter keeps or drops whole input kernels, scored by the sum over the kernel. A neuron whose
  connections all score zero (it never receives a signal) loses all of them. The sparsity follows
  from ``alpha``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, Stats, WeightImportance, feature_means, input_requests

__all__ = ["Relief", "cumulative_keep", "kernel_scores"]


@dataclasses.dataclass(frozen=True)
class Relief(WeightImportance):
    """NNrelief's connection importance: mean |x_j·w_ij| on the calibration data."""

    name: str = "relief"
    description: str = "mean |x·w| flowing through the connection (NNrelief); needs calibration data"
    needs_data: bool = True

    def requests(self, weight: Weight) -> list[StatRequest]:
        return input_requests(weight, sums="abs")

    def score(self, weight: Weight, values: np.ndarray, stats: Stats | None) -> np.ndarray:
        assert stats is not None
        return (np.abs(values.astype(np.float64)) * feature_means(weight, stats)).astype(np.float32)


WEIGHT_IMPORTANCES.register(Relief())


def kernel_scores(weight: Weight, scores: np.ndarray) -> np.ndarray:
    """``[out, in]`` scores of each output neuron's connections: a Conv's kernel axes are summed."""
    moved = np.moveaxis(scores, (weight.out_axis, weight.in_axis), (0, 1))
    return moved.reshape(moved.shape[0], moved.shape[1], -1).sum(axis=2)


def cumulative_keep(scores: np.ndarray, bias: np.ndarray | None, alpha: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep masks of ``scores`` ``[out, in]`` (and of ``bias`` ``[out]`` importances) by the cumulative rule.

    Each row keeps its highest-scoring entries until their sum reaches ``alpha`` of the row's total
    (bias included); a row whose total is zero keeps nothing.
    """
    rows = scores.astype(np.float64)
    if bias is not None:
        rows = np.concatenate([rows, np.abs(bias.astype(np.float64))[:, None]], axis=1)
    order = np.argsort(-rows, axis=1, kind="stable")
    ranked = np.take_along_axis(rows, order, axis=1)
    totals = ranked.sum(axis=1, keepdims=True)
    before = np.cumsum(ranked, axis=1) - ranked  # importance kept before each entry
    keep_ranked = (before < alpha * totals) & (totals > 0)
    keep = np.zeros_like(keep_ranked)
    np.put_along_axis(keep, order, keep_ranked, axis=1)
    if bias is None:
        return keep, None
    return keep[:, :-1], keep[:, -1]
