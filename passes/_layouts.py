"""Where a masked weight's output channels lie, read from the torch view's nodes (for in-loop methods).

Sparse-training methods see parameters by name (:class:`~onnxprune.passes._train.Masks`); the ones
that prune structures (Campfire's filters, Early-Bird's channels) also need the output-channel axis
of each weight, the BatchNormalization scale right after it (if any), and whether its output is a
graph output (channels a pruned model could not drop).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune.analysis.weights import _role

if TYPE_CHECKING:
    from onnxprune.torchview import TorchView

__all__ = ["Layout", "layouts"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """A masked weight's output-channel axis, BN scale after it, graph-output flag and weight-using node."""

    out_axis: int
    bn_scale: str | None
    feeds_output: bool
    node: ir.Node | None = None


def _consumers(nodes: Sequence[ir.Node]) -> dict[str, list[tuple[ir.Node, int]]]:
    uses: dict[str, list[tuple[ir.Node, int]]] = defaultdict(list)
    for node in nodes:
        for index, value in enumerate(node.inputs):
            if value is not None and value.name:
                uses[value.name].append((node, index))
    return uses


def _weight_node(name: str, rank: int, uses: dict[str, list[tuple[ir.Node, int]]]) -> tuple[ir.Node, int] | None:
    """The node using ``name`` (looking through Identity) as a weight operand, with the role's out axis."""
    for node, index in uses.get(name, ()):
        if node.op_type == "Identity" and node.outputs[0].name:
            found = _weight_node(node.outputs[0].name, rank, uses)
            if found is not None:
                return found
            continue
        role = _role(node, index, rank)
        if not isinstance(role, str):
            return node, role[1]
    return None


def layouts(view: TorchView, names: Sequence[str]) -> dict[str, Layout]:
    """The :class:`Layout` of each weight ``names`` (out axis 0 when no node uses it as a weight)."""
    uses = _consumers(view.nodes)
    params = view.named_tensors()
    found = {}
    for name in names:
        hit = _weight_node(name, params[name].dim(), uses)
        if hit is None:
            found[name] = Layout(0, None, False)
            continue
        node, axis = hit
        output = node.outputs[0]
        bn = next((n for n, i in uses.get(output.name or "", ()) if n.op_type == "BatchNormalization" and i == 0), None)
        scale = bn.inputs[1].name if bn is not None and bn.inputs[1] is not None else None
        after = bn.outputs[0] if bn is not None else output
        found[name] = Layout(
            axis, scale if scale in params else None, output.is_graph_output() or after.is_graph_output(), node
        )
    return found
