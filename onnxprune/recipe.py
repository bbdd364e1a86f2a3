"""Recipes: a YAML description of a whole run, which every CLI verb compiles to (and can print)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import yaml

from onnxprune import _io
from onnxprune._integrity import require_finite_weights
from onnxprune.budget import budget_of, drop_points, search_budget
from onnxprune.calibration.collect import ProgressFn
from onnxprune.calibration.sequential import SequentialOptions
from onnxprune.calibration.sources import CalibrationSource, open_source, sample_shapes
from onnxprune.context import PassContext
from onnxprune.errors import FidelityError, RecipeError
from onnxprune.gates import low_agreement, nonfinite_outputs
from onnxprune.metric import load_metric, resolve_metric_spec
from onnxprune.passes import PASSES, OnnxPrunePass
from onnxprune.pipeline import Pipeline, PipelineResult
from onnxprune.report import ModelStats, model_stats, write_json
from onnxprune.verify import validate

__all__ = ["CalibrationSpec", "PassSpec", "Recipe", "RunResult", "build_pass", "run_recipe"]

logger = logging.getLogger(__name__)

#: Given a task description, returns a progress callback (or None).
ProgressFactory = Callable[[str], ProgressFn | None]


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """One pass by registry name, with its config fields."""

    name: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CalibrationSpec:
    """Calibration data: a file or folder (``None``: random inputs with a warning).

    ``sequential`` and ``memory_mb`` say how data-fitted passes collect statistics
    (see :class:`onnxprune.calibration.sequential.SequentialOptions`).
    """

    path: str | None = None
    samples: int | None = None
    batch_size: int = 32
    input_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    seed: int = 0
    sequential: bool | None = None
    memory_mb: int = 1024


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole run: model in, passes, calibration, validation, model and report out.

    ``metric``: a task metric ``module:function`` evaluated on the validation data (see
    :mod:`onnxprune.metric`). ``strict``: refuse to write a result whose argmax agreement on real
    data is below :data:`onnxprune.gates.LOW_AGREEMENT` (otherwise a warning). ``max_drop``: search
    the strongest compression of the budget pass whose measured drop stays within this many points
    (see :mod:`onnxprune.budget`).
    """

    model: str
    output: str
    passes: tuple[PassSpec, ...]
    calibration: CalibrationSpec = CalibrationSpec()
    validate: bool = True
    validation_data: str | None = None
    latency_runs: int = 30
    threads: int | None = None
    external_data: bool | None = None
    report: str | None = None
    metric: str | None = None
    strict: bool = False
    max_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML/JSON)."""
        data = dataclasses.asdict(self)
        data["passes"] = [{"name": p.name, "config": dict(p.config)} for p in self.passes]
        data["calibration"]["input_shapes"] = {k: list(v) for k, v in self.calibration.input_shapes.items()}
        return data

    def to_yaml(self) -> str:
        """The YAML text that reproduces this run with ``onnxprune run``."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "recipe") -> Recipe:
        """Build a recipe from plain data, rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise RecipeError(f"{origin}: expected a mapping at the top level")
        data = dict(data)
        _no_unknown(origin, data, {f.name for f in dataclasses.fields(cls)})
        for key in ("model", "output", "passes"):
            if key not in data:
                raise RecipeError(f"{origin}: missing '{key}'")
        passes = []
        for i, entry in enumerate(data.pop("passes") or []):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise RecipeError(f"{origin}: passes[{i}] needs a 'name'")
            _no_unknown(f"{origin}: passes[{i}]", entry, {"name", "config"})
            passes.append(PassSpec(str(entry["name"]), dict(entry.get("config") or {})))
        calib = dict(data.pop("calibration", None) or {})
        _no_unknown(f"{origin}: calibration", calib, {f.name for f in dataclasses.fields(CalibrationSpec)})
        calib["input_shapes"] = {k: tuple(v) for k, v in (calib.get("input_shapes") or {}).items()}
        recipe = cls(passes=tuple(passes), calibration=CalibrationSpec(**calib), **data)
        for spec in recipe.passes:
            build_pass(spec)  # fail early on bad names or configs
        return recipe

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Recipe:
        """Read a recipe file; relative model/data paths are taken relative to the recipe's folder."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise RecipeError(f"{path}: cannot read recipe ({type(e).__name__}: {e})") from e
        recipe = cls.from_dict(data, str(path))
        base = path.parent

        def rel(p: str | None) -> str | None:
            return None if p is None else str(base / p)  # an absolute p stays as it is

        return dataclasses.replace(
            recipe,
            model=rel(recipe.model),
            output=rel(recipe.output),
            validation_data=rel(recipe.validation_data),
            report=rel(recipe.report),
            metric=None if recipe.metric is None else resolve_metric_spec(recipe.metric, base),
            calibration=dataclasses.replace(recipe.calibration, path=rel(recipe.calibration.path)),
        )


def _no_unknown(origin: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"{origin}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")


