"""onnxprune passes (``onnxprune.passes``): ``onnx_ir`` in-place passes with frozen configs.

``PASSES`` maps the names used by the CLI and recipes to pass classes; it is an explicit dict, so
importing a module never registers anything behind your back.
"""

from onnxprune.passes import (  # noqa: F401, E402  (register the seed allocators and importances)  # noqa: F401 - registers the in-loop methods
    _campfire,
    _dst_methods,  # noqa: F401 - registers finetune --method rigl, gap, scl
    _early_bird,
    _ispasp,  # noqa: F401  (registers the i-SpaSP channel importance)
    _kfac,
    _platon,
    _pqi,
    _sipp,
)
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult
from onnxprune.passes.channels import ChannelPruneConfig, ChannelPrunePass
from onnxprune.passes.cleanup import CleanupConfig, CleanupPass
from onnxprune.passes.cumulative import CumulativePruneConfig, CumulativePrunePass
from onnxprune.passes.depth import DepthPruneConfig, DepthPrunePass
from onnxprune.passes.finetune import FinetuneConfig, FinetunePass
from onnxprune.passes.gradient import GradientPruneConfig, GradientPrunePass
from onnxprune.passes.lowrank import LowRankConfig, LowRankPass
from onnxprune.passes.quantize import QuantizeConfig, QuantizePass
from onnxprune.passes.sparsegpt import SparseGPTConfig, SparseGPTPass
from onnxprune.passes.sparsify import NMPruneConfig, NMPrunePass, UnstructuredPruneConfig, UnstructuredPrunePass

PASSES: dict[str, type[OnnxPrunePass]] = {
    UnstructuredPrunePass.name: UnstructuredPrunePass,
    NMPrunePass.name: NMPrunePass,
    SparseGPTPass.name: SparseGPTPass,
    GradientPrunePass.name: GradientPrunePass,
    CumulativePrunePass.name: CumulativePrunePass,
    ChannelPrunePass.name: ChannelPrunePass,
    LowRankPass.name: LowRankPass,
    DepthPrunePass.name: DepthPrunePass,
    FinetunePass.name: FinetunePass,
    QuantizePass.name: QuantizePass,
    CleanupPass.name: CleanupPass,
}

__all__ = [
    "PASSES",
    "ChannelPruneConfig",
    "ChannelPrunePass",
    "CleanupConfig",
    "CleanupPass",
    "CumulativePruneConfig",
    "CumulativePrunePass",
    "DepthPruneConfig",
    "DepthPrunePass",
    "FinetuneConfig",
    "FinetunePass",
    "GradientPruneConfig",
    "GradientPrunePass",
    "LowRankConfig",
    "LowRankPass",
    "NMPruneConfig",
    "NMPrunePass",
    "OnnxPrunePass",
    "PassReport",
    "QuantizeConfig",
    "QuantizePass",
    "PruneResult",
    "SparseGPTConfig",
    "SparseGPTPass",
    "UnstructuredPruneConfig",
    "UnstructuredPrunePass",
]
