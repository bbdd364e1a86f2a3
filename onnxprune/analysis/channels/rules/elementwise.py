"""Elementwise ops: unary pass-through, and binary/variadic ops that broadcast or couple channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune.analysis.channels.rules._common import keep_axis
from onnxprune.analysis.channels.rules._registry import rule

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis

UNARY = (
    "Relu LeakyRelu Elu Selu Celu ThresholdedRelu Sigmoid HardSigmoid HardSwish Tanh Erf Gelu Softplus "
    "Softsign Mish Exp Log Abs Neg Sqrt Reciprocal Floor Ceil Round Sign Sin Cos Shrink Identity Cast "
    "Dropout Clip IsNaN IsInf Not"
).split()
BINARY = "Add Sub Mul Div Pow Max Min Sum Mean PRelu Where BitShift And Or Xor Equal Greater Less".split()


@rule(*UNARY)
def unary(node: ir.Node, a: ChannelAnalysis) -> None:
    """Channel-wise ops (Clip's bounds and Dropout's ratio are scalars)."""
    lx = a.layout(node.inputs[0])
    others = [a.layout(v) for v in node.inputs[1:]]
    if any(others):
        a.block(node, others, f"channels reach a scalar operand of {node.op_type}")
    if lx is not None:
        keep_axis(node, a, lx)


def _aligned_axis(a: ChannelAnalysis, value: ir.Value, out_rank: int, out_axis: int) -> int | None:
    """``value``'s own axis that broadcasts onto ``out_axis``; None if it has no such axis."""
    rank = a.rank(value)
    if rank is None:
        return None
    axis = out_axis - (out_rank - rank)
    return axis if axis >= 0 else None


def binary_slice(node: ir.Node, ex: Executor) -> None:
    """Constant operands broadcast along the output's channel axis follow the channels."""
    y = node.outputs[0]
    layout = ex.analysis.layout(y)
    if layout is None:
        return
    for i, value in enumerate(node.inputs):
        if value is None or ex.analysis.layout(value) is not None or ex.analysis.const(value) is None:
            continue
        axis = _aligned_axis(ex.analysis, value, layout.rank, layout.axis)
        shape = ex.analysis.shape(value)
        if axis is not None and shape is not None and shape[axis] > 1:
            ex.param(node, i, axis, y, role="const")


@rule(*BINARY, slice=binary_slice)
def binary(node: ir.Node, a: ChannelAnalysis) -> None:
    """Broadcasting ops: couple the channel-carrying operands, slice broadcast constants."""
    y = node.outputs[0]
    out_rank = a.rank(y)
    carried = [(v, a.layout(v)) for v in node.inputs if a.layout(v) is not None]
    if not carried:
        return
    layouts = [lay for _, lay in carried]
    if out_rank is None:
        a.block(node, layouts, "output rank unknown")
        return
    moved = [lay.moved(lay.axis + out_rank - lay.rank, out_rank) for lay in layouts]  # type: ignore[union-attr]
    if len({lay.axis for lay in moved}) > 1:
        a.block(node, layouts, "operands carry channels on different axes")
        return
    axis = moved[0].axis
    for value in node.inputs:
        if value is None or a.layout(value) is not None:
            continue
        own = _aligned_axis(a, value, out_rank, axis)
        shape = a.shape(value)
        if own is None or (shape is not None and shape[own] == 1):
            continue
        if shape is None:
            a.block(node, layouts, f"operand '{value.name}' has an unknown shape")
            return
        if a.const(value) is None:
            a.block(node, layouts, f"combines with '{value.name}', whose channels cannot be pruned")
            return
    keep_axis(node, a, a.couple(node, moved, f"{node.op_type} combines"), axis)
