"""Shared pieces of the ``onnxprune`` command line.

The group, logging, progress, errors, and the options every model-writing verb takes (one ``job``),
compiled into a :class:`Recipe` and run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import onnx_ir as ir
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onnxprune._cli_data import CALIB_TEXT_OPTION, SPEC_OPTIONS, pop_data_options
from onnxprune._cli_examples import epilog
from onnxprune._field_docs import describe
from onnxprune._providers import EP_CHOICES, EP_HELP
from onnxprune.calibration.preprocess import ImagePreprocess
from onnxprune.calibration.sources import (
    check_input_shapes,
    input_specs,
    open_source,
    parse_input_shapes,
    sample_shapes,
)
from onnxprune.calibration.text import TextSpec
from onnxprune.errors import FidelityError, OnnxPruneError
from onnxprune.gates import low_agreement, nonfinite_outputs
from onnxprune.metric import resolve_metric_spec
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, build_pass, run_recipe
from onnxprune.report import ModelStats, comparison_table

__all__ = [
    "Job",
    "absolute",
    "cli",
    "console",
    "described_by",
    "emit",
    "ep_option",
    "fidelity_verdict",
    "handle_errors",
    "job_options",
    "one_line",
    "out",
    "progress_bars",
    "real_shapes",
    "run_and_show",
]

logger = logging.getLogger("onnxprune")
console = Console(stderr=True)
out = Console()


def _setup_logging(quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, handlers=[RichHandler(console=console, show_path=False)], format="%(message)s", force=True
    )
    warnings.showwarning = _log_warning


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any) -> None:
    """Library warnings (numpy overflow, onnx_ir notes) as one debug line each, never raw on stderr.

    Their consequences are caught where they matter (NaN/inf outputs fail validation with one line).
    """
    logger.debug("%s: %s (%s:%d)", category.__name__, message, filename, lineno)


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str], Any]]:
    if not enabled:
        yield lambda _task: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def factory(name: str) -> Callable[..., None]:
            def update(done: int, total: int, loss: float | None = None) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total)
                label = name if loss is None else f"{name} (loss {loss:.4g})"
                progress.update(tasks[name], completed=done, total=total, description=label)

            return update

        yield factory


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors as one line on stderr: exit 2 for bad input, 3 for a missed fidelity gate, 1 for internal failures."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = _state(click.get_current_context())["debug"]
        try:
            return fn(*args, **kwargs)
        except OnnxPruneError as e:
            if debug:
                raise
            click.echo(f"onnxprune: error: {one_line(e)}", err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except MemoryError as e:  # sizes come from the input (declared dims, data): too big for this machine
            if debug:
                raise
            click.echo(f"onnxprune: error: out of memory: {one_line(e)} (input too large for this machine?)", err=True)
            sys.exit(2)
        except Exception as e:
            if debug:
                raise
            click.echo(f"onnxprune: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug)", err=True)
            sys.exit(1)

    return wrapper


#: The longest error message printed: echoed values never flood the terminal.
MAX_MESSAGE = 480


def one_line(message: object) -> str:
    """``message`` on one line, at most :data:`MAX_MESSAGE` characters.

    A longer one loses its middle, not its end: a long path comes first and the reason after it.
    """
    text = " ".join(str(message).split())
    if len(text) <= MAX_MESSAGE:
        return text
    head = MAX_MESSAGE * 2 // 3
    return f"{text[:head]} ... {text[len(text) - (MAX_MESSAGE - head - 5) :]}"


#: click >= 8.2 raises this for a bare command that shows its help (older click prints the help itself)
_NO_ARGS: tuple[type[Exception], ...] = tuple(
    e for e in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if e is not None
)


class _OneLineUsageError(click.ClickException):
    """A click usage error shown as ``onnxprune: error: ...`` on one line (the usage only with ``--help``)."""

    exit_code = 2

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        ctx = getattr(error, "ctx", None)
        self.hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""

    def show(self, file: Any = None) -> None:
        click.echo(f"onnxprune: error: {one_line(self.format_message())}{self.hint}", err=True)


@contextlib.contextmanager
def _usage_errors_on_one_line() -> Iterator[None]:
    try:
        yield
    except (_OneLineUsageError, *_NO_ARGS):
        raise  # a bare ``onnxprune`` (or a verb without arguments) shows its help
    except click.ClickException as e:
        raise _OneLineUsageError(e) from e


def _state(ctx: click.Context) -> dict[str, Any]:
    """The run's settings (``quiet``, ``debug``), kept on the root context (set by the group, updated by verbs)."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {"quiet": False, "debug": False}
    return root.obj


