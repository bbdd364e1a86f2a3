"""ShrinkBench's figures (Blalock et al., M35): compression ratio and theoretical speedup.

* compression ratio = parameters / nonzero parameters, over all float parameters and over the
  prunable Conv/Gemm/MatMul weights alone;
* theoretical speedup = dense MACs / nonzero MACs, each Conv/Gemm/MatMul's MACs scaled by the density
  of its weight (ops without weights count dense), at the real input shapes given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.weights import find_weights, read_weight

__all__ = ["ShrinkBenchCounts", "prunable_counts", "ratio", "shrinkbench_counts"]


def ratio(total: float, part: float) -> float:
    """``total / part``; ``inf`` when ``part`` is 0 and ``total`` is not, 1 when both are."""
    if part:
        return total / part
    return float("inf") if total else 1.0


def prunable_counts(model: ir.Model) -> tuple[int, int]:
    """(elements, nonzero elements) of the prunable Conv/Gemm/MatMul weights (each shared tensor once)."""
    total = nonzero = 0
    for weight in find_weights(model):
        values = read_weight(weight)
        total += values.size
        nonzero += int(np.count_nonzero(values))
    return total, nonzero


@dataclasses.dataclass(frozen=True)
class ShrinkBenchCounts:
    """Counts behind ShrinkBench's compression ratio and theoretical speedup (MACs per sample)."""

    params: int
    nonzero_params: int
    prunable: int
    prunable_nonzero: int
    macs: int
    sparse_macs: int

    @property
    def compression(self) -> float:
        """All float parameters / nonzero ones."""
        return ratio(self.params, self.nonzero_params)

    @property
    def prunable_compression(self) -> float:
        """Prunable weights / nonzero ones."""
        return ratio(self.prunable, self.prunable_nonzero)

    @property
    def speedup(self) -> float:
        """Dense MACs / MACs scaled by weight density."""
        return ratio(self.macs, self.sparse_macs)

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly form with the derived ratios."""
        return {
            **dataclasses.asdict(self),
            "compression": self.compression,
            "prunable_compression": self.prunable_compression,
            "theoretical_speedup": self.speedup,
        }


def shrinkbench_counts(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> ShrinkBenchCounts:
    """ShrinkBench's counts of ``model`` at ``input_shapes`` (dynamic dims left out count as 1)."""
    counts = count_model(model, complete_shapes(model, input_shapes))
    prunable, nonzero = prunable_counts(model)
    return ShrinkBenchCounts(counts.params, counts.nonzero_params, prunable, nonzero, counts.macs, counts.sparse_macs)
