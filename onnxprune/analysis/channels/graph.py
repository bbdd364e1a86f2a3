"""Propagate channel layouts through a graph with the per-op rules and build the coupled groups."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels.couple import couple_atoms
from onnxprune.analysis.channels.groups import Blocker, Group, GroupSet
from onnxprune.analysis.channels.layout import Layout, Segment
from onnxprune.analysis.channels.rules import Rule, find_rule
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.weights import constant_behind

__all__ = ["ChannelAnalysis", "analyze_channels"]

logger = logging.getLogger(__name__)
_ONNX_DOMAINS = ("", "ai.onnx")


class ChannelAnalysis:
    """Layouts of every value that carries prunable channels, and the groups they form.

    Built by :func:`analyze_channels`; rules use the methods below while it runs.
    """

    def __init__(self, model: ir.Model, shapes: Mapping[str, tuple[int, ...]], allow_inexact: bool = False) -> None:
        self.model = model
        self.allow_inexact = allow_inexact
        #: graph outputs whose channels may be pruned (their width is restored afterwards), by name
        self.restored: dict[str, ir.Value] = {}
        self._inexact: set[int] = set()
        self.shapes = shapes
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        self.groups = GroupSet()
        self.layouts: dict[ir.Value, Layout] = {}
        self.nodes: list[ir.Node] = []  # nodes whose rule ran with some layout around them

    # -- queries used by rules ------------------------------------------------------------------
    def layout(self, value: ir.Value | None) -> Layout | None:
        return None if value is None else self.layouts.get(value)

    def shape(self, value: ir.Value | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if value.const_value is not None:
            return tuple(int(d) for d in value.const_value.shape)
        return self.shapes.get(value.name or "")

    def rank(self, value: ir.Value | None) -> int | None:
        shape = self.shape(value)
        if shape is not None:
            return len(shape)
        if value is not None and value.shape is not None:
            return len(value.shape)
        return None

    def const(self, value: ir.Value | None) -> np.ndarray | None:
        """The constant behind ``value`` (through Identity and Constant nodes and a Reshape of constants), else None.

        Paddle2ONNX adds conv biases as ``Add(Conv, Reshape(bias, [1, C, 1, 1]))`` with the Reshape left unfolded.
        """
        if value is None:
            return None
        tensor = constant_behind(value)
        if tensor is not None:
            return tensor.numpy()
        producer = value.producer()
        if producer is None or producer.op_type != "Reshape" or len(producer.inputs) < 2:
            return None
        data, target = self.const(producer.inputs[0]), self.const(producer.inputs[1])
        if data is None or target is None:
            return None
        dims = [int(d) for d in np.ravel(target)]
        if not producer.attributes.get_int("allowzero", 0):
            dims = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(dims)]
        try:
            return data.reshape(dims)
        except ValueError:
            return None

    # -- updates used by rules ------------------------------------------------------------------
    def set(self, value: ir.Value | None, layout: Layout | None) -> None:
        if value is not None and layout is not None:
            self.layouts[value] = layout

    def new_group(self, node: ir.Node, value: ir.Value, axis: int, units: int) -> None:
        """``value``'s ``axis`` holds ``units`` fresh channels produced by ``node``."""
        rank = self.rank(value)
        if rank is None:
            return
        gid = self.groups.new(units, node.name or node.op_type)
        self.set(value, Layout(axis % rank, rank, (Segment(gid, 0, units),)))

    def block(self, node: ir.Node, layouts: Iterable[Layout | None], reason: str) -> None:
        """Mark every group in ``layouts`` unprunable because of ``node``."""
        blocker = Blocker(node.name or "", node.op_type, reason)
        for layout in layouts:
            if layout is not None:
                for gid in layout.groups():
                    self.groups.block(gid, blocker)

    def block_inputs(self, node: ir.Node, reason: str) -> None:
        self.block(node, (self.layout(v) for v in node.inputs), reason)

    def mark_inexact(self, layout: Layout) -> None:
        """Pruning these groups changes an op's statistics (masked and shrunk models differ)."""
        self._inexact.update(layout.groups())

    def inexact(self, group: Group) -> bool:
        return any(self.groups.find(g) == group.id for g in self._inexact)

    def coarsen(self, node: ir.Node, layout: Layout, channels: int, reason: str, unit: str = "") -> bool:
        """Make every unit of ``layout`` a whole number of ``channels``-wide blocks, or block.

        Used where an op works on fixed-size channel blocks (conv groups, norm groups).
        """
        pos = 0
        ok = True
        for seg in layout.segments:
            if seg.group is not None:
                if pos % channels:
                    ok = False
                elif channels % seg.size == 0:
                    factor = channels // seg.size * seg.per
                    if seg.start % factor or seg.units % factor:
                        ok = False
                    else:
                        blocker = Blocker(node.name or "", node.op_type, reason)
                        self.groups.coarsen(seg.group, factor, blocker, unit)
                elif seg.size % channels:
                    ok = False
            pos += seg.channels
        if not ok:
            self.block(node, [layout], reason)
        return ok

    def couple(self, node: ir.Node, layouts: Sequence[Layout], what: str) -> Layout:
        """Channels of ``layouts`` meet elementwise in ``node``: merge their groups (or block)."""
        first = layouts[0]
        for other in layouts[1:]:
            if self._couple_pair(first, other):
                continue
            coupled = couple_atoms(self, first, other)
            if coupled is None:
                self.block(node, [first, other], f"{what} channel ranges that do not line up")
            else:
                first = coupled
        return first

    def _couple_pair(self, a: Layout, b: Layout) -> bool:
        if len(a.segments) != len(b.segments):
            return False
        pairs = list(zip(a.segments, b.segments, strict=True))
        if any(sa.channels != sb.channels for sa, sb in pairs):
            return False
        for sa, sb in pairs:
            if sa.group is None and sb.group is None:
                continue
            if sa.group is None or sb.group is None:
                return False
            ra, rb = self.groups.find(sa.group), self.groups.find(sb.group)
            if ra == rb:
                if sa.start != sb.start or sa.size != sb.size or sa.per != sb.per:
                    return False
                continue
            whole = (
                sa.start == 0
                and sb.start == 0
                and sa.units == self.groups[ra].units
                and sb.units == self.groups[rb].units
                and sa.units == sb.units
                and sa.per == sb.per
            )
            if not whole:
                return False
        for sa, sb in pairs:
            if sa.group is not None and sb.group is not None:
                self.groups.union(sa.group, sb.group)
        return True

    # -- results ------------------------------------------------------------------------------
    def prunable(self) -> list[Group]:
        return [g for g in self.groups.roots() if g.prunable]

    def unprunable(self) -> list[Group]:
        return [g for g in self.groups.roots() if not g.prunable]

    def values_of(self, group: Group) -> list[tuple[ir.Value, Layout]]:
        """Values carrying ``group``'s channels, in graph order."""
        return [
            (v, lay) for v, lay in self.layouts.items() if any(self.groups.find(g) == group.id for g in lay.groups())
        ]

    def positions(self, value: ir.Value, keep: Mapping[int, np.ndarray]) -> np.ndarray | None:
        """Kept channel positions along ``value``'s layout axis (``keep``: root id -> kept units)."""
        layout = self.layouts.get(value)
        if layout is None:
            return None
        return layout.positions(lambda gid: keep.get(self.groups.find(gid)))