def _late_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    """Callback of ``--quiet``/``--debug`` given after a verb: the same effect as before it."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            state = _state(ctx)
            state[name] = True
            _setup_logging(state["quiet"], state["debug"])

    return callback


#: Options every verb also takes after its name (``onnxprune prune ... --quiet``).
_GLOBAL_FLAGS = (
    (("--quiet", "-q"), "quiet", "Only errors; no progress bars (also accepted before the verb)."),
    (("--debug",), "debug", "Debug logging and full tracebacks (also accepted before the verb)."),
)


class _Group(click.Group):
    """The ``onnxprune`` group: every click usage error (parsing or raised by a verb) is one line, exit 2.

    Every verb added to it also takes ``--quiet`` and ``--debug`` after its name, and its ``--help``
    ends with its examples (``_cli_examples``).
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if cmd.epilog is None:
            cmd.epilog = epilog(name or cmd.name or "")
        taken = {opt for param in cmd.params for opt in param.opts}
        for opts, key, text in _GLOBAL_FLAGS:
            if not taken & set(opts):
                flag = click.Option(opts, is_flag=True, expose_value=False, callback=_late_flag(key), help=text)
                cmd.params.append(flag)
        super().add_command(cmd, name)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _usage_errors_on_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_errors_on_one_line():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="Only errors; no progress bars.")
