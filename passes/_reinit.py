"""Re-initialise a model's trainable tensors as torch's default layer initialisation would (Rethinking, M3).

* Conv/ConvTranspose/Gemm/MatMul weights: Kaiming uniform with ``a = sqrt(5)``, i.e. U(-b, b) with
  ``b = 1 / sqrt(fan_in)`` (``fan_in``: the weight's size over its first axis for convolutions, its
  input features for Gemm/MatMul), as ``torch.nn.Conv2d``/``Linear.reset_parameters``;
* their biases (the node's third input, or a constant added right after a MatMul): U(-b, b), same ``b``;
* BatchNormalization/LayerNormalization/InstanceNormalization: scale 1, bias 0 (BatchNorm: mean 0, var 1).

Seeded (numpy). With ``keep_zeros`` the zero entries of a weight stay zero (an unstructured mask is part
of the pruned architecture); otherwise every entry is redrawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import Weight, constant_behind, find_weights, write_tensor
from onnxprune.torchview.module import tensor_holders

__all__ = ["NORM_RESETS", "fan_in", "reinitialize"]

#: Per norm op: input index -> the value torch's default initialisation gives it.
NORM_RESETS = {
    "BatchNormalization": {1: 1.0, 2: 0.0, 3: 0.0, 4: 1.0},
    "LayerNormalization": {1: 1.0, 2: 0.0},
    "InstanceNormalization": {1: 1.0, 2: 0.0},
}


def fan_in(weight: Weight) -> int:
    """The ``fan_in`` torch gives the weight: size over the first axis (convolutions), input features (Gemm/MatMul)."""
    axis = 0 if len(weight.shape) > 2 else weight.out_axis
    return max(1, weight.size // max(1, weight.shape[axis]))


def _biases(weight: Weight) -> Iterator[ir.Value]:
    """The bias values of the nodes using ``weight`` (third input, or a constant Add after a MatMul)."""
    outputs = weight.shape[weight.out_axis]
    for use in weight.uses:
        node = use.node
        if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2 and node.inputs[2] is not None:
            yield node.inputs[2]
        elif node.op_type == "MatMul" and node.outputs:
            for consumer in node.outputs[0].consumers():
                if consumer.op_type != "Add":
                    continue
                for value in consumer.inputs:
                    tensor = None if value is None else constant_behind(value)
                    if tensor is not None and tuple(tensor.shape) == (outputs,):
                        yield value


def reinitialize(model: ir.Model, seed: int, *, keep_zeros: bool = True) -> dict[str, int]:
    """Redraw the model's weights, biases and norm parameters in place; return counts of what changed."""
    rng = np.random.default_rng(seed)
    holders = tensor_holders(model)
    done: set[str] = set()
    counts = {"weights": 0, "biases": 0, "norm_tensors": 0}

    def redraw(name: str, bound: float, kind: str, keep: bool) -> None:
        if name in done or name not in holders:
            return
        old = np.asarray(_values(holders[name]))
        new = rng.uniform(-bound, bound, old.shape).astype(old.dtype)
        if keep:
            new[old == 0] = 0
        write_tensor(holders[name], new, name)
        done.add(name)
        counts[kind] += 1

    for weight in find_weights(model):
        bound = 1 / math.sqrt(fan_in(weight))
        redraw(weight.name, bound, "weights", keep_zeros)
        for bias in _biases(weight):
            redraw(bias.name or "", bound, "biases", False)
    for node in model.graph:
        for index, value in NORM_RESETS.get(node.op_type, {}).items():
            name = node.inputs[index].name if index < len(node.inputs) and node.inputs[index] is not None else None
            if name and name in holders and name not in done:
                old = np.asarray(_values(holders[name]))
                write_tensor(holders[name], np.full_like(old, value), name)
                done.add(name)
                counts["norm_tensors"] += 1
    return counts


def _values(holder: ir.Value | ir.Node) -> np.ndarray:
    """The numpy values of an initializer or ``Constant`` node."""
    tensor = holder.attributes["value"].as_tensor() if isinstance(holder, ir.Node) else holder.const_value
    assert tensor is not None
    return tensor.numpy()
