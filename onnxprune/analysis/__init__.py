"""Analyses over an ``onnx_ir`` model: prunable weights, shapes, FLOPs and parameter counts."""

from onnxprune.analysis.flops import ModelCounts, NodeCost, count_model, count_params
from onnxprune.analysis.manager import AnalysisManager
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.analysis.weights import (
    PrunableWeights,
    Skipped,
    Weight,
    WeightUse,
    find_weights,
    read_weight,
    write_weight,
)

__all__ = [
    "AnalysisManager",
    "ModelCounts",
    "NodeCost",
    "PrunableWeights",
    "Skipped",
    "Weight",
    "WeightUse",
    "count_model",
    "count_params",
    "find_weights",
    "infer_shapes",
    "read_weight",
    "write_weight",
]