@click.option("--debug", is_flag=True, help="Debug logging and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """Prune, validate and inspect ONNX models."""
    _setup_logging(quiet, debug)
    ctx.obj = {"quiet": quiet, "debug": debug}


def described_by(
    configs: Mapping[str, type], fields: Mapping[str, str] | None = None
) -> Callable[[click.Command], click.Command]:
    """Give a verb's options without a help text their config field's description (and vocabulary).

    ``configs`` maps a label (``structured``) to a config class; an option sets the field of its own
    name (``--round-to``: ``round_to``) unless ``fields`` says otherwise. A field that only some of
    the configs have is labelled (``Structured: ...``). The command keeps the mapping in
    ``described`` (option name -> (config class, field)), for tests.
    """

    def apply(cmd: click.Command) -> click.Command:
        described: dict[str, tuple[type, str]] = {}
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.help is not None or param.name is None:
                continue
            field = (fields or {}).get(param.name, param.name)
            owners = [(label, cls) for label, cls in configs.items() if describe(cls, field)]
            if not owners:
                continue
            cls = owners[0][1]
            text = describe(cls, field)
            if len(owners) < len(configs):
                label = ", ".join(lb for lb, _ in owners)
                text = f"{label[0].upper()}{label[1:]}: {text[0].lower() if text[1:2].islower() else text[0]}{text[1:]}"
            defaults = {lb: _default(c, field) for lb, c in owners}
            if param.default in (None, getattr(click.core, "UNSET", None)) and len(set(defaults.values())) > 1:
                text += " Default: " + "; ".join(f"{lb}: {v}" for lb, v in defaults.items()) + "."
            param.help = text
            described[param.name] = (cls, field)
        flags = {field: _long_flag(cmd, name) for name, (_, field) in described.items() if "_" in field}
        for param in cmd.params:
            if param.name in described and isinstance(param, click.Option) and param.help:
                for field, flag in flags.items():  # multi-word field names in the text become their flags
                    param.help = re.sub(rf"(?<![\w-]){field}(?![\w-])", flag, param.help)
        cmd.described = described  # type: ignore[attr-defined]
        return cmd

    return apply


def _long_flag(cmd: click.Command, name: str) -> str:
    param = next(p for p in cmd.params if p.name == name)
    return max(param.opts, key=len)


def _default(config_class: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config_class) if f.name == name)


#: ``--ep cpu|cuda|tensorrt``: the verb receives the name; ``_providers.resolve_ep`` turns it into providers.
ep_option = click.option("--ep", type=click.Choice(EP_CHOICES), default="cpu", show_default=True, help=EP_HELP)


def absolute(path: str | None) -> str | None:
    """Absolute form of a path, so that a dumped recipe works from any folder."""
    return None if path is None else str(Path(path).resolve())


def run_and_show(ctx: click.Context, recipe: Recipe, inputs: dict[str, str] | None = None) -> None:
    """Run the recipe (``inputs``: files read besides the recipe's, e.g. the recipe file) and print the result."""
    quiet = ctx.obj["quiet"]
    with progress_bars(not quiet) as factory:
        result = run_recipe(recipe, progress=factory, inputs=inputs)
    if not quiet:
        for role, read in result.report["data"].items():
            if read["path"] is not None and (role == "calibration" or read != result.report["data"]["calibration"]):
                out.print(f"{role} data: {read['samples']} {read['kind']} from {read['path']}")
        out.print(comparison_table(result.before, result.after, result.report["validation"]))
        for entry in result.references:
            table = comparison_table(ModelStats(**entry["stats"]), result.after, entry["validation"])
            table.title = f"onnxprune: {entry['what']} / after"
            out.print(table)
        for report in result.report["passes"]:
            summary = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report["summary"].items()
            )
            out.print(f"[bold]{report['name']}[/bold] ({report['seconds']:.2f} s): {summary}")
            for entry in [e for e in report["changed"] if "rank" in e][:20]:
                out.print(
                    f"  factorized {entry['tensor']} ({entry['op']}): rank {entry['rank']} of {entry['full_rank']}, "
                    f"energy kept {entry['energy_kept']:.3f}, weight error {entry['weight_error']:.3f}"
                    + (f", output error {entry['output_error']:.3f}" if "output_error" in entry else "")
                )
            for entry in [e for e in report["changed"] if "unit" in e][:20]:
                measured = f", alone: rel. MSE {entry['rel_mse']:.4g}" if entry.get("rel_mse") is not None else ""
                nodes = ", ".join(entry["nodes"])
                out.print(f"  dropped {entry['unit']} ({nodes}): {entry['params']} params{measured}")
            for skip in report["skipped"][:20]:
                out.print(f"  skipped {skip['tensor']} ({skip['op']} {skip['node']}): {skip['reason']}")
            if len(report["skipped"]) > 20:
                out.print(f"  ... and {len(report['skipped']) - 20} more skipped (see --report)")
        search = result.report.get("budget_search")
        if search:
            out.print(
                f"[bold]budget search[/bold]: {search['field']}={search['found']:.4g} drops "
                f"{search['measured_drop']:.3g} {search['measure']} (limit {search['max_drop']:g}, "
                f"{len(search['trials'])} trials)"
            )
        out.print(f"wrote {result.output}")


def real_shapes(model: ir.Model, data: str | None, input_shape: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Per-sample input shapes to count MACs at: ``--input-shape``, else the data's first sample."""
    given = parse_input_shapes(input_shape)
    check_input_shapes(input_specs(model), given)
    if data is None:
        return given
    return {**sample_shapes(open_source(data, model, samples=1, input_shapes=given)), **given}


def fidelity_verdict(validation: dict[str, Any], missed: list[str]) -> None:
    """Warn about low agreement on real data; exit 3 (one line) for NaN/inf outputs or a missed threshold."""
    for line in low_agreement(validation):
        logger.warning("LOW FIDELITY: %s: the candidate disagrees with the reference", line)
    broken = nonfinite_outputs(validation)
    if broken:
        raise FidelityError(broken[0])
    if missed:
        more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        raise FidelityError(f"--fail-below: {missed[0]}{more}")


@dataclasses.dataclass(frozen=True)
class Job:
    """The options every model-writing verb shares: data, selection, runtime and outputs."""

    calib: str | None
    images: ImagePreprocess | None
    text: TextSpec | None
    samples: int | None
    batch_size: int
    input_shape: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    keep_first: bool
    keep_last: bool
    data: str | None
    threads: int | None
    external_data: bool | None
    report: str | None
    dump_recipe: bool
    sequential: bool | None
    memory_mb: int
    metric: str | None
    strict: bool
    max_drop: float | None

    @property
    def selection(self) -> dict[str, Any]:
        """Which weights a pass may touch, as pass config fields."""
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "keep_first": self.keep_first,
            "keep_last": self.keep_last,
        }


JOB_OPTIONS = (
    click.option(
        "--calib", type=click.Path(), help="Calibration .npz/.npy file or folder, or images (default: random inputs)."
    ),
    CALIB_TEXT_OPTION,
    *SPEC_OPTIONS,
    click.option("--samples", type=click.IntRange(1), help="Use at most N calibration samples (a seeded pick)."),
    click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True),
    click.option("--input-shape", multiple=True, help="Fix dynamic dims: NAME=1,3,224,224 (repeatable)."),
    click.option("--include", multiple=True, help="Only change nodes/tensors matching this glob (repeatable)."),
    click.option("--exclude", multiple=True, help="Never change nodes/tensors matching this glob (repeatable)."),
    click.option("--keep-first", is_flag=True, help="Keep the first weight layer dense."),
    click.option("--keep-last", is_flag=True, help="Keep the last weight layer dense."),
    click.option("--data", type=click.Path(), help="Validation data (default: the calibration data)."),
    click.option("--threads", type=click.IntRange(1), help="onnxruntime threads."),
    click.option(
        "--external-data/--no-external-data",
        default=None,
        help="Force external data on or off (default: as the input model, else by size).",
    ),
    click.option(
        "--report",
        type=click.Path(dir_okay=False),
        help="Write the report here: JSON, or one self-contained HTML page (figures, recipe) for a .html path.",
    ),
    click.option("--dump-recipe", is_flag=True, help="Print the recipe YAML that reproduces this run, and exit."),
    click.option(
        "--sequential/--one-shot",
        default=None,
        help="Calibrate data-fitted passes block by block on the model with the earlier blocks already "
        "pruned (sequential), or every block on the unchanged model (one-shot). Default: what each pass "
        "measured best (SparseGPT, refit, low-rank: sequential; Wanda: one-shot).",
    ),
    click.option(
        "--memory-mb",
        type=click.IntRange(64),
        default=1024,
        show_default=True,
        help="Memory budget for one block of calibration statistics and one batch of activations.",
    ),
    click.option(
        "--metric",
        metavar="MODULE:FUNCTION",
        help="Task metric on the validation data: function(outputs, data_path) -> float, higher is better "
        "(MODULE: dotted name or path/to/file.py).",
    ),
    click.option(
        "--strict",
        is_flag=True,
        help="Refuse to write (exit 3) when argmax agreement on real validation data is below 0.9.",
    ),
    click.option(
        "--max-drop",
        type=click.FloatRange(0),
        help="Find the strongest compression (up to the one given) whose drop on the validation data stays "
        "within F points: top-1 with labels, --metric x100, else argmax agreement. Bisection; reported.",
    ),
)


