"""One ONNX model averaging several members of the same architecture (FreeTickets' ensemble).

:func:`build_ensemble` puts every member's nodes and initializers in one graph (names prefixed
``member{i}/``) reading the shared inputs, and ends each output with a ``Mean`` over the members --
of their softmax over the last axis (``mean_softmax``, probabilities) or of the raw values
(``mean_logits``). :func:`check_ensemble` runs it and the members in onnxruntime and refuses a
mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune import _ort
from onnxprune.errors import OnnxPruneError

__all__ = ["COMBINES", "build_ensemble", "check_ensemble", "combine_outputs"]

#: How the members' outputs are averaged.
COMBINES = ("mean_softmax", "mean_logits")


def _take_graph(
    member: ir.Model, prefix: str, inputs: Sequence[ir.Value]
) -> tuple[list[ir.Node], list[ir.Value], list[ir.Value]]:
    """A clone of ``member``'s nodes, initializers and outputs, renamed with ``prefix``, reading ``inputs``."""
    graph = member.clone().graph
    initializers = list(graph.initializers.values())
    graph.initializers.clear()
    for value in initializers:
        value.name = prefix + (value.name or "")
    for old, new in zip(graph.inputs, inputs, strict=True):
        old.replace_all_uses_with(new)
    nodes = list(graph)
    for index, node in enumerate(nodes):
        node.name = prefix + (node.name or f"{node.op_type}_{index}")
        for value in node.outputs:
            value.name = prefix + (value.name or "")
    outputs = list(graph.outputs)
    graph.outputs.clear()
    graph.remove(nodes, safe=False)
    return nodes, initializers, outputs


def build_ensemble(members: Sequence[ir.Model], combine: str = "mean_softmax") -> ir.Model:
    """One model whose outputs are the members' outputs averaged (``combine``: one of :data:`COMBINES`).

    The members must share inputs and outputs (same architecture, e.g. sparse variants of one model);
    the inputs and output names stay those of the first member. The members are not modified.
    """
    if combine not in COMBINES:
        raise OnnxPruneError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    if not members:
        raise OnnxPruneError("an ensemble needs at least one member")
    first = members[0]
    signature = [(v.name, v.dtype) for v in first.graph.inputs], [v.name for v in first.graph.outputs]
    for member in members[1:]:
        if ([(v.name, v.dtype) for v in member.graph.inputs], [v.name for v in member.graph.outputs]) != signature:
            raise OnnxPruneError("ensemble members must have the same inputs and outputs")
    inputs = [ir.Value(name=v.name, shape=v.shape, type=v.type) for v in first.graph.inputs]
    nodes: list[ir.Node] = []
    initializers: list[ir.Value] = []
    member_outputs: list[list[ir.Value]] = []
    for index, member in enumerate(members):
        taken, inits, outputs = _take_graph(member, f"member{index}/", inputs)
        nodes += taken
        initializers += inits
        member_outputs.append(outputs)
    graph_outputs = []
    for position, original in enumerate(first.graph.outputs):
        parts = [outputs[position] for outputs in member_outputs]
        if combine == "mean_softmax":
            softmaxes = [ir.node("Softmax", [part], {"axis": -1}, name=f"{part.name}/softmax") for part in parts]
            nodes += softmaxes
            parts = [node.outputs[0] for node in softmaxes]
        mean = ir.node("Mean", parts, name=f"ensemble/{original.name}")
        mean.outputs[0].name = original.name
        mean.outputs[0].shape, mean.outputs[0].type = original.shape, original.type
        nodes.append(mean)
        graph_outputs.append(mean.outputs[0])
    graph = ir.Graph(
        inputs,
        graph_outputs,
        nodes=nodes,
        initializers=initializers,
        opset_imports=dict(first.opset_imports),
        name=f"{first.graph.name or 'model'}_ensemble",
    )
    return ir.Model(
        graph,
        ir_version=first.ir_version,
        producer_name="onnxprune",
        functions=list(first.functions.values()),
    )


def combine_outputs(outputs: Sequence[np.ndarray], combine: str) -> np.ndarray:
    """What the ensemble computes from the members' outputs, in numpy."""
    if combine == "mean_softmax":
        shifted = [np.exp(o - o.max(axis=-1, keepdims=True)) for o in outputs]
        outputs = [s / s.sum(axis=-1, keepdims=True) for s in shifted]
    return np.mean(np.stack(outputs), axis=0)


def check_ensemble(
    ensemble: ir.Model,
    members: Sequence[ir.Model],
    inputs: Mapping[str, np.ndarray],
    combine: str,
    *,
    tolerance: float = 1e-5,
) -> float:
    """The largest difference, in onnxruntime on ``inputs``, between the ensemble and its members' combination.

    A difference above ``tolerance`` is an error.
    """
    expected = [_ort.session(m, what="ensemble member").run(None, dict(inputs)) for m in members]
    got = _ort.session(ensemble, what="ensemble model").run(None, dict(inputs))
    worst = 0.0
    for position, value in enumerate(got):
        want = combine_outputs([np.asarray(e[position], np.float64) for e in expected], combine)
        worst = max(worst, float(np.max(np.abs(np.asarray(value, np.float64) - want), initial=0.0)))
    if not worst <= tolerance:
        raise OnnxPruneError(f"the ensemble model differs from its members' {combine} by {worst:.3g}")
    return worst
