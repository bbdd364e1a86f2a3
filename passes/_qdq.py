"""Facts about quantized (QDQ) graphs: which nodes quantize, and the integer weights behind DequantizeLinear."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import constant_behind

__all__ = ["QUANTIZED_OPS", "QuantizedWeight", "quantized_nodes", "quantized_weights", "zeros_lost"]

#: Ops that mark a model as already quantized (QDQ, QOperator or dynamic quantization).
QUANTIZED_OPS = frozenset(
    "QuantizeLinear DequantizeLinear DynamicQuantizeLinear MatMulInteger ConvInteger QLinearConv QLinearMatMul".split()
)
#: Ops whose weight (input 1) a DequantizeLinear of a constant may feed.
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def quantized_nodes(model: ir.Model) -> list[ir.Node]:
    """The nodes of ``model`` (subgraphs included) that quantize or run on quantized tensors."""
    return [
        node
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        if node.op_type in QUANTIZED_OPS and node.domain in ("", "ai.onnx", "com.microsoft")
    ]


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """An integer weight ``q`` read through ``DequantizeLinear`` by a Conv/Gemm/MatMul.

    ``float_name`` is the float tensor it was quantized from when onnxruntime's naming tells
    (``<name>_quantized``), else the integer tensor's own name.
    """

    name: str
    float_name: str
    op_type: str
    values: np.ndarray
    zero_point: np.ndarray
    axis: int | None

    def is_zero(self) -> np.ndarray:
        """Where the weight dequantizes to exactly 0 (``q == zero point``), broadcast over its shape."""
        zero_point = self.zero_point
        if self.axis is not None and zero_point.ndim == 1 and zero_point.size > 1:
            shape = [1] * self.values.ndim
            shape[self.axis] = zero_point.size
            zero_point = zero_point.reshape(shape)
        return self.values == zero_point


def quantized_weights(model: ir.Model) -> list[QuantizedWeight]:
    """Every constant integer weight that reaches a Conv/ConvTranspose/Gemm/MatMul through DequantizeLinear."""
    found = []
    for node in model.graph:
        if node.op_type != "DequantizeLinear" or not node.inputs or node.inputs[0] is None:
            continue
        tensor = constant_behind(node.inputs[0])
        if tensor is None or tensor.dtype.is_floating_point():
            continue
        consumers = [user.op_type for out in node.outputs for user, index in out.uses() if index == 1]
        op = next((c for c in consumers if c in _WEIGHT_OPS), None)
        if op is None:
            continue
        values = tensor.numpy()
        zp_value = node.inputs[2] if len(node.inputs) > 2 else None
        zp_tensor = constant_behind(zp_value) if zp_value is not None else None
        zero_point = np.zeros(1, values.dtype) if zp_tensor is None else zp_tensor.numpy().reshape(-1)
        axis = node.attributes.get_int("axis", 1)
        name = node.inputs[0].name or ""
        found.append(QuantizedWeight(name, name.removesuffix("_quantized"), op, values, zero_point, axis % values.ndim))
    return found


def zeros_lost(float_zeros: dict[str, np.ndarray], model: ir.Model) -> tuple[int, int, list[str]]:
    """Compare the zeros of float weights with their quantized versions.

    ``float_zeros`` maps float weight names to their zero masks before quantization. Returns
    ``(zeros kept, zeros lost, names of the weights that lost some)``: a zero is kept when the
    quantized value equals the zero point (it dequantizes to exactly 0). Weights left in float
    (not quantized) keep their values and are not counted.
    """
    kept = lost = 0
    broken = []
    for weight in quantized_weights(model):
        mask = float_zeros.get(weight.float_name)
        if mask is None or mask.shape != weight.values.shape:
            continue
        zero = weight.is_zero()
        kept += int(np.count_nonzero(mask & zero))
        missed = int(np.count_nonzero(mask & ~zero))
        if missed:
            lost += missed
            broken.append(weight.name)
    return kept, lost, broken
