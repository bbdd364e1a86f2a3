"""Sensitivity analysis: how much the model's outputs move when one unit is pruned, at a grid of ratios.

Units are prunable weights (unstructured), channel groups (structured) and factorizable weights
(low-rank). Each is measured alone, on the calibration samples, by feeding the changed tensors to
the part of the graph after the unit (:mod:`._suffix`); tables are cached by model content, data
and settings, and drive the ``sensitivity`` allocator.
"""

from onnxprune.analysis.sensitivity._engine import KINDS, WEIGHT_METHODS, Settings, analyze, model_digest
from onnxprune.analysis.sensitivity._table import Point, Table, Unit, cache_dir, write_csv, write_plot, write_table_json

__all__ = [
    "KINDS",
    "WEIGHT_METHODS",
    "Point",
    "Settings",
    "Table",
    "Unit",
    "analyze",
    "cache_dir",
    "model_digest",
    "write_csv",
    "write_plot",
    "write_table_json",
]
