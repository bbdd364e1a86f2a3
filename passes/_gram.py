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

__all__ = [
    "corrected_target",
    "from_matrix",
    "gram_requests",
    "mean_cross",
    "mean_gram",
    "output_error",
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


def mean_gram(stats: Sequence[ChannelStats], features: int) -> np.ndarray | None:
    """``XᵀX / rows`` summed over the uses' statistics (float64), or ``None`` if a Gram is missing."""
    if any(s.gram is None or s.gram.shape != (features, features) for s in stats):
        return None
    rows = sum(s.rows for s in stats)
    return sum(np.asarray(s.gram, dtype=np.float64) for s in stats) / max(rows, 1)


def mean_cross(stats: Sequence[ChannelStats], features: int) -> np.ndarray | None:
    """``X̂ᵀX / rows`` (changed inputs against the original ones) summed over the uses, or ``None``."""
    if any(s.cross is None or s.cross.shape != (features, features) for s in stats):
        return None
    rows = sum(s.rows for s in stats)
    return sum(np.asarray(s.cross, dtype=np.float64) for s in stats) / max(rows, 1)


def corrected_target(w: np.ndarray, gram: np.ndarray, cross: np.ndarray, percdamp: float) -> np.ndarray:
    """``W* = W·crossᵀ·Ĝ⁻¹``: the weights that best map the changed inputs onto the original outputs.

    With ``Ĝ = X̂ᵀX̂`` and ``cross = X̂ᵀX``, ``‖ŴX̂ − WX‖² = ‖ŴX̂ − W*X̂‖² + const``, so fitting ``Ŵ`` to
    ``W*`` under ``Ĝ`` also corrects the error that earlier, already changed layers put into ``X̂``.
    Written as ``W* = W + W·(cross − Ĝ)ᵀ·(Ĝ+λI)⁻¹``, the dampening shrinks only the correction, never
    the weights themselves; where nothing upstream changed (``X̂ = X``), ``w`` is returned as it is.
    """
    delta = cross - gram
    if not np.any(delta):
        return w
    h = np.array(gram, dtype=np.float64)
    h[np.diag_indices_from(h)] += percdamp * max(float(np.mean(np.diag(h))), 1e-12)
    return w + np.linalg.solve(h, delta @ w.T).T


def output_error(w: np.ndarray, approx: np.ndarray, hessian: np.ndarray) -> float:
    """Relative output error ‖(W−Ŵ)X‖/‖WX‖ from ``H = XᵀX``: sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))."""
    delta = w - approx
    num = float(np.einsum("ij,jk,ik->", delta, hessian, delta))
    den = float(np.einsum("ij,jk,ik->", w, hessian, w))
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0