def build_pass(spec: PassSpec, context: PassContext | None = None) -> OnnxPrunePass:
    """Instantiate a registered pass from its name and config fields."""
    cls = PASSES.get(spec.name)
    if cls is None:
        raise RecipeError(f"unknown pass '{spec.name}' (known: {', '.join(sorted(PASSES))})")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    _no_unknown(f"pass '{spec.name}'", spec.config, fields)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.config.items()}
    try:
        return cls(cls.config_class(**config), context)
    except TypeError as e:
        raise RecipeError(f"pass '{spec.name}': {e}") from e


@dataclasses.dataclass
class RunResult:
    """What :func:`run_recipe` produced."""

    output: Path
    before: ModelStats
    after: ModelStats
    report: dict[str, Any]


def _open(recipe: Recipe, model: Any, path: str | None) -> CalibrationSource:
    spec = recipe.calibration
    return open_source(path, model, samples=spec.samples, input_shapes=spec.input_shapes, seed=spec.seed)


def _check_fidelity(recipe: Recipe, validation: dict[str, Any]) -> None:
    """Refuse NaN/inf results; warn about (or, strict, refuse) low agreement on real data."""
    broken = nonfinite_outputs(validation)
    if broken:
        raise FidelityError(f"{broken[0]}; nothing written")
    low = low_agreement(validation)
    for line in low:
        logger.warning("LOW FIDELITY: %s: the result disagrees with the original model (--strict refuses it)", line)
    if low and recipe.strict:
        raise FidelityError(f"--strict: {low[0]}; nothing written")


def run_recipe(recipe: Recipe, *, progress: ProgressFactory | None = None) -> RunResult:
    """Load, run the passes, validate with onnxruntime, save atomically and report.

    Nothing is written if validation fails (or, with ``strict``, shows low agreement); the input
    model is never modified. Bad data, labels or metric fail before any pass runs.
    """
    started = time.perf_counter()
    progress = progress or (lambda _task: None)
    model = _io.load(recipe.model)
    reference = _io.load(recipe.model)
    output = Path(recipe.output)
    _io._check_output(model, output, f"{output.name}.data" if recipe.external_data else None)
    require_finite_weights(model, recipe.model)
    source = _open(recipe, model, recipe.calibration.path)
    data = _open(recipe, reference, recipe.validation_data) if recipe.validation_data else source
    data_path = recipe.validation_data or recipe.calibration.path
    metric = load_metric(recipe.metric) if recipe.metric else None
    if (metric is not None or recipe.strict) and not recipe.validate:
        raise RecipeError("metric and strict need validation (validate: true)")
    if recipe.strict and getattr(data, "random", False):
        raise RecipeError("--strict needs real validation data (--data PATH or --calib PATH)")
    if recipe.max_drop is not None:
        if not recipe.validate or getattr(data, "random", False):
            raise RecipeError("--max-drop needs validation on real data (--data PATH or --calib PATH)")
        if not 0 <= recipe.max_drop < float("inf"):
            raise RecipeError(f"max_drop must be a number of points >= 0, got {recipe.max_drop}")

    def execute(specs: tuple[PassSpec, ...], model: ir.Model) -> tuple[ir.Model, PipelineResult, dict[str, Any] | None]:
        context = PassContext(
            calibration=source,
            batch_size=recipe.calibration.batch_size,
            threads=recipe.threads,
            progress=progress("calibration"),
            reference=reference,
            train_progress=progress("fine-tune"),
            sequential=SequentialOptions(recipe.calibration.sequential, recipe.calibration.memory_mb),
        )
        result = Pipeline([build_pass(spec, context) for spec in specs], context)(model)
        if not recipe.validate:
            return model, result, None
        validation = validate(
            reference,
            model,
            data,
            batch_size=recipe.calibration.batch_size,
            latency_runs=recipe.latency_runs,
            threads=recipe.threads,
            progress=progress("validation"),
            metric=metric,
            data_path=data_path,
        ).as_dict()
        return model, result, validation

    search = None
    if recipe.max_drop is None:
        model, result, validation = execute(recipe.passes, model)
    else:
        budget = budget_of(recipe.passes)

        def evaluate(value: float) -> tuple[float, str, tuple[ir.Model, PipelineResult, dict[str, Any] | None]]:
            spec = recipe.passes[budget.index]
            specs = list(recipe.passes)
            specs[budget.index] = dataclasses.replace(spec, config={**spec.config, budget.field: value})
            found = execute(tuple(specs), _io.load(recipe.model))
            assert found[2] is not None
            return (*drop_points(found[2]), found)

        search = search_budget(budget, evaluate, recipe.max_drop)
        model, result, validation = search.result
    if validation is not None:
        _check_fidelity(recipe, validation)
    shapes = {**sample_shapes(source), **recipe.calibration.input_shapes}
    before = model_stats(reference, shapes)
    _io.save(model, output, external_data=recipe.external_data)
    after = model_stats(model, shapes)
    report: dict[str, Any] = {
        "model": recipe.model,
        "output": str(output),
        "recipe": recipe.to_dict(),
        "before": before.as_dict(),
        "after": after.as_dict(),
        "passes": [r.as_dict() for r in result.reports],
        "validation": validation,
        "seconds": time.perf_counter() - started,
    }
    if search is not None:
        report["budget_search"] = search.as_dict(recipe.max_drop)
    if recipe.report:
        write_json(report, recipe.report)
    return RunResult(output, before, after, report)
