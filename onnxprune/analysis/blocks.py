"""Residual blocks: ``y = x + f(x)`` whose branch ``f`` starts at the skip value ``x`` and nowhere else.

A block is an ``Add`` (or two-input ``Sum``) one of whose operands, the skip ``x``, is an ancestor of
the other, the branch output ``f(x)``. The branch is every node on a path from ``x`` to ``f(x)``;
its other inputs are constants or side inputs independent of ``x`` (an attention mask). Dropping
the block rewires the readers of ``y`` to ``x``; the branch then has no reader and is removed.
That works for post-norm transformers (``LN(x + f(x))`` becomes ``LN(x)``), pre-norm ones
(``x + f(LN(x))`` becomes ``x``) and residual CNNs with an identity skip.

A block cannot be dropped when a branch value has a reader outside the block, when its output
shape differs from the skip's (broadcasting), or when the skip is itself a projection (a ResNet
downsample: both operands share an ancestor but neither is the other's); each is reported with
its reason. Branches without a weighted op (``x + 0.044715·x³`` in a tanh GELU) are not blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import onnx_ir as ir
from onnx_ir.passes import common

from onnxprune.analysis.flops import node_macs
from onnxprune.analysis.weights import constant_behind

__all__ = ["Block", "Unit", "bypass", "find_blocks", "group_units"]

#: Ops whose presence makes a branch a block (it holds weights), and those that make it attention.
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "MultiHeadAttention"})
_ATTENTION = frozenset({"Softmax", "Attention", "MultiHeadAttention", "GroupQueryAttention"})
_CONV = frozenset({"Conv", "ConvTranspose"})
#: Ops that read only their input's shape: a dependency through them is no data path (a mask sized like x).
_SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclasses.dataclass(frozen=True)
class Block:
    """One residual block.

    Attributes:
        node: Name of the ``Add``/``Sum`` node (its output's name when the node has none).
        output: The value ``y`` the node computes.
        skip_index: Which input of the node is the skip ``x``.
        skip: The skip value's name.
        kind: ``attention``, ``ffn``, ``conv``, or ``broadcast`` (the skip's shape differs: never droppable).
        label: A readable name: ``layer 3 attention``, ``layer 3 ffn``, ``block 2``.
        layer: The transformer layer (or CNN block) index the label names.
        nodes: Number of nodes in the branch.
        params: Parameters used only by the branch (removed with it).
        macs: MACs of the branch at the shapes given.
        contains: Outputs of the blocks nested inside this one's branch.
        reason: Why the block cannot be dropped (``None``: it can).
    """

    node: str
    output: str
    skip_index: int
    skip: str
    kind: str
    label: str
    layer: int
    nodes: int
    params: int
    macs: int
    contains: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def droppable(self) -> bool:
        """Whether dropping the block is a valid rewrite."""
        return self.reason is None


@dataclasses.dataclass(frozen=True)
class Unit:
    """What is dropped at once: one block, or a transformer layer's blocks (attention and FFN)."""

    label: str
    blocks: tuple[Block, ...]

    @property
    def params(self) -> int:
        """Parameters removed with the unit."""
        return sum(b.params for b in self.blocks)

    @property
    def macs(self) -> int:
        """MACs removed with the unit."""
        return sum(b.macs for b in self.blocks)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The blocks' Add/Sum node names."""
        return tuple(b.node for b in self.blocks)

    def conflicts(self, other: Unit) -> bool:
        """Whether one unit's branch holds the other's block (nested residuals: drop only one)."""
        mine = {c for b in self.blocks for c in b.contains} | {b.output for b in self.blocks}
        theirs = {c for b in other.blocks for c in b.contains} | {b.output for b in other.blocks}
        return bool(mine & {b.output for b in other.blocks}) or bool(theirs & {b.output for b in self.blocks})


def _is_constant(value: ir.Value) -> bool:
    return value.is_initializer() or constant_behind(value) is not None


def _ancestors(value: ir.Value) -> set[ir.Node]:
    """Every node ``value`` is computed from (its producer included), not looking past shape reads."""
    found: set[ir.Node] = set()
    stack = [value.producer()]
    while stack:
        node = stack.pop()
        if node is None or node in found:
            continue
        found.add(node)
        if node.op_type not in _SHAPE_ONLY:
            stack.extend(v.producer() for v in node.inputs if v is not None)
    return found


def _between(skip: ir.Value, ancestors: set[ir.Node]) -> list[ir.Node]:
    """The nodes among ``ancestors`` reachable from ``skip``: the branch from ``skip`` to the ancestors' sink.

    A shape read of the skip itself (``Shape(x)`` sizing a mask for every layer) is not a path.
    """
    found: set[ir.Node] = set()
    stack = [use.node for use in skip.uses() if use.node in ancestors and use.node.op_type not in _SHAPE_ONLY]
    while stack:
        node = stack.pop()
        if node in found:
            continue
        found.add(node)
        stack.extend(use.node for out in node.outputs for use in out.uses() if use.node in ancestors)
    return list(found)


def _outside_reader(add: ir.Node, branch: set[ir.Node]) -> str | None:
    for node in branch:
        for out in node.outputs:
            if out.is_graph_output():
                return f"branch value '{out.name}' is a graph output"
            for use in out.uses():
                if use.node is not add and use.node not in branch and use.node.op_type not in _SHAPE_ONLY:
                    return f"branch value '{out.name}' is also read by '{use.node.name or use.node.op_type}'"
    return None


def _params(branch: set[ir.Node]) -> int:
    """Float constants read only by the branch: initializers and Constant nodes feeding it."""
    seen: set[int] = set()
    total = 0
    for node in branch:
        for value in node.inputs:
            if value is None or id(value) in seen or not all(u.node in branch for u in value.uses()):
                continue
            seen.add(id(value))
            tensor = constant_behind(value)
            if tensor is not None and tensor.dtype.is_floating_point():
                total += tensor.size
    return total


def _projection(a: ir.Value, b: ir.Value) -> str | None:
    """Why ``a + b`` is a residual with a projection skip (both from one value, each through weights)."""
    anc_a, anc_b = _ancestors(a), _ancestors(b)
    if not anc_a & anc_b:
        return None
    only_a, only_b = anc_a - anc_b, anc_b - anc_a
    weighted_a = [n for n in only_a if n.op_type in _WEIGHTED]
    weighted_b = [n for n in only_b if n.op_type in _WEIGHTED]
    if not weighted_a or not weighted_b:
        return None
    shortcut = weighted_a if len(only_a) <= len(only_b) else weighted_b
    return f"the skip is a projection ({shortcut[0].op_type} '{shortcut[0].name}'), not the identity"


@dataclasses.dataclass
class _Found:
    add: ir.Node
    skip_index: int
    branch: set[ir.Node]
    reason: str | None
    broadcast: bool = False


def _candidate(add: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> _Found | None:
    inputs = list(add.inputs)
    if len(inputs) != 2 or any(v is None or _is_constant(v) for v in inputs):
        return None
    for index in (0, 1):
        skip, other = inputs[index], inputs[1 - index]
        assert skip is not None and other is not None
        branch = set(_between(skip, _ancestors(other)))
        if not branch:
            continue
        if not any(n.op_type in _WEIGHTED for n in branch):
            return None  # arithmetic on x (x + c·x³), not a block with weights
        x_shape, y_shape = shapes.get(skip.name or ""), shapes.get(add.outputs[0].name or "")
        if x_shape is None or y_shape is None:
            reason: str | None = "the shapes of the skip and the sum are unknown"
        elif x_shape != y_shape:
            reason = f"shapes differ: skip {list(x_shape)} vs sum {list(y_shape)} (the skip is broadcast)"
            return _Found(add, index, branch, reason, broadcast=True)
        else:
            reason = _outside_reader(add, branch)
        return _Found(add, index, branch, reason)
    a, b = inputs
    assert a is not None and b is not None
    reason = _projection(a, b)
    return None if reason is None else _Found(add, 0, _ancestors(a) - _ancestors(b), reason)


def _kind(branch: Iterable[ir.Node]) -> str:
    ops = {n.op_type for n in branch}
    if ops & _ATTENTION:
        return "attention"
    return "conv" if ops & _CONV else "ffn"


def find_blocks(model: ir.Model, shapes: Mapping[str, tuple[int, ...]]) -> list[Block]:
    """The residual blocks of the main graph in topological order, droppable or with a reason.

    ``shapes`` (value name -> static shape, e.g. from :func:`onnxprune.analysis.shapes.complete_shapes`)
    checks that the sum has the skip's shape and counts the branch's MACs.
    """
    found = [
        f
        for node in model.graph
        if node.op_type in ("Add", "Sum") and node.domain in ("", "ai.onnx")
        for f in [_candidate(node, shapes)]
        if f is not None
    ]
    blocks: list[Block] = []
    layer, block_index, previous = -1, -1, ""
    for f in found:
        kind = _kind(f.branch)
        if f.broadcast:  # a mask or bias added to a block, not a residual stream: it names no layer
            kind, index, label = "broadcast", -1, f"broadcast {f.add.op_type}"
        elif kind == "conv":
            block_index += 1
            index, label = block_index, f"block {block_index}"
        else:
            if kind == "attention" or previous != "attention":
                layer += 1
            index, label = layer, f"layer {layer} {kind}"
        previous = kind if not f.broadcast else previous
        output = f.add.outputs[0]
        skip = f.add.inputs[f.skip_index]
        assert skip is not None
        contains = tuple(g.add.outputs[0].name or "" for g in found if g is not f and g.add in f.branch)
        blocks.append(
            Block(
                node=f.add.name or output.name or "",
                output=output.name or "",
                skip_index=f.skip_index,
                skip=skip.name or "",
                kind=kind,
                label=label,
                layer=index,
                nodes=len(f.branch),
                params=_params(f.branch),
                macs=sum(node_macs(n, shapes) or 0 for n in f.branch),
                contains=contains,
                reason=f.reason,
            )
        )
    return blocks


def group_units(blocks: Sequence[Block], unit: str) -> list[Unit]:
    """Droppable units: each droppable block (``block``), or each transformer layer whose blocks all are (``layer``).

    CNN blocks are their own layer.
    """
    droppable = [b for b in blocks if b.droppable]
    if unit == "block":
        return [Unit(b.label, (b,)) for b in droppable]
    layers: dict[tuple[str, int], list[Block]] = {}
    for b in blocks:
        if b.kind == "broadcast":
            continue
        layers.setdefault(("conv" if b.kind == "conv" else "layer", b.layer), []).append(b)
    units = []
    for (family, index), members in layers.items():
        if all(b.droppable for b in members):
            label = members[0].label if family == "conv" else f"layer {index}"
            units.append(Unit(label, tuple(members)))
    return units


def bypass(model: ir.Model, blocks: Iterable[Block]) -> int:
    """Drop ``blocks`` in place (readers of each sum read its skip), then remove the dead branches.

    Blocks are found by their output names, so they may come from an analysis of a clone. A sum that
    is a graph output becomes ``Identity(skip)`` under the same name. Returns the number of blocks dropped.
    """
    by_name = {v.name: v for node in model.graph for v in node.outputs if v.name}
    count = 0
    for block in blocks:
        y = by_name[block.output]
        add = y.producer()
        assert add is not None
        x = add.inputs[block.skip_index]
        assert x is not None
        if y.is_graph_output():
            identity = ir.node("Identity", [x])
            ir.convenience.replace_nodes_and_values(model.graph, add, [add], [identity], [y], [identity.outputs[0]])
            by_name[block.output] = identity.outputs[0]
        else:
            y.replace_all_uses_with(x)
        count += 1
    if count:
        common.RemoveUnusedNodesPass()(model)
    return count
