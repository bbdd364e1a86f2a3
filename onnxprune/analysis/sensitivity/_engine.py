"""Sensitivity analysis: the model's output error with one unit changed at a time, at a grid of ratios."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import _io
from onnxprune.analysis.sensitivity._suffix import Frontier, GraphCut, Measure, Samples, SuffixSession
from onnxprune.analysis.sensitivity._table import Point, Table, Unit, digest
from onnxprune.analysis.sensitivity._units import UnitSpec, channel_units, lowrank_units, requests_for, weight_units
from onnxprune.calibration.collect import collect_stats
from onnxprune.calibration.readers import CalibrationDataReader, as_source
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.report import write_json

__all__ = ["KINDS", "WEIGHT_METHODS", "Settings", "analyze", "model_digest"]

logger = logging.getLogger(__name__)

KINDS = ("unstructured", "channels", "lowrank")
WEIGHT_METHODS = ("magnitude", "wanda")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure.

    Attributes:
        kinds: ``unstructured`` (each prunable weight), ``channels`` (each prunable channel group),
            ``lowrank`` (each factorizable weight).
        grid: Ratios in (0, 1): sparsity, fraction of a group's channels, fraction of the rank removed.
        method: How unstructured units choose the zeroed weights: ``magnitude`` or ``wanda``.
        channel_importance: How channel units rank their channels (a registered channel importance).
        batch_size: Samples per onnxruntime call.
    """

    kinds: tuple[str, ...] = ("unstructured",)
    grid: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    method: str = "magnitude"
    channel_importance: str = "l2"
    batch_size: int = 32

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise RecipeError(f"kinds must be among {', '.join(KINDS)}; got {', '.join(bad) or 'none'}")
        if not self.grid or any(not 0.0 < r < 1.0 for r in self.grid):
            raise RecipeError(f"every ratio of the grid must be in (0, 1); got {list(self.grid)}")
        if self.method not in WEIGHT_METHODS:
            raise RecipeError(f"method must be one of {', '.join(WEIGHT_METHODS)}; got '{self.method}'")
        object.__setattr__(self, "grid", tuple(sorted(set(self.grid))))


def model_digest(model: ir.Model) -> str:
    """SHA-256 of the model's content (graph and tensors, as serialized)."""
    return digest([_io.inline_bytes(model)])


def _data_digest(samples: Samples) -> str:
    parts: list[bytes | str] = []
    for batch in samples.batches:
        for name in sorted(batch):
            parts += [name, str(batch[name].dtype), str(batch[name].shape), np.ascontiguousarray(batch[name]).tobytes()]
    if samples.labels is not None:
        parts.append(np.asarray(samples.labels).tobytes())
    return digest(parts)


def _labels(data: CalibrationSource | None) -> np.ndarray | None:
    return None if data is None else getattr(data, "labels", None)


def _check_labels(samples: Samples, origin: str) -> None:
    """Labels must be class indices of a classifier output ``[N, classes]``."""
    if samples.labels is None:
        return
    scores = [a for a in samples.dense[0].values() if a.ndim == 2 and a.shape[1] > 1]
    if not scores:
        raise CalibrationError(f"{origin}: has labels but the model has no classifier output [N, classes]")
    classes = scores[0].shape[1]
    if samples.labels.min(initial=0) < 0 or samples.labels.max(initial=0) >= classes:
        raise CalibrationError(
            f"{origin}: labels range over {int(samples.labels.min())}..{int(samples.labels.max())}, "
            f"the model has {classes} classes"
        )


def _specs(model: ir.Model, calibration: CalibrationSource, settings: Settings, threads: int | None) -> list[UnitSpec]:
    from onnxprune.passes._importance import CHANNEL_IMPORTANCES
    from onnxprune.passes._scores import WEIGHT_IMPORTANCES

    data_aware = ("unstructured" in settings.kinds and WEIGHT_IMPORTANCES[settings.method].needs_data) or (
        "channels" in settings.kinds and CHANNEL_IMPORTANCES[settings.channel_importance].needs_data
    )
    stats = None
    if data_aware:
        requests = requests_for(model, settings.kinds, settings.method, settings.channel_importance)
        stats = collect_stats(model, calibration, requests, batch_size=settings.batch_size, threads=threads)
    specs: list[UnitSpec] = []
    if "unstructured" in settings.kinds:
        specs += weight_units(model, settings.method, stats)
    if "channels" in settings.kinds:
        specs += channel_units(model, settings.channel_importance, stats)
    if "lowrank" in settings.kinds:
        specs += lowrank_units(model)
    return specs


def _settings_dict(settings: Settings, data_key: str | None) -> dict[str, Any]:
    return {**json.loads(json.dumps(dataclasses.asdict(settings))), "data": data_key}


