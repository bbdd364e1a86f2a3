"""Give a pruned graph output its original width back: ``y = z @ W + b`` fitted on calibration data.

When the hidden size of a transformer is pruned, its last hidden state (a graph output) loses channels
too; callers expect the original width. With calibration data, ``W`` and ``b`` are the ridge
least-squares map from the pruned output to the original model's output (this also absorbs what the
LayerNorms' changed statistics moved); without data, the kept channels go back to their places and the
removed ones read zero.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune import _ort
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.verify import run_model

__all__ = ["OutputFit", "restore_outputs"]

logger = logging.getLogger(__name__)
_BATCH = 8


@dataclasses.dataclass(frozen=True)
class OutputFit:
    """The map restoring one output, and its relative squared error on the data it was fitted on."""

    weight: np.ndarray
    bias: np.ndarray
    error_before: float | None = None
    error_after: float | None = None


def _scatter(kept: np.ndarray, width: int) -> OutputFit:
    weight = np.zeros((len(kept), width), dtype=np.float64)
    weight[np.arange(len(kept)), kept] = 1.0
    return OutputFit(weight, np.zeros(width))


def _fit(pruned: ir.Model, dense: ir.Model, kept: Mapping[str, np.ndarray], source: CalibrationSource, ridge: float):
    """Ridge fits from the pruned outputs to the dense model's, accumulated batch by batch."""
    sums: dict[str, list] = {}
    candidate = _ort.session(pruned, what="pruned model")
    reference = _ort.session(dense, what="original model")
    for feed in source.batches(_BATCH):
        z_all, y_all = run_model(candidate, feed), run_model(reference, feed)
        for name in kept:
            z = z_all[name].reshape(-1, z_all[name].shape[-1]).astype(np.float64)
            y = y_all[name].reshape(-1, y_all[name].shape[-1]).astype(np.float64)
            acc = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0, 0, 0.0])
            acc[0] = acc[0] + z.T @ z
            acc[1] = acc[1] + z.T @ y
            acc[2] = acc[2] + z.sum(0)
            acc[3] = acc[3] + y.sum(0)
            acc[4] += len(z)
            acc[5] += float((y**2).sum())
    fits = {}
    for name, (zz, zy, sz, sy, n, yy) in sums.items():
        mz, my = sz / n, sy / n
        gram = zz - n * np.outer(mz, mz)
        cross = zy - n * np.outer(mz, my)
        lam = ridge * max(float(np.mean(np.diag(gram))), 1e-12)
        weight = np.linalg.solve(gram + lam * np.eye(len(gram)), cross)
        bias = my - mz @ weight
        total = yy - n * float(my @ my)
        base = _scatter(kept[name], len(my))
        fits[name] = OutputFit(
            weight,
            bias,
            _residual(base.weight, base.bias, zz, zy, sz, sy, yy, n) / max(total, 1e-30),
            _residual(weight, bias, zz, zy, sz, sy, yy, n) / max(total, 1e-30),
        )
    return fits


def _residual(w, b, zz, zy, sz, sy, yy, n) -> float:  # type: ignore[no-untyped-def]
    """Σ‖z W + b − y‖² from the accumulated moments."""
    return float(np.sum((w.T @ zz) * w.T) + 2 * b @ (w.T @ sz) + n * b @ b - 2 * np.sum(w * zy) - 2 * b @ sy + yy)


def restore_outputs(
    model: ir.Model,
    dense: ir.Model,
    kept: Mapping[str, np.ndarray],
    source: CalibrationSource | None,
    ridge: float,
) -> dict[str, OutputFit]:
    """Append ``MatMul + Add`` after each output in ``kept`` (name -> kept channel positions) of ``model``.

    The outputs keep their names, shapes and types; the pruned values are renamed ``NAME__pruned``.
    """
    widths = {v.name: v.shape[-1] for v in dense.graph.outputs if v.name in kept and v.shape is not None}
    if source is not None and not getattr(source, "random", False):
        fits = _fit(model, dense, kept, source, ridge)
    else:
        fits = {name: _scatter(positions, int(widths[name])) for name, positions in kept.items()}
    graph = model.graph
    for i, value in enumerate(list(graph.outputs)):
        if value.name not in fits:
            continue
        fit, name, dtype = fits[value.name], value.name, value.dtype or ir.DataType.FLOAT
        tensors = []
        for suffix, array in (("restore_weight", fit.weight), ("restore_bias", fit.bias)):
            array = np.ascontiguousarray(array, dtype=dtype.numpy())
            const = ir.Value(name=f"{name}__{suffix}", shape=ir.Shape(array.shape), type=ir.TensorType(dtype))
            const.const_value = ir.Tensor(array, name=const.name)
            graph.register_initializer(const)
            tensors.append(const)
        shape, value.name, value.shape = value.shape, f"{name}__pruned", None
        matmul = ir.Node("", "MatMul", [value, tensors[0]], name=f"{name}__restore")
        add = ir.Node("", "Add", [matmul.outputs[0], tensors[1]], name=f"{name}__restore_bias")
        add.outputs[0].name, add.outputs[0].shape, add.outputs[0].type = name, shape, value.type
        graph.extend([matmul, add])
        graph.outputs[i] = add.outputs[0]
        logger.info("output '%s' restored to %d channels (error %s)", name, fit.weight.shape[1], fit.error_after)
    return fits
