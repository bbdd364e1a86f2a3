"""A channel group's own subgraph, cut out of the model so that its latency can be timed alone.

The subgraph holds every node that reads or writes the group's channels (producers, consumers and
the element-wise ops between them), plus the nodes that compute their non-float inputs (shape
arithmetic) and constants. Float values coming from outside become graph inputs (random data of
their static shape); values read outside become graph outputs, so onnxruntime removes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune.analysis.channels import ChannelAnalysis, analyze_channels, shrink

__all__ = ["GroupSubgraph", "cut_group", "feed_for", "random_feed", "shrunk_to"]

_FLOATS = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})


@dataclasses.dataclass(frozen=True)
class GroupSubgraph:
    """The cut-out model of one group, the group's producer and unit count, its inputs' and values' shapes."""

    model: ir.Model
    producer: str
    units: int
    block: int
    input_shapes: dict[str, tuple[int, ...]]
    shapes: dict[str, tuple[int, ...]]


#: ops whose (first) output is an integer tensor whatever their inputs
_INT_OUTPUTS = frozenset({"Shape", "Size", "NonZero", "ArgMax", "ArgMin", "NonMaxSuppression"})


def _dtypes(graph: ir.Graph) -> dict[int, ir.DataType | None]:
    """Element type of every value, by id: the declared one, else propagated in graph order.

    Exports often declare no intermediate types; a value then takes the type of its node's first
    typed input, except the integer results of ``Shape``-like ops, ``Cast`` and ``Constant``.
    """
    dtype: dict[int, ir.DataType | None] = {}
    for value in [*graph.inputs, *graph.initializers.values()]:
        dtype[id(value)] = value.dtype
    for node in graph:
        known = next(
            (dtype.get(id(v)) or v.dtype for v in node.inputs if v is not None and (dtype.get(id(v)) or v.dtype)), None
        )
        if node.op_type in _INT_OUTPUTS:
            known = ir.DataType.INT64
        elif node.op_type == "Cast" and "to" in node.attributes:
            known = ir.DataType(node.attributes["to"].as_int())
        elif node.op_type == "Constant" and "value" in node.attributes:
            known = node.attributes["value"].as_tensor().dtype
        for i, out in enumerate(node.outputs):
            dtype[id(out)] = out.dtype or (known if i == 0 or node.op_type not in ("TopK",) else ir.DataType.INT64)
    return dtype


def _with_inputs(chosen: set[int], nodes: list[ir.Node], dtypes: Mapping[int, ir.DataType | None]) -> set[int]:
    """``chosen`` plus what computes their non-float inputs (shapes, indices) and their constants."""
    position = {id(n): i for i, n in enumerate(nodes)}
    chosen = set(chosen)
    pending = list(chosen)
    while pending:
        for value in nodes[pending.pop()].inputs:
            producer = value.producer() if value is not None else None
            if producer is None or id(producer) not in position:
                continue
            index = position[id(producer)]
            if index not in chosen and (dtypes.get(id(value)) not in _FLOATS or producer.op_type == "Constant"):
                chosen.add(index)
                pending.append(index)
    return chosen


def _members(analysis: ChannelAnalysis, gid: int, nodes: list[ir.Node]) -> set[int]:
    """Indices (in ``nodes``) of the nodes that read or write the group, one ring of neighbours, and their needs.

    The ring (the producers of the group's float inputs, the readers of its results) keeps the
    layout changes onnxruntime makes at the group's borders inside the timing: an unaligned width
    that takes the group off the blocked (NCHWc) kernels costs reorders there.
    """
    position = {id(n): i for i, n in enumerate(nodes)}
    dtypes = _dtypes(analysis.model.graph)
    core: set[int] = set()
    for value, _ in analysis.values_of(analysis.groups[gid]):
        producer = value.producer()
        if producer is not None and id(producer) in position:
            core.add(position[id(producer)])
        for node, _ in value.uses():
            if id(node) in position:
                core.add(position[id(node)])
    core = _with_inputs(core, nodes, dtypes)
    ring = set()
    for index in core:
        for value in nodes[index].inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and id(producer) in position and dtypes.get(id(value)) in _FLOATS:
                ring.add(position[id(producer)])
        for value in nodes[index].outputs:
            ring.update(position[id(user)] for user, _ in value.uses() if id(user) in position)
    return _with_inputs(core | ring, nodes, dtypes)


