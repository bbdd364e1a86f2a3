"""Calibration data sources and streaming activation statistics (``onnxprune.calibration``)."""

from onnxprune.calibration.collect import StatRequest, collect_stats
from onnxprune.calibration.images import open_images, scan_images
from onnxprune.calibration.preprocess import PRESETS, ImagePreprocess
from onnxprune.calibration.readers import CalibrationDataReader, ReaderSource, as_source
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
from onnxprune.calibration.text import TextSpec, open_text

__all__ = [
    "PRESETS",
    "ArraySource",
    "CalibrationDataReader",
    "CalibrationSource",
    "ChannelStats",
    "ConvGeometry",
    "ImagePreprocess",
    "InputSpec",
    "RandomSource",
    "ReaderSource",
    "StatRequest",
    "TextSpec",
    "as_source",
    "collect_stats",
    "input_specs",
    "open_images",
    "open_source",
    "open_text",
    "parse_input_shapes",
    "scan_images",
    "unfold_conv_input",
]
