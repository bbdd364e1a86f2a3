"""Normalizations: BatchNorm/InstanceNorm (per channel), GroupNorm (whole groups), LayerNorm."""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune.analysis.channels.rules._common import attr_int, keep_axis, nchw_input
from onnxprune.analysis.channels.rules._registry import rule

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis
    from onnxprune.analysis.channels.layout import Layout

__all__ = ["layer_norm", "layer_norm_slice", "normalized_over"]


def normalized_over(node: ir.Node, a: ChannelAnalysis, layout: Layout) -> None:
    """``node`` normalizes over ``layout``'s channel axis: pruning changes its statistics.

    Such groups are blocked, unless the caller accepts it (``allow_inexact``): then they are marked inexact.
    """
    if a.allow_inexact:
        a.mark_inexact(layout)
    else:
        a.block(node, [layout], f"{node.op_type} normalizes over the pruned axis (pruning changes its statistics)")


def _per_channel_slice(node: ir.Node, ex: Executor) -> None:
    y = node.outputs[0]
    if ex.analysis.layout(y) is None:
        return
    for i in range(1, len(node.inputs)):
        ex.param(node, i, 0, y, role="scale" if i == 1 else "norm")


@rule("BatchNormalization", "InstanceNormalization", slice=_per_channel_slice)
def per_channel_norm(node: ir.Node, a: ChannelAnalysis) -> None:
    """Per-channel norms keep the channel axis; their parameters follow it."""
    lx = nchw_input(node, a, "channels are not on the normalized channel axis")
    if lx is not None:
        keep_axis(node, a, lx)


def _group_norm_slice(node: ir.Node, ex: Executor) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if ex.analysis.layout(y) is None:
        return
    groups = attr_int(node, "num_groups", 1)
    per = ex.width(x) // groups
    scale = ex.analysis.shape(node.inputs[1])
    per_param = per if scale is not None and scale[0] == groups and groups != ex.width(x) else 1
    ex.param(node, 1, 0, y, role="scale", per=per_param)
    ex.param(node, 2, 0, y, role="norm", per=per_param)
    ex.set_attr(node, ir.AttrInt64("num_groups", len(ex.kept(x)) // per))  # type: ignore[arg-type]


@rule("GroupNormalization", slice=_group_norm_slice)
def group_norm(node: ir.Node, a: ChannelAnalysis) -> None:
    """Whole norm groups are removed together (the group count is rewritten)."""
    lx = nchw_input(node, a, "channels are not on GroupNormalization's channel axis")
    if lx is None:
        return
    groups = attr_int(node, "num_groups", 1)
    if a.coarsen(node, lx, lx.width // groups, f"GroupNormalization removes whole groups of {lx.width // groups}"):
        keep_axis(node, a, lx)


def layer_norm_slice(node: ir.Node, ex: Executor) -> None:
    """Scale (input 1) and bias (input 2, if any) follow the channels when they lie in the normalized axes."""
    y = node.outputs[0]
    layout = ex.analysis.layout(y)
    if layout is None:
        return
    start = attr_int(node, "axis", -1) % layout.rank
    if layout.axis >= start:
        for i in (1, 2):
            ex.param(node, i, layout.axis - start, y, role="scale" if i == 1 else "norm")


@rule("LayerNormalization", "RMSNormalization", slice=layer_norm_slice)
def layer_norm(node: ir.Node, a: ChannelAnalysis) -> None:
    """LayerNorm over other axes passes channels; over the channel axis it is inexact."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    start = attr_int(node, "axis", -1) % lx.rank
    if lx.axis >= start:
        normalized_over(node, a, lx)
    keep_axis(node, a, lx)
