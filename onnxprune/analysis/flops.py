"""Per-node MACs/FLOPs and parameter counts (dense and nonzero-aware, ShrinkBench style)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import constant_behind

__all__ = ["ModelCounts", "NodeCost", "count_model", "count_params", "node_macs"]

_MS = "com.microsoft"
#: (domain, op) of ops counted as one FLOP per output element
_ELEMENTWISE = frozenset(
    ("", op)
    for op in (
        "Add Sub Mul Div Relu LeakyRelu Sigmoid Tanh Clip HardSigmoid HardSwish Erf Gelu Exp Log Sqrt Pow "
        "BatchNormalization LayerNormalization InstanceNormalization Softmax MaxPool AveragePool "
        "GlobalAveragePool GlobalMaxPool ReduceMean ReduceSum Max Min Where Neg Abs SimplifiedLayerNormalization"
    ).split()
) | frozenset(
    (_MS, op)
    for op in (
        "SkipLayerNormalization SkipSimplifiedLayerNormalization EmbedLayerNormalization BiasGelu FastGelu "
        "Gelu QuickGelu BiasAdd BiasSoftmax"
    ).split()
)


@dataclasses.dataclass(frozen=True)
class NodeCost:
    """MACs of one node: dense, and scaled by the density of its weight (theoretical sparse cost)."""

    node: str
    op_type: str
    macs: int
    sparse_macs: int


@dataclasses.dataclass(frozen=True)
class ModelCounts:
    """Whole-model counts. FLOPs = 2·MACs + elementwise ops; ``unknown`` nodes lacked static shapes."""

    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    flops: int
    nodes: tuple[NodeCost, ...]
    unknown: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (per-node costs left out)."""
        return {
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "sparse_macs": self.sparse_macs,
            "flops": self.flops,
            "nodes_without_shapes": len(self.unknown),
        }


def count_params(model: ir.Model) -> tuple[int, int]:
    """Return (parameters, nonzero parameters) over all float initializers and Constant tensors.

    In a quantized (QDQ) model the integer tensors a DequantizeLinear reads are parameters too
    (nonzero: not 0, the zero point of symmetric weights); their scales and zero points are not.
    """
    total = nonzero = 0
    quantized, quant_params = _quantization_roles(model)
    for value, tensor in _constant_tensors(model):
        if id(value) in quant_params or not (tensor.dtype.is_floating_point() or id(value) in quantized):
            continue
        total += tensor.size
        nonzero += _nonzero(tensor)
    return total, nonzero


def _quantization_roles(model: ir.Model) -> tuple[set[int], set[int]]:
    """Ids of the values DequantizeLinear dequantizes, and of the scales/zero points of Q/DQ nodes."""
    data, params = set(), set()
    for graph in model.graphs():
        for node in graph:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            if node.op_type == "DequantizeLinear" and node.inputs and node.inputs[0] is not None:
                data.add(id(node.inputs[0]))
            params.update(id(v) for v in node.inputs[1:] if v is not None)
    return data, params


def _constant_tensors(model: ir.Model) -> list[tuple[ir.Value, ir.TensorProtocol]]:
    tensors = []
    for graph in model.graphs():
        tensors.extend((v, v.const_value) for v in graph.initializers.values() if v.const_value is not None)
        for node in graph:
            if node.op_type == "Constant" and "value" in node.attributes:
                tensors.append((node.outputs[0], node.attributes["value"].as_tensor()))
    return tensors


def _nonzero(tensor: ir.TensorProtocol, chunk: int = 1 << 24) -> int:
    flat = tensor.numpy().reshape(-1)
    return sum(int(np.count_nonzero(flat[i : i + chunk])) for i in range(0, flat.size, chunk))


def _density(node: ir.Node, index: int) -> float:
    value = node.inputs[index] if index < len(node.inputs) else None
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.inputs:
        value = producer.inputs[0]  # a quantized weight: symmetric, 0 where the float weight is 0
    tensor = constant_behind(value) if value is not None else None
    if tensor is None or tensor.size == 0:
        return 1.0
    return _nonzero(tensor) / tensor.size


