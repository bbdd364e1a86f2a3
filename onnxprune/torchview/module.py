"""A trainable torch view of an ONNX graph: initializers become parameters, nodes run through the op table.

The view never re-exports anything: it keeps the ``onnx_ir`` model, runs its nodes in order with the
torch functions of :mod:`onnxprune.torchview._registry`, and maps every trainable tensor back to the
initializer (or ``Constant`` node) it came from, by name, for :func:`write_back`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from onnxprune.errors import OnnxPruneError
from onnxprune.torchview import _ops_math, _ops_nn, _ops_shape  # noqa: F401 - they register the op table
from onnxprune.torchview._registry import lookup

__all__ = ["FROZEN_INPUTS", "TorchView", "UnsupportedGraph", "tensor_holders", "unsupported_nodes"]

logger = logging.getLogger(__name__)

#: Inputs of these ops are statistics, hyper-parameters or shapes, never trained.
FROZEN_INPUTS: dict[str, frozenset[int]] = {
    "BatchNormalization": frozenset({3, 4}),
    "Clip": frozenset({1, 2}),
    "Pow": frozenset({1}),
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Pad": frozenset({1, 2, 3}),
}


class UnsupportedGraph(OnnxPruneError):
    """The graph has ops the torch view cannot run."""


def unsupported_nodes(model: ir.Model) -> list[tuple[str, str, str]]:
    """(node, op, reason) for every node the torch view cannot run."""
    opset = model.opset_imports.get("", 1)
    found = []
    for node in model.graph:
        if node.domain not in ("", "ai.onnx"):
            found.append((node.name or "", f"{node.domain}::{node.op_type}", "custom domain"))
        elif any(attr.type == ir.AttributeType.GRAPH for attr in node.attributes.values()):
            found.append((node.name or "", node.op_type, "control flow (subgraphs) is not supported"))
        elif lookup(node.op_type, opset) is None:
            found.append((node.name or "", node.op_type, f"no torch entry for {node.op_type} at opset {opset}"))
    return found


def _tensor(value: ir.TensorProtocol) -> torch.Tensor:
    array = np.array(value.numpy())  # a writable copy (memory-mapped external data is read-only)
    return torch.from_numpy(array)


def _attributes(node: ir.Node) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.TENSOR:
            attrs[name] = _tensor(attr.as_tensor())
        else:
            attrs[name] = attr.value
    attrs["_outputs"] = len(node.outputs)
    return attrs


def tensor_holders(model: ir.Model) -> dict[str, ir.Value | ir.Node]:
    """Main-graph initializers and ``Constant`` nodes (with a ``value`` tensor), by tensor name."""
    holders: dict[str, ir.Value | ir.Node] = {
        v.name or "": v for v in model.graph.initializers.values() if v.const_value is not None
    }
    for node in model.graph:
        if node.op_type == "Constant" and "value" in node.attributes:
            holders.setdefault(node.outputs[0].name or "", node)
    return holders


def _holder_tensor(holder: ir.Value | ir.Node) -> ir.TensorProtocol:
    if isinstance(holder, ir.Node):
        return holder.attributes["value"].as_tensor()
    assert holder.const_value is not None
    return holder.const_value


def _trainable_candidates(model: ir.Model) -> dict[str, ir.Value | ir.Node]:
    """Float initializers and float ``Constant`` nodes with more than one element, by name."""
    return {
        name: holder
        for name, holder in tensor_holders(model).items()
        if (tensor := _holder_tensor(holder)).dtype.is_floating_point() and tensor.size > 1
    }


def _frozen_names(model: ir.Model) -> set[str]:
    """Tensors read as statistics/hyper-parameters (BN mean/var, Clip bounds, ...)."""
    frozen = set()
    for node in model.graph:
        for index in FROZEN_INPUTS.get(node.op_type, ()):
            if index < len(node.inputs) and node.inputs[index] is not None:
                frozen.add(node.inputs[index].name or "")
    return frozen


@dataclasses.dataclass(frozen=True)
class _Step:
    node: ir.Node
    fn: Any
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]


class TorchView(torch.nn.Module):
    """Run an ``onnx_ir`` model's main graph in torch, with its float weights as parameters.

    Attributes:
        names: Parameter index → tensor name (initializer or Constant output), for write-back.
    """

    def __init__(self, model: ir.Model, *, trainable: bool = True) -> None:
        super().__init__()
        problems = unsupported_nodes(model)
        if problems:
            node, op_type, reason = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UnsupportedGraph(f"node '{node}' ({op_type}): {reason}{more}")
        opset = model.opset_imports.get("", 1)
        frozen = _frozen_names(model)
        holders = _trainable_candidates(model)
        self.names: list[str] = []
        self._params: dict[str, torch.nn.Parameter] = {}
        for name, holder in holders.items():
            if name in frozen:
                continue
            param = torch.nn.Parameter(_tensor(_holder_tensor(holder)), requires_grad=trainable)
            self.register_parameter(f"p{len(self.names)}", param)
            self._params[name] = param
            self.names.append(name)
        self._constants: dict[str, torch.Tensor] = {}
        for value in model.graph.initializers.values():
            name = value.name or ""
            if name not in self._params and value.const_value is not None:
                self._constants[name] = _tensor(value.const_value)
        self._steps: list[_Step] = []
        for node in model.graph:
            out_name = node.outputs[0].name if node.outputs else None
            if node.op_type == "Constant" and out_name in self._params:
                continue  # the parameter stands for the Constant's output
            self._steps.append(
                _Step(
                    node,
                    lookup(node.op_type, opset),
                    tuple(None if v is None else v.name for v in node.inputs),
                    tuple(v.name or "" for v in node.outputs),
                    _attributes(node),
                )
            )
        self.input_names = [v.name or "" for v in model.graph.inputs if v.name not in self._constants]
        self.output_names = [v.name or "" for v in model.graph.outputs]

    @property
    def nodes(self) -> tuple[ir.Node, ...]:
        """The main graph's nodes the view runs, in order (for methods that read the layout of a weight)."""
        return tuple(step.node for step in self._steps)

    def parameter(self, name: str) -> torch.nn.Parameter:
        """The parameter standing for tensor ``name``."""
        return self._params[name]

    def named_tensors(self) -> dict[str, torch.nn.Parameter]:
        """Tensor name → parameter."""
        return dict(self._params)

    def forward(
        self, *args: torch.Tensor, _extra: tuple[str, ...] = (), **feeds: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Run the graph; inputs by position or by name; returns the graph outputs (and ``_extra`` values) by name."""
        env: dict[str, Any] = dict(self._constants)
        env.update(self._params)
        env.update(zip(self.input_names, args, strict=False))
        env.update(feeds)
        for step in self._steps:
            inputs = [None if name in (None, "") else env[name] for name in step.inputs]
            try:
                result = step.fn(inputs, step.attrs)
            except Exception as e:
                raise RuntimeError(f"torch view failed at node '{step.node.name}' ({step.node.op_type}): {e}") from e
            if not isinstance(result, tuple):
                result = (result,)
            env.update(zip(step.outputs, result, strict=False))
        return {name: env[name] for name in (*self.output_names, *_extra)}

    def run_numpy(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Evaluate without gradients on numpy inputs."""
        with torch.no_grad():
            outputs = self(**{k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()})
        return {k: v.detach().numpy() for k, v in outputs.items()}
