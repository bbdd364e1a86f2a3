"""User task metrics (``--metric module:function``): the figure that says whether a model still does its job.

``module`` is a dotted importable module or a path to a ``.py`` file. The function is called as
``function(outputs, data_path) -> float`` (higher is better), where ``outputs`` maps each model output
name to the model's outputs over all samples of the data file, in order, concatenated along the batch
axis, and ``data_path`` is the data file (or folder) as given. It runs for the reference and the candidate.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.errors import MetricError

__all__ = ["MetricResult", "TaskMetric", "load_metric", "metric_file", "resolve_metric_spec"]


def _split(spec: str) -> tuple[str, str]:
    module, sep, function = spec.rpartition(":")
    if not sep or not module or not function.isidentifier():
        raise MetricError(f"--metric '{spec}': expected module:function or path/to/file.py:function")
    return module, function


def _is_file(module: str) -> bool:
    return module.endswith(".py") or "/" in module or "\\" in module


def resolve_metric_spec(spec: str, base: Path | None = None) -> str:
    """The spec with a ``.py`` path made absolute (relative to ``base``, else the working folder)."""
    module, function = _split(spec)
    if not _is_file(module) or Path(module).is_absolute():
        return spec
    return f"{((base or Path.cwd()) / module).resolve()}:{function}"


def metric_file(spec: str) -> Path | None:
    """The ``.py`` file a ``path/to/file.py:function`` spec reads (``None`` for a dotted module name)."""
    module = spec.rpartition(":")[0]
    return Path(module) if module and _is_file(module) else None


def _import(module: str, spec: str) -> Any:
    if not _is_file(module):
        return importlib.import_module(module)
    path = Path(module)
    if not path.is_file():
        raise MetricError(f"--metric '{spec}': {path}: no such file")
    loader_spec = importlib.util.spec_from_file_location(f"onnxprune_metric_{path.stem}", path)
    if loader_spec is None or loader_spec.loader is None:
        raise MetricError(f"--metric '{spec}': {path} is not a Python file")
    loaded = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(loaded)
    return loaded


@dataclasses.dataclass(frozen=True)
class TaskMetric:
    """A loaded task metric: ``spec`` as given and the callable."""

    spec: str
    function: Callable[[Mapping[str, np.ndarray], str], Any]

    def __call__(self, outputs: Mapping[str, np.ndarray], data_path: str) -> float:
        """Evaluate on one model's outputs; raise :class:`MetricError` unless it gives a finite number."""
        try:
            value = self.function(outputs, data_path)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise MetricError(f"--metric '{self.spec}' raised {type(e).__name__}: {first}") from e
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise MetricError(f"--metric '{self.spec}' returned {value!r}; expected a finite number")
        return float(value)


def load_metric(spec: str) -> TaskMetric:
    """Import ``module:function`` (a dotted module or a ``.py`` path); one-line :class:`MetricError` on failure."""
    module, function = _split(spec)
    try:
        loaded = _import(module, spec)
    except MetricError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise MetricError(f"--metric '{spec}': cannot import {module} ({type(e).__name__}: {first})") from e
    fn = getattr(loaded, function, None)
    if not callable(fn):
        raise MetricError(f"--metric '{spec}': {module} has no function '{function}'")
    return TaskMetric(spec, fn)


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """A task metric on both models (higher is better)."""

    spec: str
    reference: float
    candidate: float

    @property
    def drop(self) -> float:
        """Reference minus candidate."""
        return self.reference - self.candidate

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {**dataclasses.asdict(self), "drop": self.drop}
