"""Calibration Gram matrices ``H = XᵀX`` of the inputs a weight multiplies (SparseGPT, low-rank).

Rows of ``X`` are the vectors the weight's matrix form multiplies: the last axis of a Gemm/MatMul
input, or the im2col patches of a 2-D Conv input (columns in the weight's ``(in, kh, kw)`` order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest, conv_geometry
from onnxprune.calibration.stats import ChannelStats
from onnxprune.context import PassContext

__all__ = ["collect_grams", "from_matrix", "gram_requests", "mean_gram", "output_error", "to_matrix"]


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
            requests.append(StatRequest(name, 1, gram=True, conv=geometry, sums=frozenset()))
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


def _request_rounds(requests: Iterable[StatRequest]) -> list[list[StatRequest]]:
    """Split requests into calibration runs holding at most one request per value.

    Statistics are keyed by value name, so an activation feeding Convs of different geometry (or a
    Conv and a MatMul) needs one run per distinct Gram.
    """
    rounds: list[dict[str, StatRequest]] = []
    for request in dict.fromkeys(requests):
        for round_ in rounds:
            if round_.get(request.value, request) == request:
                round_[request.value] = request
                break
        else:
            rounds.append({request.value: request})
    return [list(r.values()) for r in rounds]


def collect_grams(
    context: PassContext, model: ir.Model, requests: Iterable[StatRequest], *, needed_by: str
) -> dict[StatRequest, ChannelStats]:
    """Statistics for every request, in as few calibration runs as the requests allow."""
    found: dict[StatRequest, ChannelStats] = {}
    for round_ in _request_rounds(requests):
        stats = context.stats(model, round_, needed_by=needed_by)
        found.update({r: stats[r.value] for r in round_})
    return found


def mean_gram(stats: Sequence[ChannelStats], features: int) -> np.ndarray | None:
    """``XᵀX / rows`` summed over the uses' statistics (float64), or ``None`` if a Gram is missing."""
    if any(s.gram is None or s.gram.shape != (features, features) for s in stats):
        return None
    rows = sum(s.rows for s in stats)
    return sum(np.asarray(s.gram, dtype=np.float64) for s in stats) / max(rows, 1)


def output_error(w: np.ndarray, approx: np.ndarray, hessian: np.ndarray) -> float:
    """Relative output error ‖(W−Ŵ)X‖/‖WX‖ from ``H = XᵀX``: sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))."""
    delta = w - approx
    num = float(np.einsum("ij,jk,ik->", delta, hessian, delta))
    den = float(np.einsum("ij,jk,ik->", w, hessian, w))
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0
