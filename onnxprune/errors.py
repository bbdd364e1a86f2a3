"""Exception hierarchy: every user-facing failure is an ``OnnxPruneError`` with a one-line message."""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "FidelityError",
    "MetricError",
    "ModelLoadError",
    "OnnxPruneError",
    "OptionError",
    "OutputPathError",
    "RecipeError",
    "UnsupportedModelError",
    "ValidationError",
]


class OnnxPruneError(Exception):
    """Base class of errors caused by the user's input; the CLI prints them on one line and exits 2."""

    #: the command line's exit status for this error
    exit_code = 2


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


class OptionError(OnnxPruneError):
    """A command-line option's value is invalid (for example a ``--fail-below`` spec)."""


class MetricError(OnnxPruneError):
    """A ``--metric`` task metric cannot be imported, raises, or returns something that is not a finite number."""


class FidelityError(OnnxPruneError):
    """The candidate misses a fidelity gate (NaN/inf outputs, ``--fail-below``, ``--strict``); the CLI exits 3."""

    exit_code = 3