def _conv(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    out = shapes.get(node.outputs[0].name or "")
    weight = shapes.get(node.inputs[1].name or "")
    if out is None or weight is None:
        return None
    return math.prod(out) * math.prod(weight[1:])


def _conv_transpose(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    inp = shapes.get(node.inputs[0].name or "")
    weight = shapes.get(node.inputs[1].name or "")
    if inp is None or weight is None:
        return None
    return math.prod(inp) * math.prod(weight[1:])


def _matmul(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    a = shapes.get(node.inputs[0].name or "")
    out = shapes.get(node.outputs[0].name or "")
    if a is None or out is None or not a:
        return None
    transposed = node.op_type in ("Gemm", "FusedMatMul") and node.attributes.get_int("transA", 0)
    k = a[-1] if not transposed else a[-2]
    return math.prod(out) * k


def _shape(node: ir.Node, index: int, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    value = node.inputs[index] if index < len(node.inputs) else None
    return None if value is None else shapes.get(value.name or "")


def _attention(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """com.microsoft Attention: the packed QKV projection, then Q·Kᵀ and the weighted sum of V (no past)."""
    x, weight = _shape(node, 0, shapes), _shape(node, 1, shapes)
    if x is None or weight is None or len(x) != 3 or len(weight) != 2:
        return None
    sizes = node.attributes.get_ints("qkv_hidden_sizes", None) or [weight[1] // 3] * 3
    batch, seq = x[0], x[1]
    # per head S·S·head_size for Q·Kᵀ and for the V sum: summed over heads, the Q and V widths
    return batch * seq * x[2] * weight[1] + batch * seq * seq * (sizes[0] + sizes[2])


def _multi_head_attention(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """com.microsoft MultiHeadAttention/GroupQueryAttention (Q, K, V of rank 3, no past): Q·Kᵀ and the V sum.

    Every query head reads L keys and values of its head size (GQA: a shared KV head), so both products cost
    S·L·(query width).
    """
    q, k, out = _shape(node, 0, shapes), _shape(node, 1, shapes), shapes.get(node.outputs[0].name or "")
    if q is None or k is None or out is None or len(q) != 3 or len(k) != 3 or len(out) != 3:
        return None
    return math.prod(q) * k[1] + math.prod(out) * k[1]


_MacRule = Callable[[ir.Node, Mapping[str, tuple[int, ...]]], int | None]
_MAC_RULES: dict[tuple[str, str], _MacRule] = {
    ("", "Conv"): _conv,
    ("", "ConvTranspose"): _conv_transpose,
    ("", "Gemm"): _matmul,
    ("", "MatMul"): _matmul,
    (_MS, "FusedMatMul"): _matmul,
    (_MS, "Attention"): _attention,
    (_MS, "MultiHeadAttention"): _multi_head_attention,
    (_MS, "GroupQueryAttention"): _multi_head_attention,
}


def _key(node: ir.Node) -> tuple[str, str]:
    return ("" if node.domain == "ai.onnx" else node.domain, node.op_type)


def node_macs(node: ir.Node, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """Dense MACs of a Conv/ConvTranspose/Gemm/MatMul node or an onnxruntime attention op.

    ``None``: another op, or shapes unknown.
    """
    rule = _MAC_RULES.get(_key(node))
    return None if rule is None else rule(node, shapes)


def count_model(model: ir.Model, shapes: Mapping[str, tuple[int, ...]]) -> ModelCounts:
    """Count parameters, MACs and FLOPs of the main graph for the given static shapes."""
    params, nonzero = count_params(model)
    costs: list[NodeCost] = []
    unknown: list[str] = []
    macs = sparse = elementwise = 0
    for node in model.graph:
        rule = _MAC_RULES.get(_key(node))
        if rule is not None:
            node_macs = rule(node, shapes)
            if node_macs is None:
                unknown.append(node.name or node.op_type)
                continue
            node_sparse = round(node_macs * _density(node, 1))
            costs.append(NodeCost(node.name or "", node.op_type, node_macs, node_sparse))
            macs += node_macs
            sparse += node_sparse
        elif _key(node) in _ELEMENTWISE and node.outputs:
            out = shapes.get(node.outputs[0].name or "")
            elementwise += math.prod(out) if out is not None else 0
    return ModelCounts(params, nonzero, macs, sparse, 2 * macs + elementwise, tuple(costs), tuple(unknown))
