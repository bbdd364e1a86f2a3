"""Ops that move, merge or cut the channel axis.

Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split and Slice. Shape constants that depend
on the channel count are rewritten on shrink.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels.layout import Layout, fixed
from onnxprune.analysis.channels.rules._common import attr_int, attr_ints, axes_input, keep_axis
from onnxprune.analysis.channels.rules._registry import rule

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis


def _reshape_target_axis(a: ChannelAnalysis, node: ir.Node, lx: Layout) -> tuple[int, int] | str:
    """(output axis of the channels, channels-per-channel factor), or why it cannot be followed."""
    in_shape, out_shape = a.shape(node.inputs[0]), a.shape(node.outputs[0])
    if in_shape is None or out_shape is None:
        return "Reshape with unknown static shapes"
    ax, width = lx.axis, in_shape[lx.axis]
    if len(out_shape) > ax and out_shape[:ax] == in_shape[:ax] and out_shape[ax] % width == 0:
        inner = out_shape[ax] // width
        if math.prod(in_shape[ax + 1 :]) % inner == 0:
            return ax, inner  # the channel axis stays, possibly merged with the axes behind it
    tail = len(in_shape) - ax
    if len(out_shape) >= tail and out_shape[len(out_shape) - tail :] == in_shape[ax:]:
        return len(out_shape) - tail, 1  # only the axes in front of the channels change
    return "Reshape splits or reorders the channel axis (e.g. channel shuffle, attention heads)"


def _reshape_slice(node: ir.Node, ex: Executor) -> None:
    y = node.outputs[0]
    layout = ex.analysis.layout(y)
    target = ex.analysis.const(node.inputs[1])
    if layout is None or target is None or not ex.changed(y):
        return
    if target[layout.axis] > 0:
        new = np.array(target, dtype=np.int64)
        new[layout.axis] = len(ex.kept(y))  # type: ignore[arg-type]
        ex.set_input(node, 1, new)


@rule("Reshape", slice=_reshape_slice)
def reshape(node: ir.Node, a: ChannelAnalysis) -> None:
    """Reshape keeping the channel axis (possibly merged with the axes behind it, or moved)."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    if a.const(node.inputs[1]) is None:
        a.block(node, [lx], "Reshape with a computed (non-constant) shape")
        return
    found = _reshape_target_axis(a, node, lx)
    if isinstance(found, str):
        a.block(node, [lx], found)
        return
    axis, inner = found
    keep_axis(node, a, lx.scaled(inner), axis)


@rule("Flatten")
def flatten(node: ir.Node, a: ChannelAnalysis) -> None:
    """Flatten starting at the channel axis: each channel becomes a block of features."""
    lx = a.layout(node.inputs[0])
    shape = a.shape(node.inputs[0])
    if lx is None:
        return
    if shape is None or attr_int(node, "axis", 1) % len(shape) != lx.axis:
        a.block(node, [lx], "Flatten does not start at the channel axis")
        return
    keep_axis(node, a, lx.scaled(math.prod(shape[lx.axis + 1 :])), 1)


@rule("Transpose")
def transpose(node: ir.Node, a: ChannelAnalysis) -> None:
    """Transpose moves the channel axis."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    perm = attr_ints(node, "perm") or list(range(lx.rank))[::-1]
    keep_axis(node, a, lx, perm.index(lx.axis))


@rule("Squeeze")
def squeeze(node: ir.Node, a: ChannelAnalysis) -> None:
    """Squeeze of other axes moves the channel axis."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    axes = axes_input(node, a, 1)
    shape = a.shape(node.inputs[0])
    if axes is False or (axes is None and shape is None):
        a.block(node, [lx], "Squeeze axes unknown")
        return
    axes = [d % lx.rank for d in axes] if axes else [i for i, d in enumerate(shape or ()) if d == 1]
    if lx.axis in axes:
        a.block(node, [lx], "Squeeze removes the channel axis")
        return
    keep_axis(node, a, lx, lx.axis - sum(1 for d in axes if d < lx.axis))