def cut_group(model: ir.Model, analysis: ChannelAnalysis, gid: int) -> GroupSubgraph:
    """The subgraph of group ``gid`` of ``analysis`` (an analysis of ``model``) as a model of its own.

    ``model`` is not changed: the cut is made on a clone (which shares the weights).
    """
    group = analysis.groups[gid]
    chosen = _members(analysis, gid, list(model.graph))
    copy = model.clone()
    graph = copy.graph
    dtypes = _dtypes(graph)
    nodes = list(graph)
    inside = {id(nodes[i]) for i in chosen}
    shapes = analysis.shapes
    outputs: list[ir.Value] = []
    originals = {id(v) for v in graph.outputs}
    for i in sorted(chosen):
        for value in nodes[i].outputs:
            if id(value) in originals or any(id(user) not in inside for user, _ in value.uses()):
                if value.type is None and dtypes.get(id(value)) is not None:
                    value.type = ir.TensorType(dtypes[id(value)])
                outputs.append(value)
    boundary: dict[int, ir.Value] = {}
    input_shapes: dict[str, tuple[int, ...]] = {}
    for i in sorted(chosen):
        node = nodes[i]
        for index, value in enumerate(node.inputs):
            if value is None or value.is_initializer() or value.const_value is not None:
                continue
            producer = value.producer()
            if producer is not None and id(producer) in inside:
                continue
            if id(value) not in boundary:
                shape = tuple(int(d) for d in shapes[value.name]) if value.name in shapes else None
                if shape is None:
                    raise ValueError(f"no static shape for '{value.name}'")
                dtype = value.dtype or dtypes.get(id(value)) or ir.DataType.FLOAT
                fresh = ir.Value(name=value.name, shape=ir.Shape(shape), type=ir.TensorType(dtype))
                boundary[id(value)] = fresh
                input_shapes[value.name or ""] = shape
            node.replace_input_with(index, boundary[id(value)])
    graph.outputs.clear()
    graph.outputs.extend(outputs)
    graph.inputs.clear()
    graph.inputs.extend(boundary.values())
    graph.remove([n for n in nodes if id(n) not in inside], safe=False)
    common_passes.RemoveUnusedNodesPass()(copy)
    for name in [n for n, v in graph.initializers.items() if not v.uses() and v not in graph.outputs]:
        graph.initializers.pop(name)
    names = {v.name for node in copy.graph for v in (*node.inputs, *node.outputs) if v is not None}
    own = {name: tuple(shape) for name, shape in shapes.items() if name in names}
    return GroupSubgraph(copy, group.producers[0], group.units, group.block, input_shapes, own)


def shrunk_to(sub: GroupSubgraph, width: int) -> ir.Model:
    """A copy of the subgraph whose group keeps its first ``width`` units (a multiple of the block)."""
    copy = sub.model.clone()
    if width >= sub.units:
        return copy
    analysis = analyze_channels(copy, sub.shapes)
    found = [g for g in analysis.prunable() if sub.producer in g.producers and g.units == sub.units]
    if not found:
        raise ValueError(f"group of '{sub.producer}' is not prunable in its own subgraph")
    shrink(analysis, {found[0].id: np.arange(width)})
    return copy


def random_feed(
    inputs: Sequence[ir.Value], shapes: Mapping[str, tuple[int, ...]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Random values for ``inputs`` at ``shapes``: standard-normal floats, zeros for integers (indices, ids)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for value in inputs:
        shape = shapes[value.name or ""]
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)
        if np.issubdtype(dtype, np.floating):
            feed[value.name or ""] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[value.name or ""] = np.zeros(shape, dtype=dtype)
    return feed


def feed_for(sub: GroupSubgraph, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the subgraph (see :func:`random_feed`)."""
    return random_feed(sub.model.graph.inputs, sub.input_shapes, seed)
