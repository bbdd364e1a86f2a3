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
from onnxprune.analysis.channels.rules._shapevec import Entry, entries, reads_channels, single_use_path

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis


def _reshape_target_axis(a: ChannelAnalysis, node: ir.Node, lx: Layout) -> tuple[Layout, int] | str:
    """The output layout and how many channels make one output channel, or why it cannot be followed."""
    in_shape, out_shape = a.shape(node.inputs[0]), a.shape(node.outputs[0])
    if in_shape is None or out_shape is None:
        return "Reshape with unknown static shapes"
    ax, width = lx.axis, in_shape[lx.axis]
    rank = len(out_shape)
    if len(out_shape) > ax and out_shape[:ax] == in_shape[:ax] and out_shape[ax] % width == 0:
        inner = out_shape[ax] // width
        if math.prod(in_shape[ax + 1 :]) % inner == 0:
            return lx.scaled(inner).moved(ax, rank), 1  # the channel axis stays, maybe merged with axes behind
    tail = len(in_shape) - ax
    if len(out_shape) >= tail and out_shape[len(out_shape) - tail :] == in_shape[ax:]:
        return lx.moved(len(out_shape) - tail, rank), 1  # only the axes in front of the channels change
    if len(out_shape) > ax + 1 and out_shape[:ax] == in_shape[:ax] and 1 < out_shape[ax] < width:
        if width % out_shape[ax] == 0:  # the axis splits: e.g. [B, S, heads*head_dim] -> [B, S, heads, head_dim]
            return lx.scaled(1, width // out_shape[ax]).moved(ax, rank), width // out_shape[ax]
    return "Reshape splits or reorders the channel axis (e.g. channel shuffle)"


def same_channels(a: ChannelAnalysis, one: Layout | None, other: Layout) -> bool:
    """Whether two layouts keep the same channels whatever is pruned."""
    if one is None or len(one.segments) != len(other.segments):
        return False
    for x, y in zip(one.segments, other.segments, strict=True):
        gx = None if x.group is None else a.groups.find(x.group)
        gy = None if y.group is None else a.groups.find(y.group)
        if (gx, x.start, x.units, x.channels) != (gy, y.start, y.units, y.channels):
            return False
    return True


def _fold(a: ChannelAnalysis, node: ir.Node, entry: Entry, axis: int, out: Layout) -> bool | None:
    """Whether ``entry`` (at ``axis`` of a shape vector) must become a constant on shrink; None: impossible.

    A dim read off a value whose channels sit on that dim changes when they are pruned: the entry is
    folded to the constant it must be (the kept count on the channel axis, the original width elsewhere).
    """
    source = a.layout(entry.source) if entry.kind == "dim" else None
    if entry.kind == "unknown":  # computed (e.g. kv_heads * n_rep): on the channel axis it is the static width
        return (True if _rewritable(entry, node) else None) if axis == out.axis else False
    if entry.kind == "const":
        return False if axis != out.axis or entry.node is node or _rewritable(entry, node) else None
    if axis == out.axis and source is not None and source.axis == entry.dim and same_channels(a, source, out):
        return False  # read off a value with the same channels: follows them by itself
    if source is None or source.axis != entry.dim:
        return None if axis == out.axis else False
    return True if _rewritable(entry, node) else None


def _rewritable(entry: Entry, node: ir.Node) -> bool:
    """Whether ``entry``'s holder feeds only ``node``, or is a Concat read directly by it (then copied for it)."""
    direct = entry.node is not None and entry.node.op_type == "Concat" and entry.node.outputs[0] in node.inputs
    return direct or single_use_path(entry, node)


def _holder(ex: Executor, node: ir.Node, index: int, entry: Entry) -> ir.Node:
    """The node whose input holds ``entry``: a Concat shared with other nodes is copied for ``node`` first."""
    assert entry.node is not None
    if entry.node is not node and node.inputs[index] is entry.node.outputs[0]:
        return ex.own_producer(node, index)
    return entry.node


def check_shape_input(a: ChannelAnalysis, node: ir.Node, index: int, out: Layout, what: str) -> str | None:
    """Why the shape vector at input ``index`` cannot follow ``out`` when channels go, else None.

    Its entry on the channel axis must be a constant (rewritten on shrink), read off a value with the
    same channels, or foldable to a constant; dims read off pruned values elsewhere are folded too.
    """
    found = entries(a, node, index)
    if found is None or len(found) != out.rank:
        return f"{what} of unknown length"
    for axis, entry in enumerate(found):
        if _fold(a, node, entry, axis, out) is None:
            where = "the channel count" if axis == out.axis else f"axis {axis} from a pruned shape"
            return f"{what} computes {where}"
    for axis, entry in enumerate(found):
        if entry.kind != "unknown" or axis == out.axis:
            continue
        own = entry.node.inputs[entry.index] if entry.node is not None else node.inputs[index]
        if reads_channels(a, own):
            return f"{what} computes axis {axis} from a pruned shape"
    return None


def rewrite_shape_input(ex: Executor, node: ir.Node, index: int, value: ir.Value) -> None:
    """Rewrite the shape vector at input ``index`` for ``value``'s kept channels (constants and folded dims)."""
    a = ex.analysis
    layout = a.layout(value)
    found = entries(a, node, index)
    if layout is None or found is None or len(found) != layout.rank:
        return
    for axis, entry in enumerate(found):
        fold = _fold(a, node, entry, axis, layout) and (
            ex.changed(value) or (entry.kind == "dim" and ex.changed(entry.source))  # type: ignore[arg-type]
        )
        if fold and entry.node is not None:
            width = len(ex.kept(value)) if axis == layout.axis else a.layout(entry.source).width  # type: ignore[arg-type,union-attr]
            ex.set_input(_holder(ex, node, index, entry), entry.index, np.array([width], dtype=np.int64))
        elif axis == layout.axis and entry.kind == "const" and entry.value > 1 and entry.node is not None:
            if ex.changed(value):  # -1, 0 and 1 (Expand's broadcast) follow the data by themselves
                array = np.array(a.const(entry.node.inputs[entry.index]), dtype=np.int64)
                flat = array.reshape(-1)
                flat[entry.offset] = len(ex.kept(value))  # type: ignore[arg-type]
                ex.set_input(_holder(ex, node, index, entry), entry.index, flat.reshape(array.shape))


def _shape_input_slice(node: ir.Node, ex: Executor) -> None:
    rewrite_shape_input(ex, node, 1, node.outputs[0])


@rule("Reshape", slice=_shape_input_slice)
def reshape(node: ir.Node, a: ChannelAnalysis) -> None:
    """Reshape keeping the channel axis (merged with axes behind it, moved, or split into heads)."""
    lx = a.layout(node.inputs[0])
    if lx is None:
        return
    found = _reshape_target_axis(a, node, lx)
    if isinstance(found, str):
        a.block(node, [lx], found)
        return
    out, divide = found
    refusal = check_shape_input(a, node, 1, out, "Reshape target")
    if refusal is not None:
        a.block(node, [lx], refusal)
        return
    reason = f"Reshape splits the channel axis into blocks of {divide}"
    if divide > 1 and not a.coarsen(node, lx, divide, reason, unit="head"):
        return
    a.set(node.outputs[0], out)


@rule("Expand", slice=_shape_input_slice)
def expand(node: ir.Node, a: ChannelAnalysis) -> None:
    """Expand (broadcast) keeps the channel axis; its shape's entry there is 1, the width or follows it."""
    lx = a.layout(node.inputs[0])
    rank = a.rank(node.outputs[0])
    if lx is None:
        return
    if rank is None:
        a.block(node, [lx], "Expand of unknown rank")
        return
    out = lx.moved(lx.axis + rank - lx.rank, rank)
    refusal = check_shape_input(a, node, 1, out, "Expand shape")
    if refusal is not None:
        a.block(node, [lx], refusal)
        return
    a.set(node.outputs[0], out)


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
    if len(node.inputs) > 3 and node.inputs[3] is not None and axes is None:
        return "Slice axes are not constant"
    count = a.shape(node.inputs[1])
    if axes is None and count is None:
        return "Slice bounds of unknown length"
    axes_ = [int(v) % layout.rank for v in (axes if axes is not None else range(int(np.prod(count))))]  # type: ignore[arg-type]
    if layout.axis not in axes_:  # computed bounds on other axes (rotate_half's head_dim // 2) are fine
        if any(reads_channels(a, node.inputs[i]) for i in (1, 2, 4) if i < len(node.inputs)):
            return "Slice bounds are computed from a pruned shape"
        return None
    if starts is None or ends is None:
        return "Slice bounds are not constant"
    if len(node.inputs) > 4 and node.inputs[4] is not None and steps is None:
        return "Slice steps are not constant"
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
