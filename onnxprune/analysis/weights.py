"""Prunable-weight analysis: find every constant weight of Conv/ConvTranspose/Gemm/MatMul.

Weights come in several disguises: initializers, ``Constant`` nodes, ``Identity`` of an initializer
(exporters de-duplicate equal tensors), and one tensor shared by several nodes. Each tensor appears
here exactly once, with all of its uses, so a shared tensor is never pruned two ways. Tensors that
cannot be pruned safely are listed with the reason.
"""

from __future__ import annotations

import dataclasses
import mmap
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from onnxprune import _scratch

__all__ = [
    "FLOAT_TYPES",
    "drop_pages",
    "PrunableWeights",
    "Skipped",
    "Weight",
    "WeightUse",
    "constant_behind",
    "find_weights",
    "read_weight",
    "spill",
    "tensor_like",
    "write_tensor",
    "write_weight",
]

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})


@dataclasses.dataclass(frozen=True)
class WeightUse:
    """One node consuming the weight as its weight operand.

    ``activation`` is the data operand the weight multiplies, ``feature_axis`` the axis of
    ``activation`` that runs along the weight's input dimension.
    """

    node: ir.Node
    activation: ir.Value | None
    feature_axis: int
    in_subgraph: bool


@dataclasses.dataclass(frozen=True)
class Weight:
    """A prunable tensor and the layout of its axes.

    ``out_axis``/``in_axis`` index the output-neuron and input-feature (reduction) axes of the
    tensor. For Conv ``[out, in/g, kh, kw]`` they are 0 and 1; for MatMul ``[in, out]`` 1 and 0.
    """

    name: str
    holder: ir.Value | ir.Node
    shape: tuple[int, ...]
    op_type: str
    out_axis: int
    in_axis: int
    groups: int
    uses: tuple[WeightUse, ...]

    @property
    def node_names(self) -> tuple[str, ...]:
        """Names of the consuming nodes."""
        return tuple(use.node.name or use.node.op_type for use in self.uses)

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape))


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A constant weight-like tensor left alone, with the reason."""

    name: str
    node: str
    op_type: str
    reason: str


@dataclasses.dataclass(frozen=True)
class PrunableWeights:
    """Result of :func:`find_weights`: prunable weights in topological order, plus the skipped ones."""

    weights: tuple[Weight, ...]
    skipped: tuple[Skipped, ...]

    def __iter__(self) -> Iterator[Weight]:
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


_WEIGHT_BEARING = frozenset(
    "LSTM GRU RNN DequantizeLinear QuantizeLinear MatMulInteger ConvInteger QLinearConv QLinearMatMul".split()
)


def _alias_uses(value: ir.Value) -> Iterator[tuple[ir.Node, int]]:
    """Uses of ``value`` with Identity nodes looked through."""
    for node, index in value.uses():
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx"):
            for out in node.outputs:
                if out.is_graph_output():
                    yield node, -1
                yield from _alias_uses(out)
        else:
            yield node, index


def _role(node: ir.Node, index: int, rank: int) -> tuple[str, int, int, int, int] | str:
    """Return (op, out_axis, in_axis, groups, feature_axis) for a weight slot, or a reason string."""
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    attrs = node.attributes
    expected = {"Conv": 3, "ConvTranspose": 3, "Gemm": 2}.get(op)
    if index == 1 and expected is not None and (rank < expected or (op == "Gemm" and rank != 2)):
        return f"{op} weight of rank {rank} (malformed: {op} needs {'2' if op == 'Gemm' else '>= 3'})"
    if op == "Conv" and index == 1:
        return ("Conv", 0, 1, attrs.get_int("group", 1), 1)
    if op == "ConvTranspose" and index == 1:
        return ("ConvTranspose", 1, 0, attrs.get_int("group", 1), 1)
    if op == "Gemm" and index == 1:
        trans_b = attrs.get_int("transB", 0)
        return ("Gemm", 0 if trans_b else 1, 1 if trans_b else 0, 1, 0 if attrs.get_int("transA", 0) else 1)
    if op == "MatMul" and index == 1:
        if rank != 2:
            return f"MatMul weight of rank {rank} (only 2-D weights are pruned)"
        return ("MatMul", 1, 0, 1, -1)
    if op in ("Conv", "Gemm", "MatMul") and index == 0:
        return f"constant is the data operand of {op}, not its weight"
    if op in ("Conv", "Gemm", "ConvTranspose") and index == 2:
        return "bias"
    if op in ("LSTM", "GRU", "RNN"):
        return f"recurrent weight of {op} (recurrent layers are left dense)"
    if op in ("DequantizeLinear", "QuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"):
        return f"feeds {op}: quantized weights are left alone (prune the float model, then quantize)"
    if index == -1:
        return "aliased to a graph output"
    return f"used as an input of {op}"


def _graph_of(node: ir.Node) -> ir.Graph | None:
    graph = node.graph
    return graph if isinstance(graph, ir.Graph) else None


def find_weights(model: ir.Model) -> PrunableWeights:
    """Find every prunable weight tensor of the model (main graph and subgraphs)."""
    candidates: dict[int, tuple[str, ir.Value | ir.Node, ir.Value]] = {}
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                candidates.setdefault(id(value), (value.name or "", value, value))
        for node in graph:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in node.attributes:
                candidates.setdefault(id(node), (node.outputs[0].name or "", node, node.outputs[0]))

    weights: list[Weight] = []
    skipped: list[Skipped] = []
    order = {id(node): i for i, node in enumerate(ir.traversal.RecursiveGraphIterator(model.graph))}
    for name, holder, value in candidates.values():
        tensor = _tensor_of(holder)
        shape = tuple(int(d) for d in tensor.shape)
        uses = list(_alias_uses(value))
        roles = [(node, _role(node, index, len(shape))) for node, index in uses]
        weight_roles = [(node, role) for node, role in roles if not isinstance(role, str)]
        if not weight_roles:
            # Not a weight of a supported op. Report the matrices of weight-bearing ops we leave alone.
            notable = next(((n, r) for n, r in roles if n.op_type in _WEIGHT_BEARING and len(shape) >= 2), None)
            if notable is not None:
                skipped.append(Skipped(name, notable[0].name or "", notable[0].op_type, str(notable[1])))
            continue
        first = weight_roles[0][0]
        problem = next(((node, role) for node, role in roles if isinstance(role, str)), None)
        if problem is not None:
            skipped.append(Skipped(name, problem[0].name or "", problem[0].op_type, problem[1]))
            continue
        if tensor.dtype not in FLOAT_TYPES:
            skipped.append(Skipped(name, first.name or "", first.op_type, f"dtype {tensor.dtype.name} is not float"))
            continue
        if 0 in shape:
            skipped.append(Skipped(name, first.name or "", first.op_type, f"empty tensor of shape {list(shape)}"))
            continue
        if isinstance(holder, ir.Value) and holder.is_graph_input():
            skipped.append(
                Skipped(name, first.name or "", first.op_type, "initializer is also a graph input (overridable)")
            )
            continue
        if value.is_graph_output():
            skipped.append(Skipped(name, first.name or "", first.op_type, "tensor is a graph output"))
            continue
        layouts = {role[:3] for _, role in weight_roles}
        if len(layouts) != 1:
            skipped.append(
                Skipped(name, first.name or "", first.op_type, "shared by nodes that read it with different layouts")
            )
            continue
        op, out_axis, in_axis, groups = weight_roles[0][1][:4]
        uses_ = []
        for node, role in weight_roles:
            activation = node.inputs[0] if node.inputs else None
            uses_.append(WeightUse(node, activation, role[4], _graph_of(node) is not model.graph))
        weights.append(Weight(name, holder, shape, op, out_axis, in_axis, groups, tuple(uses_)))
    weights.sort(key=lambda w: min(order.get(id(u.node), 0) for u in w.uses))
    return PrunableWeights(tuple(weights), tuple(skipped))


def constant_behind(value: ir.Value) -> ir.TensorProtocol | None:
    """The constant tensor a value carries, looking through Identity chains and Constant nodes."""
    while value.const_value is None and (producer := value.producer()) is not None:
        if producer.op_type == "Constant" and "value" in producer.attributes:
            return producer.attributes["value"].as_tensor()
        if producer.op_type != "Identity":
            return None
        value = producer.inputs[0]
    return value.const_value


def _tensor_of(holder: ir.Value | ir.Node) -> ir.TensorProtocol:
    if isinstance(holder, ir.Node):
        return holder.attributes["value"].as_tensor()
    assert holder.const_value is not None
    return holder.const_value


def spill(array: np.ndarray, dtype: ir.DataType, name: str) -> ir.ExternalTensor:
    """Write ``array`` to a scratch file and return it as a memory-mapped external tensor.

    The file lies in the scratch folder of the run in progress (:func:`onnxprune._scratch.current`),
    removed when the run ends; the tensor must be saved (or read) before then.
    """
    path = _scratch.current().file(".bin")
    with open(path, "wb") as f:
        array.tofile(f)
    return ir.ExternalTensor(
        path.name, 0, array.nbytes, dtype, shape=ir.Shape(array.shape), name=name, base_dir=path.parent
    )


def drop_pages(holder: Weight | ir.Value | ir.Node | ir.TensorProtocol) -> None:
    """Unmap the pages of a memory-mapped tensor read so far (they count in RSS; reading again refaults them)."""
    tensor = _tensor_of(_holder(holder)) if isinstance(holder, Weight | ir.Value | ir.Node) else holder
    raw = getattr(tensor, "raw", None) if isinstance(tensor, ir.ExternalTensor) else None
    if raw is not None and not raw.closed and hasattr(raw, "madvise"):
        raw.madvise(mmap.MADV_DONTNEED)


def _holder(holder: Weight | ir.Value | ir.Node) -> ir.Value | ir.Node:
    return holder.holder if isinstance(holder, Weight) else holder


def read_weight(weight: Weight) -> np.ndarray:
    """Read the weight's values (memory-mapped for external data)."""
    return _tensor_of(weight.holder).numpy()


