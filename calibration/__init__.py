"""Calibration data sources and streaming activation statistics (``onnxprune.calibration``)."""

from onnxprune.calibration.collect import StatRequest, collect_stats
from onnxprune.calibration.sources import (
    ArraySource,
    CalibrationSource,
    InputSpec,
    RandomSource,
    input_specs,
    open_source,
    parse_input_shapes,
)
from onnxprune.calibration.stats import ChannelStats, ConvGeometry, unfold_conv_input

__all__ = [
    "ArraySource",
    "CalibrationSource",
    "ChannelStats",
    "ConvGeometry",
    "InputSpec",
    "RandomSource",
    "StatRequest",
    "collect_stats",
    "input_specs",
    "open_source",
    "parse_input_shapes",
    "unfold_conv_input",
]
