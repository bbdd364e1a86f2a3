"""Exception hierarchy: every user-facing failure is an ``OnnxPruneError`` with a one-line message."""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "ModelLoadError",
    "OnnxPruneError",
    "OutputPathError",
    "RecipeError",
    "UnsupportedModelError",
    "ValidationError",
]


class OnnxPruneError(Exception):
    """Base class of errors caused by the user's input; the CLI prints them on one line and exits 2."""


class ModelLoadError(OnnxPruneError):
    """The model file is missing, unreadable, not ONNX, or references data it must not."""


class OutputPathError(OnnxPruneError):
    """The output path is unusable (for instance, it is the input file)."""


class CalibrationError(OnnxPruneError):
    """Calibration data does not match the model's inputs."""


class UnsupportedModelError(OnnxPruneError):
    """The model uses something a pass cannot handle and cannot skip safely."""


class ValidationError(OnnxPruneError):
    """A result failed the onnx checker or could not be run by onnxruntime."""


class RecipeError(OnnxPruneError):
    """A recipe file or pass configuration is invalid."""
