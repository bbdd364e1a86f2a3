"""onnxprune passes (``onnxprune.passes``): ``onnx_ir`` in-place passes with frozen configs.

``PASSES`` maps the names used by the CLI and recipes to pass classes; it is an explicit dict, so
importing a module never registers anything behind your back.
"""

from onnxprune.passes import _ticket_methods  # noqa: F401  (registers sup-tickets, free-tickets)
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult
from onnxprune.passes.channels import ChannelPruneConfig, ChannelPrunePass
from onnxprune.passes.cleanup import CleanupConfig, CleanupPass
from onnxprune.passes.depth import DepthPruneConfig, DepthPrunePass
from onnxprune.passes.finetune import FinetuneConfig, FinetunePass
from onnxprune.passes.lowrank import LowRankConfig, LowRankPass
from onnxprune.passes.quantize import QuantizeConfig, QuantizePass
from onnxprune.passes.scratch import ScratchConfig, ScratchPass
from onnxprune.passes.sparsegpt import SparseGPTConfig, SparseGPTPass
from onnxprune.passes.sparsify import NMPruneConfig, NMPrunePass, UnstructuredPruneConfig, UnstructuredPrunePass

PASSES: dict[str, type[OnnxPrunePass]] = {
    UnstructuredPrunePass.name: UnstructuredPrunePass,
    NMPrunePass.name: NMPrunePass,
    SparseGPTPass.name: SparseGPTPass,
    ChannelPrunePass.name: ChannelPrunePass,
    LowRankPass.name: LowRankPass,
    DepthPrunePass.name: DepthPrunePass,
    FinetunePass.name: FinetunePass,
    ScratchPass.name: ScratchPass,
    QuantizePass.name: QuantizePass,
    CleanupPass.name: CleanupPass,
}

__all__ = [
    "PASSES",
    "ChannelPruneConfig",
    "ChannelPrunePass",
    "CleanupConfig",
    "CleanupPass",
    "DepthPruneConfig",
    "DepthPrunePass",
    "FinetuneConfig",
    "FinetunePass",
    "LowRankConfig",
    "LowRankPass",
    "NMPruneConfig",
    "NMPrunePass",
    "OnnxPrunePass",
    "PassReport",
    "QuantizeConfig",
    "QuantizePass",
    "ScratchConfig",
    "ScratchPass",
    "PruneResult",
    "SparseGPTConfig",
    "SparseGPTPass",
    "UnstructuredPruneConfig",
    "UnstructuredPrunePass",
]
