"""Shape vectors computed in the graph (Reshape targets, Expand shapes): which entry comes from where.

Exporters build shape vectors as ``Concat`` of constants and dims read at run time
(``Shape → Gather/Slice → Unsqueeze``). :func:`entries` resolves each entry of such a vector to a
constant (which a shrink can rewrite in place) or to dim ``k`` of a value ``T`` read by ``Shape``
(which follows ``T`` by itself), so that channel rules need not refuse a computed shape.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels.rules._common import attr_int

if TYPE_CHECKING:
    from onnxprune.analysis.channels.graph import ChannelAnalysis

__all__ = ["Entry", "entries", "reads_channels", "single_use_path"]

_PASS_THROUGH = ("Unsqueeze", "Squeeze", "Cast", "Identity")
_MAX_DEPTH = 12


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of a shape vector.

    ``kind`` is ``const`` (input ``index`` of ``node`` holds it at ``offset``; ``value`` is its
    number), ``dim`` (dim ``dim`` of ``source`` read by a Shape op; when it alone is input ``index``
    of a Concat ``node``, that input can be replaced by a constant) or ``unknown``.
    """

    kind: str
    node: ir.Node | None = None
    index: int = 0
    offset: int = 0
    value: int = 0
    source: ir.Value | None = None
    dim: int = 0


def _length(a: ChannelAnalysis, value: ir.Value) -> int | None:
    shape = a.shape(value)
    if shape is None:
        return None
    return 1 if len(shape) == 0 else int(np.prod(shape))


def _shape_dims(a: ChannelAnalysis, node: ir.Node) -> list[Entry] | None:
    """The entries of ``Shape(T)`` (with its ``start``/``end``)."""
    source = node.inputs[0]
    rank = a.rank(source)
    if rank is None:
        return None
    start, end = attr_int(node, "start", 0), attr_int(node, "end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    return [Entry("dim", source=source, dim=k) for k in range(start, end)]


def _take(found: list[Entry], a: ChannelAnalysis, node: ir.Node) -> list[Entry] | None:
    """Entries picked from ``found`` by a Gather (constant indices) or a Slice (constant bounds, step 1)."""
    n = len(found)
    if node.op_type == "Gather":
        indices = a.const(node.inputs[1])
        if indices is None or attr_int(node, "axis", 0) != 0:
            return None
        return [found[int(i) % n] for i in np.ravel(indices)]
    bounds = [a.const(v) if i < len(node.inputs) and (v := node.inputs[i]) is not None else None for i in (1, 2, 3, 4)]
    starts, ends, axes, steps = bounds
    if starts is None or ends is None or (axes is not None and int(np.ravel(axes)[0]) != 0):
        return None
    if steps is not None and int(np.ravel(steps)[0]) != 1:
        return None
    begin, end = (int(np.ravel(v)[0]) for v in (starts, ends))
    begin, end = (min(max(v + n if v < 0 else v, 0), n) for v in (begin, end))
    return found[begin:end]


def _resolve(a: ChannelAnalysis, value: ir.Value, depth: int) -> list[Entry] | None:
    const = a.const(value)
    if const is not None:
        return None  # constants are handled by the caller, which knows the node input holding them
    producer = value.producer()
    if producer is None or depth > _MAX_DEPTH:
        return None
    op = producer.op_type
    if op == "Shape":
        return _shape_dims(a, producer)
    if op in _PASS_THROUGH or (op == "Reshape" and a.rank(value) == 1):
        return _vector(a, producer, 0, depth + 1)
    if op == "Where":
        return _expand_minus_one(a, producer, depth)
    if op in ("Gather", "Slice"):
        found = _vector(a, producer, 0, depth + 1)
        return None if found is None else _take(found, a, producer)
    if op == "Concat" and attr_int(producer, "axis", 0) in (0, -1):
        out: list[Entry] = []
        for index in range(len(producer.inputs)):
            part = _vector(a, producer, index, depth + 1)
            if part is None:
                return None
            if len(part) == 1 and part[0].kind != "const":  # one computed entry: foldable to a constant
                part = [dataclasses.replace(part[0], node=producer, index=index)]
            out += part
        return out
    return None


def _expand_minus_one(a: ChannelAnalysis, node: ir.Node, depth: int) -> list[Entry] | None:
    """``Where(Equal(Y, -1), 1, Y)``, torch's ``expand(-1)`` in TorchScript exports: Y with -1 read as 1."""
    cond = node.inputs[0].producer() if node.inputs[0] is not None else None
    if cond is None or cond.op_type != "Equal" or cond.inputs[0] is not node.inputs[2]:
        return None
    found = _vector(a, node, 2, depth + 1)
    if found is None:
        return None
    return [Entry("const", value=1) if e.kind == "const" and e.value == -1 else e for e in found]


def _vector(a: ChannelAnalysis, node: ir.Node, index: int, depth: int) -> list[Entry] | None:
    """Entries of input ``index`` of ``node``."""
    value = node.inputs[index]
    if value is None:
        return None
    const = a.const(value)
    if const is not None:
        flat = np.ravel(const)
        return [Entry("const", node, index, i, int(v)) for i, v in enumerate(flat)]
    found = _resolve(a, value, depth)
    if found is None:
        length = _length(a, value)
        return None if length is None else [Entry("unknown")] * length
    return found


def entries(a: ChannelAnalysis, node: ir.Node, index: int) -> list[Entry] | None:
    """The entries of the shape vector at input ``index`` of ``node``; None if its length is unknown."""
    return _vector(a, node, index, 0)


def reads_channels(a: ChannelAnalysis, value: ir.Value | None, depth: int = 0) -> bool:
    """Whether a Shape op behind ``value`` (up to a few ops back) may read a pruned dim.

    Dims picked by constant Gather/Slice are checked one by one (a head_dim read off a tensor whose
    heads are pruned is fine); any other read of a value that carries channels counts.
    """
    if value is None or depth > _MAX_DEPTH or a.const(value) is not None:
        return False
    producer = value.producer()
    if producer is None:
        return False
    if producer.op_type in ("Gather", "Slice", "Shape"):
        found = _resolve(a, value, depth)
        if found is not None and all(e.kind == "dim" for e in found):
            return any(_pruned_dim(a, e) for e in found)
    if producer.op_type in ("Shape", "Size"):
        return a.layout(producer.inputs[0]) is not None
    return any(reads_channels(a, v, depth + 1) for v in producer.inputs)


def _pruned_dim(a: ChannelAnalysis, entry: Entry) -> bool:
    layout = a.layout(entry.source)
    return layout is not None and layout.axis == entry.dim


def single_use_path(entry: Entry, consumer: ir.Node) -> bool:
    """Whether everything computed from ``entry.node`` ends in ``consumer`` (rewriting it changes nothing else)."""
    return entry.node is not None and (entry.node is consumer or _only_to(entry.node, consumer, 0))


def _only_to(node: ir.Node, consumer: ir.Node, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    for out in node.outputs:
        if out.is_graph_output():
            return False
        for use in out.uses():
            if use.node is not consumer and not _only_to(use.node, consumer, depth + 1):
                return False
    return True