def tensor_like(holder: Weight | ir.Value | ir.Node, array: np.ndarray, name: str) -> ir.TensorProtocol:
    """A tensor of the dtype of ``holder``'s tensor, holding ``array``.

    If that tensor is external data, the new one is spilled to a scratch file and memory-mapped, so
    large models never hold their new weights in memory.
    """
    old = _tensor_of(holder.holder if isinstance(holder, Weight) else holder)
    array = np.ascontiguousarray(array, dtype=old.dtype.numpy())
    if isinstance(old, ir.ExternalTensor):
        return spill(array, old.dtype, name)
    return ir.Tensor(array, dtype=old.dtype, name=name)


def write_tensor(holder: ir.Value | ir.Node, array: np.ndarray, name: str) -> None:
    """Replace the values of an initializer or ``Constant`` node, keeping its name, dtype and shape."""
    old = _tensor_of(holder)
    if tuple(array.shape) != tuple(old.shape):
        raise ValueError(f"{name}: new shape {tuple(array.shape)} != {tuple(old.shape)}")
    tensor = tensor_like(holder, array, old.name or name)
    if isinstance(holder, ir.Node):
        holder.attributes["value"] = ir.AttrTensor("value", tensor)
    else:
        holder.const_value = tensor
    drop_pages(old)  # a reference model may keep the old tensor (and its mapping) alive


def write_weight(weight: Weight, array: np.ndarray) -> None:
    """Replace the weight's values in place, keeping its name, dtype and shape.

    A weight that was memory-mapped external data is written to a scratch file and memory-mapped
    again, so pruning a model over 2 GB never holds all of its weights in memory.
    """
    write_tensor(weight.holder, array, weight.name)
