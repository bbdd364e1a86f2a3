"""Ops with a constant weight: Conv, ConvTranspose, Gemm, MatMul (producers and consumers of channels)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune.analysis.channels.layout import Layout, fixed
from onnxprune.analysis.channels.rules._common import attr_int, keep_axis
from onnxprune.analysis.channels.rules._registry import rule

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis


def _conv_slice(node: ir.Node, ex: Executor) -> None:
    x, y = node.inputs[0], node.outputs[0]
    group = attr_int(node, "group", 1)
    if ex.analysis.layout(y) is not None:
        ex.param(node, 1, 0, y, role="out")
        ex.param(node, 2, 0, y, role="bias")
    if ex.analysis.layout(x) is None:
        return
    if group == 1:
        ex.param(node, 1, 1, x, role="in")
    else:
        per_group = ex.analysis.shape(node.inputs[1])[1]  # type: ignore[index]
        kept = ex.kept(x)
        ex.set_attr(node, ir.AttrInt64("group", len(kept) // per_group))  # type: ignore[arg-type]


@rule("Conv", slice=_conv_slice)
def conv(node: ir.Node, a: ChannelAnalysis) -> None:
    """Conv: consumer of its input channels, producer of a new group (grouped: pass-through by conv group)."""
    x, y = node.inputs[0], node.outputs[0]
    weight = a.shape(node.inputs[1]) if len(node.inputs) > 1 else None
    lx = a.layout(x)
    if weight is None or a.const(node.inputs[1]) is None:
        a.block(node, [lx], "Conv weight is not a constant")
        return
    if lx is not None and lx.axis != 1:
        a.block(node, [lx], "channels are not on the Conv's channel axis")
        lx = None
    group = attr_int(node, "group", 1)
    c_out, per_group = weight[0], weight[1]
    if group == 1:
        a.new_group(node, y, 1, c_out)
        return
    if lx is None:
        return  # a grouped conv of fixed channels: its outputs are fixed too
    c_in = per_group * group
    out_per_group = c_out // group
    if not a.coarsen(node, lx, per_group, f"grouped Conv (group={group}) removes whole conv groups"):
        return
    segments = []
    for seg in lx.segments:
        if seg.per != 1 or (seg.channels * out_per_group) % per_group or (seg.size * out_per_group) % per_group:
            a.block(node, [lx], f"grouped Conv maps {c_in} to {c_out} channels unevenly")
            return
        if seg.group is None:
            segments.append(fixed(seg.channels * out_per_group // per_group))
        else:
            segments.append(dataclasses.replace(seg, size=seg.size * out_per_group // per_group))
    keep_axis(node, a, Layout(1, lx.rank, tuple(segments)))


def _conv_transpose_slice(node: ir.Node, ex: Executor) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if ex.analysis.layout(y) is not None:
        ex.param(node, 1, 1, y, role="out")
        ex.param(node, 2, 0, y, role="bias")
    if ex.analysis.layout(x) is not None:
        ex.param(node, 1, 0, x, role="in")


@rule("ConvTranspose", slice=_conv_transpose_slice)
def conv_transpose(node: ir.Node, a: ChannelAnalysis) -> None:
    """ConvTranspose (group 1): consumer of its input channels, producer of a new group."""
    x, y = node.inputs[0], node.outputs[0]
    lx = a.layout(x)
    weight = a.shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or a.const(node.inputs[1]) is None:
        a.block(node, [lx], "ConvTranspose weight is not a constant")
        return
    if attr_int(node, "group", 1) != 1:
        a.block(node, [lx], "grouped ConvTranspose is not supported")
        return
    if lx is not None and lx.axis != 1:
        a.block(node, [lx], "channels are not on the ConvTranspose's channel axis")
    a.new_group(node, y, 1, weight[1])


def _gemm_axes(node: ir.Node) -> tuple[int, int]:
    """(input-feature axis, output-feature axis) of Gemm's B."""
    return (1, 0) if attr_int(node, "transB", 0) else (0, 1)


