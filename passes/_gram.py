"""Calibration Gram matrices ``H = XᵀX`` of the inputs a weight multiplies (SparseGPT, low-rank).

Rows of ``X`` are the vectors the weight's matrix form multiplies: the last axis of a Gemm/MatMul
input, or the im2col patches of a 2-D Conv input (columns in the weight's ``(in, kh, kw)`` order).
A Conv's request is keyed by its geometry, so one value can feed convs that unfold it differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest, conv_geometry
from onnxprune.calibration.stats import ChannelStats
from onnxprune.passes._linalg import solve_spd

__all__ = [
    "corrected_target",
    "from_matrix",
    "gram_requests",
    "delta_times",
    "mean_delta",
    "mean_gram",
    "to_matrix",
]


def gram_requests(weight: Weight, needed_by: str) -> tuple[StatRequest, ...] | str:
    """One Gram request per use of ``weight``, or the reason none can be described."""
    if any(use.activation is None for use in weight.uses):
        return "a consuming node has no data input"
    names = [use.activation.name or "" for use in weight.uses if use.activation is not None]
    if weight.op_type in ("Gemm", "MatMul"):
        uses = zip(names, weight.uses, strict=True)
        return tuple(StatRequest(name, use.feature_axis, gram=True, sums=frozenset()) for name, use in uses)
    if weight.op_type == "Conv":
        if weight.groups != 1:
            return f"grouped Conv (group={weight.groups}) is not supported by {needed_by}"
        if len(weight.shape) != 4:
            return f"{len(weight.shape) - 2}-D Conv is not supported by {needed_by} (only 2-D kernels)"
        requests = []
        for name, use in zip(names, weight.uses, strict=True):
            geometry = conv_geometry(use.node, weight.shape[2:])  # type: ignore[arg-type]
            if isinstance(geometry, str):
                return geometry
            key = f"{name}@conv{geometry.kernel}{geometry.strides}{geometry.pads}{geometry.dilations}"
            requests.append(StatRequest(name, 1, gram=True, conv=geometry, sums=frozenset(), key=key))
        return tuple(requests)
    return f"{weight.op_type} is not supported by {needed_by} (only Gemm, MatMul and 2-D Conv with group=1)"


def to_matrix(weight: Weight, values: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """``[outputs, features]`` view of a weight, columns in Gram order (optionally permuted by ``order``)."""
    if weight.op_type == "Conv":
        matrix = values.reshape(weight.shape[0], -1)
        return matrix if order is None else matrix[:, order]
    return np.moveaxis(values, weight.out_axis, 0)


def from_matrix(weight: Weight, matrix: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`to_matrix`."""
    if weight.op_type == "Conv":
        if order is not None:
            restored = np.empty_like(matrix)
            restored[:, order] = matrix
            matrix = restored
        return matrix.reshape(weight.shape)
    return np.moveaxis(matrix, 0, weight.out_axis)


def _mean(
    stats: Sequence[ChannelStats], field: str, features: int, consume: bool, dtype: type = np.float64
) -> np.ndarray | None:
    arrays = [getattr(s, field) for s in stats]
    if any(a is None or a.shape != (features, features) for a in arrays):
        return None
    rows = max(sum(s.rows for s in stats), 1)
    if not consume:
        return (sum(np.asarray(a, dtype=np.float64) for a in arrays) / rows).astype(dtype, copy=False)
    for s in stats:
        setattr(s, field, None)
    total = arrays.pop(0).astype(dtype, copy=False)  # the accumulator itself when dtypes agree
    while arrays:
        total += arrays.pop()
    total /= rows
    return total


def mean_gram(
    stats: Sequence[ChannelStats], features: int, *, consume: bool = False, dtype: type = np.float64
) -> np.ndarray | None:
    """``XᵀX / rows`` summed over the uses' statistics, or ``None`` if a Gram is missing.

    With ``consume``, the statistics' own Grams are detached from them and, with ``dtype`` float32
    (how they were summed), scaled in place: no copy of a Gram-sized matrix is made.
    """
    return _mean(stats, "gram", features, consume, dtype)


def mean_delta(stats: Sequence[ChannelStats], features: int, *, consume: bool = False) -> np.ndarray | None:
    """``X̂ᵀ(X − X̂) / rows`` (changed inputs against the original ones) summed over the uses, or ``None``."""
    return _mean(stats, "delta", features, consume)


def delta_times(stats: Sequence[ChannelStats], w: np.ndarray) -> np.ndarray | None:
    """``mean X̂ᵀ(X − X̂) · Wᵀ [features, outputs]`` (float64), consuming the statistics' ``delta``.

    ``None`` without paired statistics or where nothing upstream changed. The product is taken in
    float32, as the sums were kept, so no float64 copy of a Gram-sized matrix is made.
    """
    deltas = [s.delta for s in stats]
    if not deltas or any(d is None or d.shape[1] != w.shape[1] for d in deltas):
        return None
    for s in stats:
        s.delta = None
    rows = max(sum(s.rows for s in stats), 1)
    w32 = np.ascontiguousarray(w.T, dtype=np.float32)
    product = (deltas[0] @ w32).astype(np.float64)  # summed and scaled in place: [features, outputs] is
    for d in deltas[1:]:  # as large as the weight (a language model's head: 0.5 GB in float64)
        product += d @ w32
    product /= rows
    return product if np.any(product) else None


def corrected_target(w: np.ndarray, gram: np.ndarray, delta: np.ndarray, percdamp: float) -> np.ndarray:
    """``W* = W + W·deltaᵀ·(Ĝ+λI)⁻¹``: the weights that best map the changed inputs onto the original outputs.

    With ``Ĝ = X̂ᵀX̂`` and ``delta = X̂ᵀ(X − X̂)``, ``‖ŴX̂ − WX‖² = ‖ŴX̂ − W*X̂‖² + const`` (for
    ``λ = 0``), so fitting ``Ŵ`` to ``W*`` under ``Ĝ`` also corrects the error that earlier, already
    changed layers put into ``X̂``. The dampening shrinks only the correction, never the weights
    themselves; where nothing upstream changed (``X̂ = X``), ``w`` is returned as it is.
    """
    if not np.any(delta):
        return w
    return w + solve_spd(gram, delta @ w.T, percdamp).T
