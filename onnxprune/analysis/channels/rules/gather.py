"""Gather: an embedding lookup produces channels; a Gather along another axis passes them on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune.analysis.channels.rules._common import attr_int, keep_axis
from onnxprune.analysis.channels.rules._registry import rule

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis


def _gather_slice(node: ir.Node, ex: Executor) -> None:
    table, y = node.inputs[0], node.outputs[0]
    shape = ex.analysis.shape(table)
    if ex.analysis.layout(table) is None and ex.analysis.layout(y) is not None and shape is not None:
        ex.param(node, 0, len(shape) - 1, y, role="out")


@rule("Gather", slice=_gather_slice)
def gather(node: ir.Node, a: ChannelAnalysis) -> None:
    """Rows of a constant 2-D table (an embedding) are a new group; elsewhere the channel axis moves."""
    data, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
    lx, rank_i = a.layout(data), a.rank(indices)
    axis = attr_int(node, "axis", 0)
    if a.layout(indices) is not None:
        a.block(node, [a.layout(indices)], "channels reach Gather's indices")
    if lx is None:
        shape = a.shape(data)
        if a.const(data) is not None and shape is not None and len(shape) == 2 and axis % 2 == 0:
            rank_y = a.rank(y)
            if rank_y is not None:
                a.new_group(node, y, rank_y - 1, shape[1])
        return
    if rank_i is None:
        a.block(node, [lx], "Gather indices of unknown rank")
        return
    axis %= lx.rank
    if axis == lx.axis:
        a.block(node, [lx], "Gather picks along the channel axis")
        return
    keep_axis(node, a, lx, lx.axis if lx.axis < axis else lx.axis + rank_i - 1)