def _gemm_slice(node: ir.Node, ex: Executor) -> None:
    a_in, y = node.inputs[0], node.outputs[0]
    k_axis, n_axis = _gemm_axes(node)
    if ex.analysis.layout(y) is not None:
        ex.param(node, 1, n_axis, y, role="out")
        bias = ex.analysis.shape(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if bias and bias[-1] > 1:
            ex.param(node, 2, len(bias) - 1, y, role="bias")
    if ex.analysis.layout(a_in) is not None:
        ex.param(node, 1, k_axis, a_in, role="in")


@rule("Gemm", slice=_gemm_slice)
def gemm(node: ir.Node, a: ChannelAnalysis) -> None:
    """Gemm: consumer of A's features, producer of a new group of output features."""
    a_in, y = node.inputs[0], node.outputs[0]
    la = a.layout(a_in)
    weight = a.shape(node.inputs[1])
    if weight is None or a.const(node.inputs[1]) is None or attr_int(node, "transA", 0):
        a.block(node, [la, a.layout(node.inputs[1])], "Gemm needs a constant B and transA=0")
        return
    if la is not None and la.axis != 1:
        a.block(node, [la], "channels are not on Gemm's feature axis")
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = a.shape(node.inputs[2])
        if a.const(node.inputs[2]) is None or bias is None or (len(bias) == 2 and bias[0] != 1):
            a.block(node, [la, a.layout(node.inputs[2])], "Gemm bias is not a constant row")
            return
    a.new_group(node, y, 1, weight[_gemm_axes(node)[1]])


def _matmul_slice(node: ir.Node, ex: Executor) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if ex.analysis.const(node.inputs[1]) is None:
        return
    lx = ex.analysis.layout(x)
    if ex.analysis.layout(y) is not None and (lx is None or lx.axis == lx.rank - 1):
        ex.param(node, 1, 1, y, role="out")
    if lx is not None and lx.axis == lx.rank - 1:
        ex.param(node, 1, 0, x, role="in")


@rule("MatMul", slice=_matmul_slice)
def matmul(node: ir.Node, a: ChannelAnalysis) -> None:
    """MatMul with a constant 2-D weight: consumer and producer; two runtime operands: couple."""
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    lx, lw = a.layout(x), a.layout(w)
    wshape = a.shape(w)
    rank_y = a.rank(y)
    if a.const(x) is not None:
        a.block(node, [lw], "MatMul with a constant left operand")
        return
    if a.const(w) is not None and wshape is not None and len(wshape) == 2:
        if lx is not None and lx.axis != lx.rank - 1:
            if lx.axis == lx.rank - 2 or lx.rank < 2:
                a.block(node, [lx], "channels on MatMul's row axis")
                return
            keep_axis(node, a, lx, lx.axis + (rank_y or lx.rank) - lx.rank)  # batch axis passes through
            return
        if rank_y is not None:
            a.new_group(node, y, rank_y - 1, wshape[1])
        return
    # two runtime operands (attention): couple the contracted axis, pass batch axes through
    rx, rw = a.rank(x), a.rank(w)
    if rx is None or rw is None or rank_y is None or rx < 2 or rw < 2:
        a.block(node, [lx, lw], "MatMul of operands with unknown rank")
        return
    contracted = [(lay, lay.axis) for lay, k in ((lx, rx - 1), (lw, rw - 2)) if lay is not None and lay.axis == k]
    if len(contracted) == 1 or (lx is not None and lx.axis == rx - 2) or (lw is not None and lw.axis == rw - 1):
        a.block(node, [lx, lw], "channels on a MatMul row/column axis of two runtime operands")
        return
    if len(contracted) == 2:
        a.couple(node, [lx, lw], "MatMul contracts")  # type: ignore[list-item]
        return
    batch = [lay for lay in (lx, lw) if lay is not None]
    if batch:
        moved = [lay.moved(lay.axis + rank_y - lay.rank, rank_y) for lay in batch]
        if len({lay.axis for lay in moved}) > 1:
            a.block(node, batch, "MatMul batch axes do not line up")
            return
        for value, lay, rank in ((x, lx, rx), (w, lw, rw)):
            own = moved[0].axis - (rank_y - rank)
            shape = a.shape(value)
            if lay is None and own >= 0 and (shape is None or shape[own] != 1):
                a.block(node, batch, f"MatMul batch meets '{value.name}', whose channels cannot be pruned")
                return
        keep_axis(node, a, a.couple(node, moved, "MatMul batch couples"))
