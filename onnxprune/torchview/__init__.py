"""A trainable torch view of ONNX graphs (needs ``torch``: ``pip install onnxprune[torch]``).

:class:`TorchView` runs an ``onnx_ir`` model with its float weights as ``torch`` parameters;
:func:`write_back` puts trained parameters back into the same initializers by name.
"""

from onnxprune.torchview.module import TorchView, UnsupportedGraph, unsupported_nodes
from onnxprune.torchview.writeback import write_back

__all__ = ["TorchView", "UnsupportedGraph", "unsupported_nodes", "write_back"]
