"""Write a torch view's trained parameters back into the original tensors, by name."""

from __future__ import annotations

import onnx_ir as ir

from onnxprune.analysis.weights import write_tensor
from onnxprune.torchview.module import TorchView, tensor_holders

__all__ = ["write_back"]


def write_back(view: TorchView, model: ir.Model, names: list[str] | None = None) -> list[str]:
    """Copy the view's parameters into ``model``'s initializers/Constant nodes of the same names.

    Only tensor values change: dtype, shape, name and external-data placement stay (an external
    tensor is written to a scratch file and memory-mapped, then saved where it was). Returns the
    names written.
    """
    holders = tensor_holders(model)
    written = []
    for name, param in view.named_tensors().items():
        if names is not None and name not in names:
            continue
        holder = holders.get(name)
        if holder is None:
            raise KeyError(f"tensor '{name}' is not in the model")
        write_tensor(holder, param.detach().numpy(), name)
        written.append(name)
    return written