def _subgraph_captures(node: ir.Node) -> Iterable[ir.Value]:
    """Outer-scope values that the subgraphs of ``node`` read."""
    for attr in node.attributes.values():
        graphs = []
        if attr.type == ir.AttributeType.GRAPH:
            graphs = [attr.as_graph()]
        elif attr.type == ir.AttributeType.GRAPHS:
            graphs = list(attr.as_graphs())
        for graph in graphs:
            inner = {id(v) for v in graph.inputs}
            for sub in graph.all_nodes():
                for value in sub.inputs:
                    if (
                        value is not None
                        and value.graph is not graph
                        and value.graph is not sub.graph
                        and id(value) not in inner
                    ):
                        yield value


def _check_surroundings(node: ir.Node, analysis: ChannelAnalysis) -> Rule | None:
    """The node's rule; block subgraph captures, and block and skip nodes without a rule."""
    captured = [analysis.layout(v) for v in _subgraph_captures(node)]
    if any(captured):
        analysis.block(node, captured, "channels are read inside a subgraph")
    found = find_rule(node)
    if found is None:
        op = node.op_type if node.domain in _ONNX_DOMAINS else f"custom-domain op {node.domain}::{node.op_type}"
        analysis.block_inputs(node, f"no channel rule for {op}")
    return found


def analyze_channels(
    model: ir.Model,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    allow_inexact: bool = False,
    restore_outputs: bool = False,
) -> ChannelAnalysis:
    """Build the coupled channel groups of ``model``'s main graph.

    Every group records why it cannot be pruned (an op without a rule, a graph output, a node
    inside a subgraph, a shape constant that cannot be rewritten, ...). With ``allow_inexact``,
    groups normalized by a LayerNormalization over their axis stay prunable (marked inexact); with
    ``restore_outputs`` too, such a group may reach a graph output on its last axis (a last hidden
    state; the caller maps the output back to its width, see ``passes/_restore.py``).
    """
    analysis = ChannelAnalysis(model, shapes if shapes is not None else complete_shapes(model), allow_inexact)
    for node in model.graph:
        found = _check_surroundings(node, analysis)
        if found is None:
            continue
        before = len(analysis.layouts)
        has_input = any(analysis.layout(v) is not None for v in node.inputs)
        found.propagate(node, analysis)
        if has_input or len(analysis.layouts) != before:
            analysis.nodes.append(node)
    for value in model.graph.outputs:
        layout = analysis.layout(value)
        normalized = layout is not None and all(analysis.inexact(analysis.groups[g]) for g in layout.groups())
        if layout is not None and restore_outputs and normalized and layout.axis == layout.rank - 1:
            analysis.restored[value.name or ""] = value  # a last hidden state; logits or features stay whole
        elif layout is not None:
            producer = value.producer()
            node = producer if producer is not None else ir.Node("", "Output", [])
            analysis.block(node, [layout], f"reaches graph output '{value.name}'")
    groups = analysis.groups.roots()
    logger.info("channel analysis: %d groups, %d prunable", len(groups), sum(1 for g in groups if g.prunable))
    return analysis