def _read_cached(path: Path, key: str) -> Table | None:
    if not path.is_file():
        return None
    try:
        table = Table.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        logger.warning("sensitivity cache %s is unreadable (%s): measuring again", path, e)
        return None
    return table if table.key == key else None


def _measure(
    model: ir.Model,
    calibration: CalibrationSource,
    sets: list[Samples],
    settings: Settings,
    threads: int | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[Unit], str, float | None]:
    """Every unit of ``settings.kinds`` (in cut order, sharing one frontier), the metric's name and dense value."""
    graph = GraphCut(model)
    frontier = Frontier(graph, sets, threads)
    judged = sets[-1]
    _check_labels(judged, "--data")
    specs = sorted(_specs(model, calibration, settings, threads), key=lambda s: graph.first_reader(s.tensors))
    units = []
    total, done = len(specs) * len(settings.grid), 0
    for spec in specs:
        points = []
        suffix: SuffixSession | None = None
        for ratio in settings.grid:
            values = spec.at(ratio)
            suffix = suffix or SuffixSession(frontier, values)
            results = list(suffix.run(values))
            error = Measure.of(sets[0], results[0]).error
            points.append(Point(ratio, error, Measure.of(judged, results[-1]).metric))
            done += 1
            if progress is not None:
                progress(done, total)
        units.append(Unit(spec.kind, spec.name, spec.nodes, spec.size, tuple(points)))
    metric_name = "top1" if judged.labels is not None else "agreement"
    return units, metric_name, Measure.of(judged, judged.dense).metric


def analyze(
    model: ir.Model,
    calibration: CalibrationSource | CalibrationDataReader,
    *,
    data: CalibrationSource | CalibrationDataReader | None = None,
    settings: Settings = Settings(),
    threads: int | None = None,
    cache: Path | None = None,
    any_data: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Table:
    """Measure every unit of ``settings.kinds`` at every ratio of the grid, one unit at a time.

    The error is the mean relative L2 distance of the model's outputs from the dense model's on the
    ``calibration`` samples; the metric is top-1 accuracy on ``data`` when it holds labels, else
    argmax agreement with the dense model (on ``data`` if given, else on the calibration samples).
    With ``cache`` (a folder) each kind's table measured before for the same model content,
    calibration samples and settings is read back instead of measured again -- if it was judged on
    the same ``data``, or on any with ``any_data`` (the errors do not depend on it). Both data sets
    may also be onnxruntime ``CalibrationDataReader`` objects.

    Raises:
        CalibrationError: labels in ``data`` that do not fit the model's classifier output.
    """
    start = time.perf_counter()
    calibration = as_source(calibration, model)
    data = None if data is None else as_source(data, model)
    sets = [Samples.read(calibration, settings.batch_size)]
    if data is not None:
        sets.append(Samples.read(data, settings.batch_size, _labels(data)))
    data_key = _data_digest(sets[1]) if data is not None else None
    base = [model_digest(model), _data_digest(sets[0])]
    keys = {
        kind: digest([*base, json.dumps(dataclasses.asdict(dataclasses.replace(settings, kinds=(kind,))))])
        for kind in settings.kinds
    }
    paths = {kind: cache / f"sensitivity-{kind}-{key[:24]}.json" for kind, key in keys.items()} if cache else {}
    tables: dict[str, Table] = {}
    for kind, path in paths.items():
        found = _read_cached(path, keys[kind])
        if found is not None and (any_data or found.settings.get("data") == data_key):
            logger.info("sensitivity: reusing %s", path)
            tables[kind] = found
    missing = tuple(k for k in settings.kinds if k not in tables)
    if missing:
        units, metric_name, dense_metric = _measure(
            model, calibration, sets, dataclasses.replace(settings, kinds=missing), threads, progress
        )
        seconds = time.perf_counter() - start
        for kind in missing:
            kind_settings = _settings_dict(dataclasses.replace(settings, kinds=(kind,)), data_key)
            ours = tuple(u for u in units if u.kind == kind)
            share = seconds * len(ours) / max(len(units), 1)
            tables[kind] = Table(keys[kind], kind_settings, metric_name, dense_metric, ours, share)
            if kind in paths:
                write_json(tables[kind].to_dict(), paths[kind])
        logger.info("sensitivity: %d units x %d ratios in %.1f s", len(units), len(settings.grid), seconds)
    first = tables[settings.kinds[0]]
    return Table(
        digest(keys[k] for k in settings.kinds),
        _settings_dict(settings, data_key),
        first.metric_name,
        first.dense_metric,
        tuple(u for kind in KINDS if kind in tables for u in tables[kind].units),
        sum(tables[k].seconds for k in settings.kinds),
    )
