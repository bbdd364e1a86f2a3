"""Executors for the rules' ``slice``: record the channel parameters, zero them, or slice them.

One ``slice`` function per op names the constant inputs and attributes that follow channels;
:class:`Recorder` lists them (importance, inspection), :class:`Masker` zeroes the removed channels'
weights in place (the masked reference model), :class:`Shrinker` removes them and rewrites shape
constants and attributes (the physically smaller model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels.graph import ChannelAnalysis
from onnxprune.analysis.channels.rules import find_rule
from onnxprune.analysis.weights import constant_behind

__all__ = [
    "Executor",
    "Masker",
    "ParamUse",
    "Recorder",
    "Shrinker",
    "mask",
    "masked_values",
    "replace_constant",
    "shrink",
]

#: roles of a channel parameter: producer weight rows (out), consumer weight columns (in), bias,
#: BN scale, other norm parameters, broadcast constants; the masked model zeroes the first three
_WEIGHT_ROLES = frozenset({"out", "in", "bias"})


@dataclasses.dataclass(frozen=True)
class ParamUse:
    """Constant input ``index`` of ``node`` follows the channels of ``by`` along ``axis``.

    Parameter index ``i`` belongs to channel positions ``i*per .. (i+1)*per`` of ``by``.
    """

    node: ir.Node
    index: int
    axis: int
    by: ir.Value
    role: str
    per: int = 1


def replace_constant(node: ir.Node, index: int, array: np.ndarray) -> None:
    """Give ``node`` its own constant ``array`` at input ``index`` (de-tying shared tensors).

    The old tensor is updated in place when this input is its only use; otherwise (a tensor
    shared with other nodes, an Identity alias, a Constant node) a new initializer is added.
    An absent optional input (a Conv or Gemm without bias) is added as a new initializer.
    """
    graph = node.graph
    assert graph is not None
    old = node.inputs[index] if index < len(node.inputs) else None
    old_tensor = constant_behind(old) if old is not None else None
    dtype = old_tensor.dtype if old_tensor is not None else ir.DataType.from_numpy(array.dtype)
    array = np.ascontiguousarray(array, dtype=dtype.numpy())
    if (
        old is not None
        and old.is_initializer()
        and len(old.uses()) == 1
        and not old.is_graph_input()
        and not old.is_graph_output()
    ):
        old.const_value = ir.Tensor(array, dtype=dtype, name=old.name)
        old.shape = ir.Shape(array.shape)
        return
    base = (old.name if old is not None and old.name else f"{node.name}_{index}") + f"__{node.name}"
    name, n = base, 1
    while name in graph.initializers:
        name, n = f"{base}_{n}", n + 1
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(dtype))
    value.const_value = ir.Tensor(array, dtype=dtype, name=name)
    graph.register_initializer(value)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)


class Executor:
    """What a rule's ``slice`` can ask for; the base class only records nothing."""

    def __init__(self, analysis: ChannelAnalysis, keep: Mapping[int, np.ndarray] | None = None) -> None:
        self.analysis = analysis
        self.keep = dict(keep or {})

    def kept(self, value: ir.Value) -> np.ndarray | None:
        """Kept channel positions of ``value`` (all of them when nothing is removed)."""
        return self.analysis.positions(value, self.keep)

    def width(self, value: ir.Value) -> int:
        layout = self.analysis.layout(value)
        assert layout is not None
        return layout.width

    def changed(self, value: ir.Value) -> bool:
        kept = self.kept(value)
        return kept is not None and len(kept) != self.width(value)

    def param(self, node: ir.Node, index: int, axis: int, by: ir.Value, *, role: str, per: int = 1) -> None:
        """Constant input ``index`` of ``node`` follows ``by``'s channels along ``axis``."""

    def set_input(self, node: ir.Node, index: int, array: np.ndarray) -> None:
        """Rewrite a shape-like constant input (split sizes, reshape target, slice bounds)."""

    def set_attr(self, node: ir.Node, attr: ir.Attr) -> None:
        """Rewrite an attribute (conv group count, norm group count)."""

    def own_producer(self, node: ir.Node, index: int) -> ir.Node:
        """The node computing input ``index`` of ``node``, made ``node``'s own when changes will be written."""
        producer = node.inputs[index].producer()  # type: ignore[union-attr]
        assert producer is not None
        return producer

    def _removal(self, node: ir.Node, index: int, by: ir.Value, per: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(current values of the constant input, kept indices) when ``by`` loses channels."""
        array = self.analysis.const(node.inputs[index]) if index < len(node.inputs) else None
        if array is None or not self.changed(by):
            return None
        return array, _indices(self.kept(by), per)  # type: ignore[arg-type]


class Recorder(Executor):
    """Collects every :class:`ParamUse` (nothing is changed)."""

    def __init__(self, analysis: ChannelAnalysis) -> None:
        super().__init__(analysis)
        self.uses: list[ParamUse] = []

    def param(self, node: ir.Node, index: int, axis: int, by: ir.Value, *, role: str, per: int = 1) -> None:
        if index < len(node.inputs) and node.inputs[index] is not None:
            self.uses.append(ParamUse(node, index, axis, by, role, per))


def _indices(positions: np.ndarray, per: int) -> np.ndarray:
    return positions if per == 1 else np.unique(positions // per)


class Masker(Executor):
    """Zeroes the removed channels of producer weights, biases and consumer weights in place."""

    def zeroed(self, node: ir.Node, index: int, axis: int, by: ir.Value, role: str, per: int) -> np.ndarray | None:
        """The constant input with the removed channels zeroed (``None``: unchanged)."""
        found = self._removal(node, index, by, per) if role in _WEIGHT_ROLES else None
        if found is None:
            return None
        array, kept = np.array(found[0]), found[1]
        removed = np.setdiff1d(np.arange(array.shape[axis]), kept)
        index_ = [slice(None)] * array.ndim
        index_[axis] = removed
        array[tuple(index_)] = 0
        return array

    def param(self, node: ir.Node, index: int, axis: int, by: ir.Value, *, role: str, per: int = 1) -> None:
        array = self.zeroed(node, index, axis, by, role, per)
        if array is not None:
            replace_constant(node, index, array)


class _MaskRecorder(Masker):
    """Collects the masked values by input name instead of writing them (several uses accumulate)."""

    def __init__(self, analysis: ChannelAnalysis, keep: Mapping[int, np.ndarray]) -> None:
        super().__init__(analysis, keep)
        self.values: dict[str, np.ndarray] = {}

    def param(self, node: ir.Node, index: int, axis: int, by: ir.Value, *, role: str, per: int = 1) -> None:
        array = self.zeroed(node, index, axis, by, role, per)
        name = node.inputs[index].name if array is not None else None
        if array is not None and name:
            previous = self.values.get(name)
            self.values[name] = array if previous is None else np.where(array == 0, array, previous)


class Shrinker(Executor):
    """Removes the channels: slices constants, rewrites shape constants and attributes."""

    def param(self, node: ir.Node, index: int, axis: int, by: ir.Value, *, role: str, per: int = 1) -> None:
        del role
        found = self._removal(node, index, by, per)
        if found is not None:
            replace_constant(node, index, np.take(found[0], found[1], axis=axis))

    def set_input(self, node: ir.Node, index: int, array: np.ndarray) -> None:
        replace_constant(node, index, array)

    def set_attr(self, node: ir.Node, attr: ir.Attr) -> None:
        node.attributes[attr.name] = attr

    def own_producer(self, node: ir.Node, index: int) -> ir.Node:
        """A copy of the producer (a shape vector's Concat shared with other nodes) that only ``node`` reads."""
        value = node.inputs[index]
        producer = super().own_producer(node, index)
        if len(value.uses()) == 1:  # type: ignore[union-attr]
            return producer
        copy = ir.Node(
            producer.domain,
            producer.op_type,
            list(producer.inputs),
            attributes=list(producer.attributes.values()),
            name=f"{producer.name}__{node.name}",
        )
        copy.outputs[0].name = f"{value.name}__{node.name}"  # type: ignore[union-attr]
        node.graph.insert_before(node, copy)  # type: ignore[union-attr]
        node.replace_input_with(index, copy.outputs[0])
        return copy


def _run(executor: Executor) -> None:
    for node in executor.analysis.nodes:
        found = find_rule(node)
        slice_ = found.slice if found is not None else None
        if slice_ is not None:
            slice_(node, executor)


def record(analysis: ChannelAnalysis) -> list[ParamUse]:
    """Every channel parameter of the analysed graph."""
    recorder = Recorder(analysis)
    _run(recorder)
    return recorder.uses


def mask(analysis: ChannelAnalysis, keep: Mapping[int, np.ndarray]) -> None:
    """Zero the removed channels' weights in the analysed model (shapes unchanged)."""
    _run(Masker(analysis, keep))


def masked_values(analysis: ChannelAnalysis, keep: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
    """What :func:`mask` would write, by input name, leaving the model unchanged.

    A tensor read by several nodes gets the zeros of all of them (it is not de-tied).
    """
    recorder = _MaskRecorder(analysis, keep)
    _run(recorder)
    return recorder.values


def shrink(analysis: ChannelAnalysis, keep: Mapping[int, np.ndarray]) -> None:
    """Physically remove the channels ``keep`` leaves out.

    Shapes of intermediate values are cleared (they are re-inferred by whoever needs them). Keeping
    every unit leaves the model untouched, shapes included.
    """
    if all(len(kept) >= analysis.groups[gid].units for gid, kept in keep.items()):
        return
    _run(Shrinker(analysis, keep))
    graph = analysis.model.graph
    for node in graph:
        for out in node.outputs:
            if not out.is_graph_output():
                out.shape = None
