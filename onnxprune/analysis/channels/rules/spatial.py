"""Ops that work along other axes: pooling, Resize/Upsample, Pad, Reduce*, Softmax."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels.rules._common import attr_int, attr_ints, axes_input, keep_axis, nchw_input
from onnxprune.analysis.channels.rules._registry import rule

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis

POOLS = "MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool MaxRoundPool".split()
REDUCE = (
    "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp "
    "ReduceSumSquare ArgMax ArgMin"
).split()
SOFTMAX = ("Softmax", "LogSoftmax", "Hardmax")
#: reductions that compute a normalization's statistic over the channels (inexact with allow_inexact)
_NORM_STATISTICS = ("ReduceMean", "ReduceSumSquare", "ReduceL2")


@rule(*POOLS)
def pool(node: ir.Node, a: ChannelAnalysis) -> None:
    """Pooling keeps the channel axis."""
    lx = nchw_input(node, a, "pooling over the channel axis")
    if lx is not None:
        keep_axis(node, a, lx)


def _resize_slice(node: ir.Node, ex: Executor) -> None:
    y = node.outputs[0]
    layout = ex.analysis.layout(y)
    if layout is None or not ex.changed(y) or len(node.inputs) < 4 or node.inputs[3] is None:
        return
    sizes = np.array(ex.analysis.const(node.inputs[3]), dtype=np.int64)
    sizes[layout.axis] = len(ex.kept(y))  # type: ignore[arg-type]
    ex.set_input(node, 3, sizes)


@rule("Resize", "Upsample", slice=_resize_slice)
def resize(node: ir.Node, a: ChannelAnalysis) -> None:
    """Resize/Upsample keep the channel axis (constant sizes are rewritten on shrink)."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    if "axes" in node.attributes and lx.axis in [d % lx.rank for d in attr_ints(node, "axes") or []]:
        a.block(node, [lx], "Resize over the channel axis")
        return
    scales_at = 1 if node.op_type == "Upsample" or a.opset < 11 else 2
    for index in (scales_at, 3):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None or (a.shape(value) or (0,))[0] == 0:
            continue
        const = a.const(value)
        if const is None:
            a.block(node, [lx], "Resize scales/sizes are not constant")
            return
        if "axes" not in node.attributes and index == scales_at and float(np.ravel(const)[lx.axis]) != 1.0:
            a.block(node, [lx], "Resize scales the channel axis")
            return
    keep_axis(node, a, lx)


@rule("Pad")
def pad(node: ir.Node, a: ChannelAnalysis) -> None:
    """Pad that adds no channels keeps the channel axis."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    pads = attr_ints(node, "pads") if a.opset < 11 else None
    if pads is None and len(node.inputs) > 1:
        const = a.const(node.inputs[1])
        pads = None if const is None else [int(v) for v in np.ravel(const)]
    axes = axes_input(node, a, 3)
    if pads is None or axes is False:
        a.block(node, [lx], "Pad amounts are not constant")
        return
    axes = [d % lx.rank for d in axes] if axes else list(range(lx.rank))
    if lx.axis in axes:
        i = axes.index(lx.axis)
        if pads[i] or pads[i + len(axes)]:
            a.block(node, [lx], "Pad adds channels")
            return
    keep_axis(node, a, lx)


@rule(*REDUCE)
def reduce(node: ir.Node, a: ChannelAnalysis) -> None:
    """Reductions over other axes keep the channel axis."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [attr_int(node, "axis", 0)]
    else:
        axes = axes_input(node, a, 1)
        if axes is False:
            a.block(node, [lx], f"{node.op_type} axes are not constant")
            return
    if not axes:
        if attr_int(node, "noop_with_empty_axes", 0):
            keep_axis(node, a, lx)
            return
        axes = list(range(lx.rank))
    axes = [d % lx.rank for d in axes]
    if lx.axis in axes:
        if a.allow_inexact and node.op_type in _NORM_STATISTICS and attr_int(node, "keepdims", 1):
            a.mark_inexact(lx)  # an RMSNorm/LayerNorm written out: its statistic now covers fewer channels
            return
        a.block(node, [lx], f"{node.op_type} reduces over the channel axis")
        return
    keepdims = attr_int(node, "keepdims", 1)
    keep_axis(node, a, lx, lx.axis if keepdims else lx.axis - sum(1 for d in axes if d < lx.axis))


@rule(*SOFTMAX)
def softmax(node: ir.Node, a: ChannelAnalysis) -> None:
    """Softmax over another axis keeps the channel axis."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    default = -1 if a.opset >= 13 else 1
    axis = attr_int(node, "axis", default) % lx.rank
    over = lx.axis == axis if a.opset >= 13 else lx.axis >= axis
    if over:
        a.block(node, [lx], f"{node.op_type} normalizes over the channel axis")
        return
    keep_axis(node, a, lx)


@rule("Shape", "Size")
def shape(node: ir.Node, a: ChannelAnalysis) -> None:
    """Reads the channel count at run time, so it follows the pruned width by itself.

    Reshape targets and Expand shapes built from it are checked entry by entry (``_shapevec``); the
    --verify comparison covers anything else.
    """
    del node, a