def job_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared options to a verb and hand them to it as one ``job`` argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["images"], kwargs["text"] = pop_data_options(kwargs)
        job = Job(**{field.name: kwargs.pop(field.name) for field in dataclasses.fields(Job)})
        return fn(*args, job=job, **kwargs)

    for option in reversed(JOB_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def emit(
    ctx: click.Context,
    job: Job,
    model: str,
    output: str,
    *specs: PassSpec,
    reference: str | None = None,
    preset: str | None = None,
) -> None:
    """Build the recipe for the passes (plus cleanup), then print it (``--dump-recipe``) or run it.

    ``reference``: the original model, when MODEL is already pruned (the result is validated against both).
    ``preset``: the preset the passes were expanded from (recorded in the recipe and the report).
    """
    path = absolute if job.dump_recipe else (lambda p: p)
    recipe = Recipe(
        model=path(model),
        output=path(output),
        passes=(*specs, PassSpec("cleanup")),
        calibration=CalibrationSpec(
            path(job.calib),
            job.samples,
            job.batch_size,
            parse_input_shapes(job.input_shape),
            sequential=job.sequential,
            memory_mb=job.memory_mb,
            images=job.images,
            text=None if job.text is None else dataclasses.replace(job.text, tokenizer=path(job.text.tokenizer)),
        ),
        validation_data=path(job.data),
        threads=job.threads,
        external_data=job.external_data,
        report=path(job.report),
        metric=resolve_metric_spec(job.metric) if job.metric and job.dump_recipe else job.metric,
        strict=job.strict,
        max_drop=job.max_drop,
        reference=path(reference),
        preset=preset,
    )
    for spec in recipe.passes:
        build_pass(spec)  # validates the pass configs before anything is printed or run
    if job.dump_recipe:
        click.echo(recipe.to_yaml(), nl=False)
        return
    run_and_show(ctx, recipe)
