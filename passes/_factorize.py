"""Rewrite a weight's consumers as two smaller nodes: ``y = W x`` becomes ``y = A (B x)``.

* MatMul ``x·W`` → ``MatMul(x, Bᵀ)`` then ``MatMul(h, Aᵀ)``.
* Gemm → ``MatMul(x, Bᵀ)`` (a Gemm with ``transA`` if the data is transposed), then the original
  Gemm on ``h`` with the second factor in its ``transB`` layout; bias, ``alpha`` and ``beta`` stay
  on the second node.
* Conv ``[out, in, k…]`` → a Conv with ``B`` as ``[r, in, k…]`` and every original attribute
  (strides, pads, dilations, auto_pad), then the original Conv turned into a 1×…×1 Conv with ``A``
  as ``[out, r, 1…]`` and the bias (LRPET's factorization).

The second node keeps the original node, its name and its output, so graph outputs and value
names are unchanged. The old weight is left unused (the cleanup removes it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import Weight, constant_behind, tensor_like

__all__ = ["Namer", "batchnorm_scale", "factorize", "unique_namer"]

#: Returns a value/node name not used yet in the model.
Namer = Callable[[str], str]


def unique_namer(model: ir.Model) -> Namer:
    """A function returning names not yet used by any value or node of ``model``."""
    taken: set[str] = set()
    for graph in model.graphs():
        taken.update(v.name for v in graph.initializers.values() if v.name)
        for node in graph:
            taken.update(v.name for v in node.outputs if v.name)
            if node.name:
                taken.add(node.name)
    taken.update(v.name for v in model.graph.inputs if v.name)

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    return fresh


def batchnorm_scale(weight: Weight) -> np.ndarray | None:
    """``γ/√(var+ε)`` of the BatchNormalization that alone reads every use's output, else ``None``.

    Only Conv and Gemm outputs have their channels on BatchNorm's axis 1.
    """
    if weight.op_type not in ("Conv", "Gemm"):
        return None
    scales = []
    for use in weight.uses:
        out = use.node.outputs[0]
        readers = list(out.uses())
        if out.is_graph_output() or len(readers) != 1:
            return None
        bn, index = readers[0]
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or index != 0 or len(bn.inputs) < 5:
            return None
        gamma, var = (constant_behind(v) if v is not None else None for v in (bn.inputs[1], bn.inputs[4]))
        if gamma is None or var is None:
            return None
        eps = bn.attributes.get_float("epsilon", 1e-5)
        scales.append(gamma.numpy().astype(np.float64) / np.sqrt(var.numpy().astype(np.float64) + eps))
    if any(s.shape != scales[0].shape or not np.array_equal(s, scales[0]) for s in scales):
        return None
    return scales[0] if scales and scales[0].shape == (weight.shape[weight.out_axis],) else None


def _initializer(graph: ir.Graph, weight: Weight, name: str, array: np.ndarray) -> ir.Value:
    tensor = tensor_like(weight, array, name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def _hidden(node: ir.Node, fresh: Namer, first_op: str, inputs: list[ir.Value], attributes: dict) -> ir.Value:
    """Insert the first node before ``node`` and return its output."""
    out = node.outputs[0]
    hidden = ir.Value(name=fresh(f"{out.name or node.name}_lowrank"))
    first = ir.node(first_op, inputs, attributes, outputs=[hidden], name=fresh(f"{node.name or node.op_type}_lowrank"))
    node.prepend(first)
    return hidden


def factorize(weight: Weight, a: np.ndarray, b: np.ndarray, fresh: Namer) -> tuple[str, str]:
    """Replace every use of ``weight`` (matrix ``[m, n]``) by ``A [m, r] · B [r, n]``.

    Returns the names of the two new initializers (shared by all uses; in the weight's dtype, and
    spilled to scratch files like the weight if it was external data).
    """
    rank = a.shape[1]
    graph = weight.uses[0].node.graph
    assert isinstance(graph, ir.Graph)
    if weight.op_type == "Conv":
        spatial = len(weight.shape) - 2
        first_w = b.reshape(rank, *weight.shape[1:])
        second_w = a.reshape(weight.shape[0], rank, *([1] * spatial))
    else:
        first_w = b.T
        trans_b = weight.op_type == "Gemm" and weight.out_axis == 0
        second_w = a if trans_b else a.T
    first_v = _initializer(graph, weight, fresh(f"{weight.name}.lowrank_b"), first_w)
    second_v = _initializer(graph, weight, fresh(f"{weight.name}.lowrank_a"), second_w)
    for use in weight.uses:
        node = use.node
        x = node.inputs[0]
        assert x is not None
        if weight.op_type == "Conv":
            attrs = {k: v.value for k, v in node.attributes.items()}
            hidden = _hidden(node, fresh, "Conv", [x, first_v], {**attrs, "kernel_shape": list(weight.shape[2:])})
            for key in ("pads", "auto_pad"):
                node.attributes.pop(key, None)
            node.attributes["kernel_shape"] = ir.AttrInt64s("kernel_shape", [1] * spatial)
            node.attributes["strides"] = ir.AttrInt64s("strides", [1] * spatial)
            node.attributes["dilations"] = ir.AttrInt64s("dilations", [1] * spatial)
        elif weight.op_type == "Gemm" and node.attributes.get_int("transA", 0):
            hidden = _hidden(node, fresh, "Gemm", [x, first_v], {"transA": 1})
            node.attributes["transA"] = ir.AttrInt64("transA", 0)
        else:
            hidden = _hidden(node, fresh, "MatMul", [x, first_v], {})
        node.replace_input_with(0, hidden)
        node.replace_input_with(1, second_v)
    return first_v.name or "", second_v.name or ""
