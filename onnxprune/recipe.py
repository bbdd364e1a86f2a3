"""Recipes: a YAML description of a whole run, which every CLI verb compiles to (and can print)."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import yaml

from onnxprune import _io, _ort, _scratch
from onnxprune._fields import check_at_least, check_fields, short
from onnxprune._integrity import require_finite_weights
from onnxprune._run_paths import check_recipe_paths
from onnxprune._scratch import Scratch
from onnxprune.budget import budget_of, drop_points, search_budget
from onnxprune.calibration.collect import ProgressFn
from onnxprune.calibration.preprocess import ImagePreprocess
from onnxprune.calibration.sequential import SequentialOptions
from onnxprune.calibration.sources import CalibrationSource, open_source, sample_shapes
from onnxprune.calibration.text import TextSpec
from onnxprune.context import PassContext
from onnxprune.errors import FidelityError, RecipeError
from onnxprune.gates import low_agreement, nonfinite_outputs
from onnxprune.html.profile import compare_op_latency
from onnxprune.metric import load_metric, resolve_metric_spec
from onnxprune.passes import PASSES, OnnxPrunePass
from onnxprune.pipeline import Pipeline, PipelineResult
from onnxprune.presets import check_needs, expand, find_preset
from onnxprune.references import Reference, compare_references, load_reference, pruned_before_quantize
from onnxprune.report import ModelStats, is_html, model_stats, shrinkbench_of, write_report
from onnxprune.verify import Validation, check_model, smoke_test, validate

__all__ = [
    "MAX_RECIPE_BYTES",
    "MAX_RECIPE_NODES",
    "CalibrationSpec",
    "PassSpec",
    "Recipe",
    "RunResult",
    "build_pass",
    "run_recipe",
]

logger = logging.getLogger(__name__)

#: The largest recipe file read (bytes).
MAX_RECIPE_BYTES = 1 << 20
#: The most YAML aliases (``*name``) a recipe may use, and the most values it may hold once they are expanded.
MAX_RECIPE_ALIASES = 64
MAX_RECIPE_NODES = 100_000

#: Given a task description, returns a progress callback (or None).
ProgressFactory = Callable[[str], ProgressFn | None]


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """One pass by registry name, with its config fields."""

    name: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "pass ")


@dataclasses.dataclass(frozen=True)
class CalibrationSpec:
    """Calibration data: a file or folder (``None``: random inputs with a warning).

    ``sequential`` and ``memory_mb`` say how data-fitted passes collect statistics
    (see :class:`onnxprune.calibration.sequential.SequentialOptions`). ``images`` says how folders
    of images become inputs, ``text`` how text files are tokenized; both apply to the calibration
    and the validation data.
    """

    path: str | None = None
    samples: int | None = None
    batch_size: int = 32
    input_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    seed: int = 0
    sequential: bool | None = None
    memory_mb: int = 1024
    images: ImagePreprocess | None = None
    text: TextSpec | None = None

    def __post_init__(self) -> None:
        check_fields(self, "calibration.")
        check_at_least(self, {"samples": 1, "batch_size": 1, "seed": 0, "memory_mb": 64}, "calibration.")
        for name, dims in self.input_shapes.items():
            if not dims or any(d < 1 for d in dims):
                raise RecipeError(f"calibration.input_shapes[{short(name)}]: dims must be >= 1, got {short(dims)}")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A whole run: model in, passes, calibration, validation, model and report out.

    ``metric``: a task metric ``module:function`` evaluated on the validation data (see
    :mod:`onnxprune.metric`). ``strict``: refuse to write a result whose argmax agreement on real
    data is below :data:`onnxprune.gates.LOW_AGREEMENT` (otherwise a warning). ``max_drop``: search
    the strongest compression of the budget pass whose measured drop stays within this many points
    (see :mod:`onnxprune.budget`). ``reference``: the original model, when ``model`` is already pruned;
    the result is validated against it as well (see :mod:`onnxprune.references`). ``preset``: the
    preset (``onnxprune presets``) the passes were expanded from; recorded in the report, its needs
    (calibration data, labels, torch) checked before any pass runs. In a recipe file, ``preset: NAME``
    with optional ``overrides:`` (``PASS.FIELD: VALUE``) may stand instead of ``passes:``.
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
    reference: str | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, {"latency_runs": 1, "threads": 1})
        if self.preset is not None:
            find_preset(self.preset)
        for name in ("model", "output"):
            if not getattr(self, name):
                raise RecipeError(f"{name} must name a file, got ''")
        if self.max_drop is not None and self.max_drop < 0:
            raise RecipeError(f"max_drop must be a number of points >= 0, got {self.max_drop}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML/JSON)."""
        data = dataclasses.asdict(self)
        data["passes"] = [{"name": p.name, "config": dict(p.config)} for p in self.passes]
        data["calibration"]["input_shapes"] = {k: list(v) for k, v in self.calibration.input_shapes.items()}
        images = self.calibration.images
        data["calibration"]["images"] = None if images is None else images.to_dict()
        return data

    def to_yaml(self) -> str:
        """The YAML text that reproduces this run with ``onnxprune run``."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "recipe") -> Recipe:
        """Build a recipe from plain data, rejecting unknown keys and values of the wrong type or range."""
        try:
            return cls._from_dict(data, origin)
        except RecipeError as e:
            text = str(e)
            raise RecipeError(text if text.startswith(f"{origin}:") else f"{origin}: {text}") from e

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], origin: str) -> Recipe:
        if not isinstance(data, Mapping):
            raise RecipeError(f"{origin}: expected a mapping at the top level, got {short(data)}")
        data = dict(data)
        _no_unknown(origin, data, {f.name for f in dataclasses.fields(cls)} | {"overrides"})
        for key in ("model", "output", "passes"):
            if key not in data and not (key == "passes" and data.get("preset") is not None):
                raise RecipeError(f"{origin}: missing '{key}'" + (" (or a 'preset')" if key == "passes" else ""))
        entries = _preset_passes(data) if "passes" not in data else data.pop("passes")
        if "overrides" in data:
            raise RecipeError("overrides apply to a preset: give 'preset: NAME' instead of 'passes:'")
        if not isinstance(entries, list | tuple) or not entries:
            raise RecipeError(f"passes must be a non-empty list of {{name, config}}, got {short(entries)}")
        passes = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                raise RecipeError(f"passes[{i}] needs a 'name' (a string), got {short(entry)}")
            _no_unknown(f"passes[{i}]", entry, {"name", "config"})
            config = entry.get("config") or {}
            if not isinstance(config, Mapping):
                raise RecipeError(f"passes[{i}].config must be a mapping, got {short(config)}")
            passes.append(PassSpec(entry["name"], dict(config)))
        calib = data.pop("calibration", None) or {}
        if not isinstance(calib, Mapping):
            raise RecipeError(f"calibration must be a mapping, got {short(calib)}")
        calib = dict(calib)
        _no_unknown("calibration", calib, {f.name for f in dataclasses.fields(CalibrationSpec)})
        shapes = calib.get("input_shapes") or {}
        if not isinstance(shapes, Mapping) or not all(isinstance(v, list | tuple) for v in shapes.values()):
            raise RecipeError(f"calibration.input_shapes must map input names to lists of dims, got {short(shapes)}")
        calib["input_shapes"] = {k: tuple(v) for k, v in shapes.items()}
        calib["images"] = _sub_spec("calibration.images", calib.get("images"), ImagePreprocess)
        calib["text"] = _sub_spec("calibration.text", calib.get("text"), TextSpec)
        recipe = cls(passes=tuple(passes), calibration=CalibrationSpec(**calib), **data)
        for spec in recipe.passes:
            build_pass(spec)  # fail early on bad names or configs
        return recipe

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Recipe:
        """Read a recipe file: relative paths are taken relative to the recipe's folder, absolute ones kept.

        That holds for the model, output, data, report, metric and the pass configs' file fields
        (a fine-tune's teacher and labels).

        The file may hold at most :data:`MAX_RECIPE_BYTES`, :data:`MAX_RECIPE_ALIASES` YAML aliases
        and :data:`MAX_RECIPE_NODES` values once aliases are expanded.
        """
        path = Path(path)
        recipe = cls.from_dict(_load_yaml(path), str(path))
        base = path.parent
        text = recipe.calibration.text

        def rel(p: str | None) -> str | None:
            return None if p is None else str(base / p)  # an absolute p stays as it is

        return dataclasses.replace(
            recipe,
            model=rel(recipe.model),
            output=rel(recipe.output),
            validation_data=rel(recipe.validation_data),
            report=rel(recipe.report),
            reference=rel(recipe.reference),
            metric=None if recipe.metric is None else resolve_metric_spec(recipe.metric, base),
            calibration=dataclasses.replace(
                recipe.calibration,
                path=rel(recipe.calibration.path),
                text=None if text is None else dataclasses.replace(text, tokenizer=rel(text.tokenizer)),
            ),
            passes=tuple(_relative_paths(spec, rel) for spec in recipe.passes),
        )


class _CappedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than :data:`MAX_RECIPE_ALIASES` aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_RECIPE_ALIASES:
                raise RecipeError(f"more than {MAX_RECIPE_ALIASES} YAML aliases (*name); write the values out")
        return super().compose_node(parent, index)


def _too_large(data: Any, limit: int = MAX_RECIPE_NODES) -> bool:
    """Whether ``data`` holds more than ``limit`` values with shared (aliased) parts counted each time."""
    stack, seen = [data], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return False


def _load_yaml(path: Path) -> Any:
    """The recipe file's data, read with the size, alias and expansion caps (one-line :class:`RecipeError`)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: a recipe holds at most {MAX_RECIPE_BYTES} bytes")
        loader = _CappedLoader(raw.decode("utf-8"))
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except RecipeError as e:
        text = str(e)
        raise RecipeError(text if text.startswith(f"{path}:") else f"{path}: {text}") from e
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise RecipeError(f"{path}: cannot read recipe ({type(e).__name__}: {short(first, 160)[1:-1]})") from e
    if _too_large(data):
        raise RecipeError(f"{path}: more than {MAX_RECIPE_NODES} values once YAML aliases are expanded")
    return data


def _preset_passes(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The passes of the recipe's ``preset`` with its ``overrides`` (popped from ``data``), then ``cleanup``."""
    entries = expand(data["preset"], data.pop("overrides", None) or {}, what="overrides")
    return [*entries, {"name": "cleanup"}]


def _relative_paths(spec: PassSpec, rel: Callable[[str | None], str | None]) -> PassSpec:
    """``spec`` with its path fields (config fields marked ``metadata={"path": True}``) made relative by ``rel``."""
    cls = PASSES.get(spec.name)
    fields = {f.name for f in dataclasses.fields(cls.config_class) if f.metadata.get("path")} if cls else set()
    if not fields & set(spec.config):
        return spec
    return PassSpec(spec.name, {k: rel(v) if k in fields else v for k, v in spec.config.items()})


def _sub_spec(origin: str, data: Any, cls: type[Any]) -> Any:
    """A nested spec (``calibration.images``/``.text``) from a mapping, lists as tuples; ``None`` stays."""
    if data is None or isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise RecipeError(f"{origin} must be a mapping, got {short(data)}")
    _no_unknown(origin, data, {f.name for f in dataclasses.fields(cls)})
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _no_unknown(origin: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise RecipeError(f"{origin}: unknown key {short(unknown[0])} (known: {', '.join(sorted(known))})")


def build_pass(spec: PassSpec, context: PassContext | None = None) -> OnnxPrunePass:
    """Instantiate a registered pass from its name and config fields."""
    cls = PASSES.get(spec.name)
    if cls is None:
        raise RecipeError(f"unknown pass {short(spec.name)} (known: {', '.join(sorted(PASSES))})")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    _no_unknown(f"pass '{spec.name}'", spec.config, fields)
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.config.items()}
    try:
        return cls(cls.config_class(**config), context)
    except RecipeError as e:
        raise RecipeError(f"pass '{spec.name}': {e}") from e
    except (TypeError, ValueError) as e:
        raise RecipeError(f"pass '{spec.name}': {short(str(e), 200)[1:-1]}") from e


@dataclasses.dataclass
class RunResult:
    """What :func:`run_recipe` produced."""

    output: Path
    before: ModelStats
    after: ModelStats
    report: dict[str, Any]
    #: The result compared with more models than the input (see :mod:`onnxprune.references`).
    references: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _open(recipe: Recipe, model: Any, path: str | None, progress: ProgressFn | None = None) -> CalibrationSource:
    spec = recipe.calibration
    return open_source(
        path,
        model,
        samples=spec.samples,
        input_shapes=spec.input_shapes,
        seed=spec.seed,
        images=spec.images,
        text=spec.text,
        progress=progress,
    )


def _describe(source: CalibrationSource, path: str | None) -> dict[str, Any]:
    """What a run read: the path, how many samples and of what kind (images, lines of text, ...)."""
    kind = "random samples" if getattr(source, "random", False) else getattr(source, "kind", "samples")
    return {"path": path, "samples": source.num_samples, "kind": kind}


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


def _refuse_emptied(result: PipelineResult) -> None:
    """Refuse a result in which a pass zeroed every weight of a tensor (``--sparsity 0.999999``, N:M ``0:M``).

    The choice is to refuse rather than to cap: a layer with no weight left computes a constant, which
    no sparsity a user asks for means to do. Tensors that keep at least one weight pass.
    """
    for report in result.reports:
        for entry in report.changed:
            numel, zeros = entry.get("numel"), entry.get("zeros")
            if numel and zeros is not None and zeros >= numel:
                raise RecipeError(
                    f"pass '{report.name}' would zero every weight of '{entry['tensor']}' ({numel} of {numel}); "
                    "lower the sparsity or exclude that layer"
                )


def _check_loadable(model: ir.Model) -> None:
    """With validation off: the onnx checker and an onnxruntime load (no data run) still guard the output."""
    check_model(model, "result")
    _ort.session(model, what="result", lean=True)  # ValidationError when onnxruntime refuses it


def run_recipe(
    recipe: Recipe, *, progress: ProgressFactory | None = None, inputs: Mapping[str, str | os.PathLike] | None = None
) -> RunResult:
    """Load, run the passes, validate with onnxruntime, save atomically and report.

    Nothing is written if validation fails (or, with ``strict``, shows low agreement); no file the
    run reads (model, data, labels, teacher, metric module, and ``inputs`` such as the recipe file)
    is ever an output. Bad outputs, data, labels or metric fail before any pass runs. Weights
    spilled to disk live in the run's scratch folder, removed when the run ends.
    """
    started = time.perf_counter()
    model = _io.load(recipe.model)
    check_recipe_paths(recipe, model, inputs)
    with Scratch().activate() as scratch:
        return _run(recipe, model, scratch, progress or (lambda _task: None), started)


def _run(recipe: Recipe, model: ir.Model, scratch: Scratch, progress: ProgressFactory, started: float) -> RunResult:
    _scratch.sweep(Path(tempfile.gettempdir()))
    reference = _io.load(recipe.model)
    output = Path(recipe.output)
    require_finite_weights(model, recipe.model)
    preset = None if recipe.preset is None else find_preset(recipe.preset)
    calibrated = recipe.calibration.path is not None
    if preset is not None:
        check_needs(preset, calibration=calibrated, labels=None)
    source = _open(recipe, model, recipe.calibration.path, progress("reading calibration data"))
    if preset is not None:
        labelled = getattr(source, "labels", None) is not None or any(s.config.get("labels") for s in recipe.passes)
        check_needs(preset, calibration=calibrated, labels=labelled)
    smoke_test(reference, source, origin=recipe.model, threads=recipe.threads)
    data = source
    if recipe.validation_data:
        data = _open(recipe, reference, recipe.validation_data, progress("reading validation data"))
    data_path = recipe.validation_data or recipe.calibration.path
    original = load_reference(recipe.reference, reference) if recipe.reference else None
    float_models: dict[int, ir.Model] = {}  # per result, the model before quantize (pruned, float)
    extra_outputs: dict[int, dict[str, ir.Model]] = {}  # per result, the models saved next to it
    metric = load_metric(recipe.metric) if recipe.metric else None
    if (metric is not None or recipe.strict) and not recipe.validate:
        raise RecipeError("metric and strict need validation (validate: true)")
    if recipe.strict and getattr(data, "random", False):
        raise RecipeError("--strict needs real validation data (--data PATH or --calib PATH)")
    if recipe.max_drop is not None:
        if not recipe.validate or getattr(data, "random", False):
            raise RecipeError("--max-drop needs validation on real data (--data PATH or --calib PATH)")

    def execute(specs: tuple[PassSpec, ...], model: ir.Model) -> tuple[ir.Model, PipelineResult, dict[str, Any] | None]:
        context = PassContext(
            calibration=source,
            batch_size=recipe.calibration.batch_size,
            threads=recipe.threads,
            progress=progress("calibration"),
            reference=reference,
            train_progress=progress("fine-tune"),
            sequential=SequentialOptions(recipe.calibration.sequential, recipe.calibration.memory_mb),
            scratch=scratch,
        )
        result = Pipeline([build_pass(spec, context) for spec in specs], context)(model)
        _refuse_emptied(result)
        extra_outputs[id(model)] = context.extra_outputs
        if context.float_model is not None and pruned_before_quantize([spec.name for spec in specs]):
            float_models[id(model)] = context.float_model
        if not recipe.validate:
            _check_loadable(model)
            return model, result, None
        validation = validate_against(reference, model).as_dict()
        return model, result, validation

    def validate_against(ref: ir.Model, model: ir.Model) -> Validation:
        return validate(
            ref,
            model,
            data,
            batch_size=recipe.calibration.batch_size,
            latency_runs=recipe.latency_runs,
            threads=recipe.threads,
            progress=progress("validation"),
            metric=metric,
            data_path=data_path,
        )

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
    shapes = {**sample_shapes(source), **recipe.calibration.input_shapes}
    references: list[dict[str, Any]] = []
    if validation is not None:
        _check_fidelity(recipe, validation)
        others = [original] if original is not None else []
        if id(model) in float_models:
            others.append(Reference("pruned float model", float_models[id(model)]))
        references = compare_references(others, model, shapes, validate_against)
        for entry in references:
            _check_fidelity(recipe, entry["validation"])
    before = model_stats(reference, shapes)
    _io.save(model, output, external_data=recipe.external_data)
    after = model_stats(model, shapes)
    extras = []
    for suffix, extra in extra_outputs.get(id(model), {}).items():
        extras.append(str(output.with_name(f"{output.stem}{suffix}{output.suffix}")))
        _io.save(extra, extras[-1], external_data=recipe.external_data)
    report: dict[str, Any] = {
        "model": recipe.model,
        "output": str(output),
        "recipe": recipe.to_dict(),
        "before": before.as_dict(),
        "after": after.as_dict(),
        "shrinkbench": {
            "before": shrinkbench_of(reference, before).as_dict(),
            "after": shrinkbench_of(model, after).as_dict(),
        },
        "passes": [r.as_dict() for r in result.reports],
        "validation": validation,
        "data": {"calibration": _describe(source, recipe.calibration.path), "validation": _describe(data, data_path)},
        "seconds": time.perf_counter() - started,
    }
    if recipe.preset is not None:
        report["preset"] = recipe.preset
    if extras:
        report["extra_outputs"] = extras
    if search is not None:
        report["budget_search"] = search.as_dict(recipe.max_drop)
    if references:
        report["references"] = references
    if recipe.report:
        op_ms = compare_op_latency(reference, model, data, threads=recipe.threads) if is_html(recipe.report) else None
        write_report(report, recipe.report, op_latency=op_ms)
    return RunResult(output, before, after, report, references)
