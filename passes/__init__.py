"""onnxprune passes (``onnxprune.passes``): ``onnx_ir`` in-place passes with frozen configs.

``PASSES`` maps the names used by the CLI and recipes to pass classes; it is an explicit dict, so
importing a module never registers anything behind your back.
"""

# registered entries (importances, allocators, sparse-training methods) live in these modules
from onnxprune.passes import (  # noqa: F401
    _ap,
    _campfire,
    _dst_methods,
    _early_bird,
    _ispasp,
    _kfac,
    _lrpet,
    _platon,
    _pqi,
    _sipp,
    _spectral,
    _ticket_methods,
)
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult
from onnxprune.passes._sparse_methods import SPARSE_METHODS
from onnxprune.passes.channels import ChannelPruneConfig, ChannelPrunePass
from onnxprune.passes.cleanup import CleanupConfig, CleanupPass
from onnxprune.passes.cumulative import CumulativePruneConfig, CumulativePrunePass
from onnxprune.passes.depth import DepthPruneConfig, DepthPrunePass
from onnxprune.passes.finetune import FinetuneConfig, FinetunePass
from onnxprune.passes.gradient import GradientPruneConfig, GradientPrunePass
from onnxprune.passes.lowrank import LowRankConfig, LowRankPass
from onnxprune.passes.quantize import QuantizeConfig, QuantizePass
from onnxprune.passes.scratch import ScratchConfig, ScratchPass
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
    "ScratchConfig",
    "ScratchPass",
    "PruneResult",
    "SparseGPTConfig",
    "SparseGPTPass",
    "UnstructuredPruneConfig",
    "UnstructuredPrunePass",
]

for _alias, _name in (("early-bird", "early_bird"), ("sup_tickets", "sup-tickets"), ("free_tickets", "free-tickets")):
    SPARSE_METHODS.alias(_alias, _name)  # both spellings of the multi-word methods