@rule("Unsqueeze")
def unsqueeze(node: ir.Node, a: ChannelAnalysis) -> None:
    """Unsqueeze moves the channel axis."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    axes = axes_input(node, a, 1)
    if not axes:
        a.block(node, [lx], "Unsqueeze axes unknown")
        return
    rank = lx.rank + len(axes)
    inserted = {d % rank for d in axes}
    kept = [i for i in range(rank) if i not in inserted]
    keep_axis(node, a, lx, kept[lx.axis])


@rule("Concat")
def concat(node: ir.Node, a: ChannelAnalysis) -> None:
    """Concat along the channels stacks segments; along another axis it couples the inputs."""
    carried = [a.layout(v) for v in node.inputs if a.layout(v) is not None]
    if not carried:
        return
    rank = carried[0].rank  # type: ignore[union-attr]
    axis = attr_int(node, "axis", 0) % rank
    if all(lay.axis == axis for lay in carried):  # type: ignore[union-attr]
        segments = []
        for value in node.inputs:
            lay, shape = a.layout(value), a.shape(value)
            if lay is not None:
                segments += lay.segments
            elif shape is not None:
                segments.append(fixed(shape[axis]))
            else:
                a.block(node, carried, f"Concat input '{value.name}' has an unknown shape")
                return
        a.set(node.outputs[0], Layout(axis, rank, tuple(segments)))
        return
    if len(carried) != len(node.inputs) or len({lay.axis for lay in carried}) > 1:  # type: ignore[union-attr]
        a.block(node, carried, "Concat of inputs whose channels do not line up")
        return
    keep_axis(node, a, a.couple(node, carried, "Concat along another axis joins"))  # type: ignore[arg-type]


def _split_sizes(node: ir.Node, a: ChannelAnalysis, width: int) -> list[int] | None:
    sizes = attr_ints(node, "split")
    if sizes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        const = a.const(node.inputs[1])
        return None if const is None else [int(v) for v in np.asarray(const).ravel()]
    if sizes is None:
        n = len(node.outputs)
        chunk = -(-width // n)
        sizes = [min(chunk, width - i * chunk) for i in range(n)]
    return sizes


def _split_slice(node: ir.Node, ex: Executor) -> None:
    x = node.inputs[0]
    layout = ex.analysis.layout(x)
    if layout is None or layout.axis != attr_int(node, "axis", 0) % layout.rank or not ex.changed(x):
        return
    sizes = [len(ex.kept(out)) for out in node.outputs]  # type: ignore[arg-type]
    if "split" in node.attributes:
        ex.set_attr(node, ir.AttrInt64s("split", sizes))
        return
    if "num_outputs" in node.attributes:
        del node.attributes["num_outputs"]
    ex.set_input(node, 1, np.array(sizes, dtype=np.int64))


@rule("Split", slice=_split_slice)
def split(node: ir.Node, a: ChannelAnalysis) -> None:
    """Split along the channels cuts segments (sizes are rewritten on shrink)."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    axis = attr_int(node, "axis", 0) % lx.rank
    if axis != lx.axis:
        for out in node.outputs:
            a.set(out, lx.moved(lx.axis, a.rank(out) or lx.rank))
        return
    sizes = _split_sizes(node, a, lx.width)
    if sizes is None or sum(sizes) != lx.width:
        a.block(node, [lx], "Split sizes are not constant")
        return
    begin = 0
    cuts = []
    for size in sizes:
        cut = lx.cut(begin, begin + size)
        if cut is None:
            a.block(node, [lx], "Split cuts through a block of channels")
            return
        cuts.append(cut)
        begin += size
    for out, segments in zip(node.outputs, cuts, strict=True):
        a.set(out, Layout(axis, lx.rank, segments))


def _slice_bounds(node: ir.Node, a: ChannelAnalysis, layout: Layout) -> tuple[int, int, int] | str | None:
    """(input position of the bounds, begin, end) on the channel axis; None if it is not sliced."""
    if a.opset < 10:
        return "Slice before opset 10 is not supported"
    consts = [a.const(v) if i < len(node.inputs) and (v := node.inputs[i]) is not None else None for i in range(1, 5)]
    starts, ends, axes, steps = consts
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None):
        return "Slice bounds are not constant"
    if len(node.inputs) > 4 and node.inputs[4] is not None and steps is None:
        return "Slice steps are not constant"
    axes_ = [int(v) % layout.rank for v in (axes if axes is not None else range(len(starts)))]
    if layout.axis not in axes_:
        return None
    i = axes_.index(layout.axis)
    if steps is not None and int(steps[i]) != 1:
        return "Slice with a step on the channel axis"
    width = layout.width
    begin, end = (int(v) for v in (starts[i], ends[i]))
    begin, end = (min(max(v + width if v < 0 else v, 0), width) for v in (begin, end))
    return i, begin, end


def _slice_slice(node: ir.Node, ex: Executor) -> None:
    x = node.inputs[0]
    layout = ex.analysis.layout(x)
    if layout is None or not ex.changed(x):
        return
    bounds = _slice_bounds(node, ex.analysis, layout)
    if not isinstance(bounds, tuple):
        return
    i, begin, _ = bounds
    new_begin = int(np.count_nonzero(ex.kept(x) < begin))  # type: ignore[operator]
    new_end = new_begin + len(ex.kept(node.outputs[0]))  # type: ignore[arg-type]
    for index, value in ((1, new_begin), (2, new_end)):
        array = np.array(ex.analysis.const(node.inputs[index]), dtype=np.int64)
        array[i] = value
        ex.set_input(node, index, array)


@rule("Slice", slice=_slice_slice)
def slice_(node: ir.Node, a: ChannelAnalysis) -> None:
    """Slice along the channels cuts segments (bounds are rewritten on shrink)."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    bounds = _slice_bounds(node, a, lx)
    if isinstance(bounds, str):
        a.block(node, [lx], bounds)
        return
    if bounds is None:
        keep_axis(node, a, lx)
        return
    _, begin, end = bounds
    cut = lx.cut(begin, end) if end > begin else ()
    if cut is None:
        a.block(node, [lx], "Slice cuts through a block of channels")
        return
    keep_axis(node, a, Layout(lx.axis, lx.rank, cut))
