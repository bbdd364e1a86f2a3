"""The ``onnxprune`` command line: every verb compiles to a :class:`Recipe` and runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from onnxprune import _io
from onnxprune.calibration.sources import open_source, parse_input_shapes
from onnxprune.errors import OnnxPruneError, RecipeError
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, run_recipe
from onnxprune.report import comparison_table, model_stats

__all__ = ["main"]

console = Console(stderr=True)
out = Console()


def _setup_logging(quiet: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, handlers=[RichHandler(console=console, show_path=False)], format="%(message)s", force=True
    )


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], Any]]:
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


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors into one line on stderr: exit 2 for bad input, 1 for internal failures."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except OnnxPruneError as e:
            if debug:
                raise
            click.echo(f"onnxprune: error: {e}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:
            if debug:
                raise
            click.echo(f"onnxprune: internal error: {type(e).__name__}: {e} (rerun with --debug)", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quiet", "-q", is_flag=True, help="Only errors; no progress bars.")
@click.option("--debug", is_flag=True, help="Debug logging and full tracebacks.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """Prune, validate and inspect ONNX models."""
    _setup_logging(quiet, debug)
    ctx.obj = {"quiet": quiet}


def _parse_pattern(pattern: str) -> tuple[int, int]:
    n, sep, m = pattern.partition(":")
    if not sep or not n.isdigit() or not m.isdigit():
        raise click.BadParameter(f"'{pattern}' is not N:M (for example 2:4)", param_hint="--pattern")
    return int(n), int(m)


def _absolute(path: str | None) -> str | None:
    """Absolute form of a path, so that a dumped recipe works from any folder."""
    return None if path is None else str(Path(path).resolve())


def _run_and_show(ctx: click.Context, recipe: Recipe) -> None:
    quiet = ctx.obj["quiet"]
    with _progress(not quiet) as factory:
        result = run_recipe(recipe, progress=factory)
    if not quiet:
        out.print(comparison_table(result.before, result.after, result.report["validation"]))
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
            for skip in report["skipped"][:20]:
                out.print(f"  skipped {skip['tensor']} ({skip['op']} {skip['node']}): {skip['reason']}")
            if len(report["skipped"]) > 20:
                out.print(f"  ... and {len(report['skipped']) - 20} more skipped (see --report)")
        out.print(f"wrote {result.output}")


def _channel_spec(
    ratio: float | None,
    target_flops: float | None,
    target_params: float | None,
    importance: str,
    scope: str,
    normalize: str,
    round_to: int,
    min_channels: int,
    *,
    reconstruct: bool,
    verify: bool,
    exclude: tuple[str, ...],
) -> PassSpec:
    if importance == "sparsegpt":
        raise click.UsageError("--importance sparsegpt is unstructured; use l2, wanda, ... with --channels")
    config: dict[str, Any] = {
        "ratio": ratio or 0.0,
        "importance": "l2" if importance == "magnitude" else importance,
        "scope": "global" if scope == "global" else "uniform",
        "round_to": round_to,
        "min_channels": min_channels,
        "reconstruct": reconstruct,
        "verify": verify,
        "exclude": list(exclude),
    }
    if normalize != "none":
        config["normalize"] = "max" if normalize == "l2" else normalize
    if target_flops is not None:
        config["target_flops"] = target_flops
    if target_params is not None:
        config["target_params"] = target_params
    return PassSpec("channels", config)


@dataclasses.dataclass(frozen=True)
class _Job:
    """The options every model-writing verb shares: data, selection, runtime and outputs."""

    calib: str | None
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

    @property
    def selection(self) -> dict[str, Any]:
        """Which weights a pass may touch, as pass config fields."""
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "keep_first": self.keep_first,
            "keep_last": self.keep_last,
        }


_JOB_OPTIONS = (
    click.option("--calib", type=click.Path(), help="Calibration .npz/.npy file or folder (default: random inputs)."),
    click.option("--samples", type=click.IntRange(1), help="Use at most N calibration samples."),
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
    click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON report here."),
    click.option("--dump-recipe", is_flag=True, help="Print the recipe YAML that reproduces this run, and exit."),
)


def _job_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared options to a verb and hand them to it as one ``job`` argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        job = _Job(**{field.name: kwargs.pop(field.name) for field in dataclasses.fields(_Job)})
        return fn(*args, job=job, **kwargs)

    for option in reversed(_JOB_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _emit(ctx: click.Context, job: _Job, model: str, output: str, *specs: PassSpec) -> None:
    """Build the recipe for the passes (plus cleanup), then print it (``--dump-recipe``) or run it."""
    path = _absolute if job.dump_recipe else (lambda p: p)
    recipe = Recipe(
        model=path(model),
        output=path(output),
        passes=(*specs, PassSpec("cleanup")),
        calibration=CalibrationSpec(path(job.calib), job.samples, job.batch_size, parse_input_shapes(job.input_shape)),
        validation_data=path(job.data),
        threads=job.threads,
        external_data=job.external_data,
        report=path(job.report),
    )
    Recipe.from_dict(recipe.to_dict())  # validates the pass configs
    if job.dump_recipe:
        click.echo(recipe.to_yaml(), nl=False)
        return
    _run_and_show(ctx, recipe)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the pruned model.")
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), help="Unstructured sparsity (fraction zeroed).")
@click.option("--pattern", help="N:M semi-structured sparsity, e.g. 2:4.")
@click.option(
    "--channels",
    type=click.FloatRange(0, 1, max_open=True),
    help="Structured: fraction of each coupled group's channels removed (tensors shrink).",
)
@click.option(
    "--target-flops", type=click.FloatRange(0, 1, min_open=True), help="Structured: keep this fraction of MACs."
)
@click.option(
    "--target-params", type=click.FloatRange(0, 1, min_open=True), help="Structured: keep this fraction of parameters."
)
@click.option(
    "--importance",
    type=click.Choice(["magnitude", "wanda", "sparsegpt", "l1", "l2", "bn", "act_mean", "apoz", "density"]),
    default="magnitude",
    show_default=True,
    help="sparsegpt: SparseGPT with weight reconstruction (ignores --scope). Structured: magnitude (=l2), "
    "l1, bn (BatchNorm gamma), act_mean (DropNet), apoz/density, wanda (|W|·|X|).",
)
@click.option(
    "--scope",
    type=click.Choice(["global", "layer"]),
    default="layer",
    show_default=True,
    help="layer: the same fraction everywhere; global: one threshold over normalized scores.",
)
@click.option(
    "--normalize",
    type=click.Choice(["none", "mean", "l2", "max"]),
    default="none",
    show_default=True,
    help="With --scope global: per-layer score normalization.",
)
@click.option(
    "--round-to",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Structured: kept channels are multiples of N.",
)
@click.option(
    "--min-channels",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Structured: keep at least N per group.",
)
@click.option(
    "--no-reconstruct", is_flag=True, help="Structured: do not refit consumers on the calibration data (ridge)."
)
@click.option("--verify", is_flag=True, help="Structured: check that the shrunk model equals the masked model.")
@click.option(
    "--finetune-steps",
    type=click.IntRange(1),
    help="Then fine-tune N steps by distillation from the original model (needs torch and --calib).",
)
@click.option("--finetune-lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@_job_options
@click.pass_context
@_handle_errors
def prune(
    ctx: click.Context,
    model: str,
    output: str,
    sparsity: float | None,
    pattern: str | None,
    channels: float | None,
    target_flops: float | None,
    target_params: float | None,
    importance: str,
    scope: str,
    normalize: str,
    round_to: int,
    min_channels: int,
    no_reconstruct: bool,
    verify: bool,
    finetune_steps: int | None,
    finetune_lr: float,
    job: _Job,
) -> None:
    """Prune MODEL (unstructured --sparsity, N:M --pattern, or structured --channels) and write OUTPUT."""
    structured = channels is not None or target_flops is not None or target_params is not None
    if sum((sparsity is not None, pattern is not None, structured)) != 1:
        raise click.UsageError("give exactly one of --sparsity, --pattern or --channels/--target-flops/--target-params")
    if verify and not structured:
        raise click.UsageError("--verify checks structured pruning (--channels/--target-flops)")
    selection = job.selection
    if structured:
        spec = _channel_spec(
            channels,
            target_flops,
            target_params,
            importance,
            scope,
            normalize,
            round_to,
            min_channels,
            reconstruct=job.calib is not None and not no_reconstruct,
            verify=verify,
            exclude=job.exclude,
        )
    elif importance not in ("magnitude", "wanda", "sparsegpt"):
        raise click.UsageError(f"--importance {importance} is for structured pruning (--channels)")
    elif importance == "sparsegpt":
        target = {"sparsity": sparsity} if pattern is None else dict(zip("nm", _parse_pattern(pattern), strict=True))
        spec = PassSpec("sparsegpt", {**target, **selection})
    elif pattern is not None:
        n, m = _parse_pattern(pattern)
        spec = PassSpec("nm", {"n": n, "m": m, "importance": importance, **selection})
    else:
        spec = PassSpec(
            "unstructured",
            {"sparsity": sparsity, "importance": importance, "scope": scope, "normalize": normalize, **selection},
        )
    specs = [spec]
    if finetune_steps is not None:
        specs.append(PassSpec("finetune", {"steps": finetune_steps, "lr": finetune_lr, "batch_size": job.batch_size}))
    _emit(ctx, job, model, output, *specs)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option(
    "--energy",
    type=click.FloatRange(0, 1, min_open=True),
    help="Per layer, the smallest rank keeping this fraction of the squared singular values.",
)
@click.option("--rank", type=click.IntRange(1), help="The same rank for every layer.")
@click.option(
    "--target-params", type=click.FloatRange(0, 1, min_open=True), help="Keep this fraction of the model's parameters."
)
@click.option("--target-flops", type=click.FloatRange(0, 1, min_open=True), help="Keep this fraction of the MACs.")
@click.option(
    "--activation-aware",
    is_flag=True,
    help="Whiten with the calibration Gram: truncate for the layer's output error, not the weight's.",
)
@click.option("--energy-transfer", is_flag=True, help="Rescale kept singular values to conserve the energy (LRPET).")
@click.option(
    "--bn-rectify/--no-bn-rectify",
    default=True,
    show_default=True,
    help="Weight rows by a following BatchNorm's scale during the SVD (LRPET).",
)
@click.option(
    "--round-to", type=click.IntRange(1), default=8, show_default=True, help="Round chosen ranks up to multiples of N."
)
@click.option("--whitening", type=click.Choice(["cholesky", "eigen"]), default="cholesky", show_default=True)
@click.option("--allow-larger", is_flag=True, help="Factorize even where the rank saves no parameters or MACs.")
@_job_options
@click.pass_context
@_handle_errors
def lowrank(
    ctx: click.Context,
    model: str,
    output: str,
    energy: float | None,
    rank: int | None,
    target_params: float | None,
    target_flops: float | None,
    activation_aware: bool,
    energy_transfer: bool,
    bn_rectify: bool,
    round_to: int,
    whitening: str,
    allow_larger: bool,
    job: _Job,
) -> None:
    """Factorize MODEL's Gemm/MatMul/Conv weights by truncated SVD (two nodes per layer) and write OUTPUT."""
    modes = {"energy": energy, "rank": rank, "target_params": target_params, "target_flops": target_flops}
    given = {k: v for k, v in modes.items() if v is not None}
    if len(given) != 1:
        raise click.UsageError("give exactly one of --energy, --rank, --target-params or --target-flops")
    config = {
        **given,
        "round_to": round_to,
        "activation_aware": activation_aware,
        "whitening": whitening,
        "energy_transfer": energy_transfer,
        "bn_rectify": bn_rectify,
        "only_if_smaller": not allow_larger,
        **job.selection,
    }
    _emit(ctx, job, model, output, PassSpec("lowrank", config))


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option(
    "--teacher",
    required=True,
    type=click.Path(dir_okay=False),
    help="The original (unpruned) model to distill from.",
)
@click.option("--labels", type=click.Path(dir_okay=False), help=".npz with one array of N integer labels (adds CE).")
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True, help="Optimizer steps.")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), help="Passes over the data instead of --steps.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option(
    "--schedule", type=click.Choice(["constant", "cosine", "slr", "silo"]), default="cosine", show_default=True
)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--distill", type=click.Choice(["mse", "kl"]), default="mse", show_default=True)
@click.option("--distill-weight", type=click.FloatRange(0), default=1.0, show_default=True, help="With --labels.")
@click.option("--feature", "features", multiple=True, help="Also distill this intermediate value (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--final-sparsity",
    type=click.FloatRange(0, 1, max_open=True),
    help="Prune further while training, to this sparsity (cubic schedule; with --cycles: IMP).",
)
@click.option("--cycles", type=click.IntRange(1), default=1, show_default=True, help="Prune-retrain cycles (IMP).")
@click.option("--rewind", is_flag=True, help="IMP: reset surviving weights to the starting values after each prune.")
@click.option("--drop-out", type=click.FloatRange(0, 1), default=0.0, help="Drop Pruning: drop-out probability.")
@click.option("--drop-in", type=click.FloatRange(0, 1), default=0.0, help="Drop Pruning: drop-in probability.")
@_job_options
@click.pass_context
@_handle_errors
def finetune(
    ctx: click.Context,
    model: str,
    output: str,
    teacher: str,
    labels: str | None,
    steps: int,
    epochs: float | None,
    lr: float,
    schedule: str,
    optimizer: str,
    weight_decay: float,
    distill: str,
    distill_weight: float,
    features: tuple[str, ...],
    seed: int,
    final_sparsity: float | None,
    cycles: int,
    rewind: bool,
    drop_out: float,
    drop_in: float,
    job: _Job,
) -> None:
    """Fine-tune MODEL by distillation from TEACHER on the calibration data and write OUTPUT (same graph)."""
    if job.calib is None:
        raise click.UsageError("finetune needs --calib PATH (the inputs to train on)")
    config: dict[str, Any] = {
        "steps": steps,
        "epochs": epochs,
        "lr": lr,
        "schedule": schedule,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "teacher": _absolute(teacher),
        "labels": _absolute(labels),
        "distill": distill,
        "distill_weight": distill_weight,
        "features": list(features),
        "seed": seed,
        "batch_size": job.batch_size,
        "threads": job.threads,
        "final_sparsity": final_sparsity,
        "cycles": cycles,
        "rewind": rewind,
        "drop_out": drop_out,
        "drop_in": drop_in,
    }
    _emit(ctx, job, model, output, PassSpec("finetune", config))


@cli.command("run")
@click.argument("recipe_path", metavar="RECIPE.yaml", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Override the recipe's output path.")
@click.option("--report", type=click.Path(dir_okay=False), help="Override the recipe's report path.")
@click.pass_context
@_handle_errors
def run_cmd(ctx: click.Context, recipe_path: str, output: str | None, report: str | None) -> None:
    """Run a recipe file (see ``prune --dump-recipe``)."""
    if not Path(recipe_path).is_file():
        raise RecipeError(f"{recipe_path}: no such recipe file")
    recipe = Recipe.from_yaml(recipe_path)
    overrides = {k: v for k, v in (("output", output), ("report", report)) if v is not None}
    _run_and_show(ctx, dataclasses.replace(recipe, **overrides))


@cli.command("validate")
@click.argument("ref", type=click.Path(dir_okay=False))
@click.argument("cand", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), help="Input data .npz/.npy file or folder (default: random inputs).")
@click.option("--samples", type=click.IntRange(1))
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--input-shape", multiple=True, help="Fix dynamic dims: NAME=1,3,224,224 (repeatable).")
@click.option("--threads", type=click.IntRange(1))
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.pass_context
@_handle_errors
def validate_cmd(
    ctx: click.Context,
    ref: str,
    cand: str,
    data: str | None,
    samples: int | None,
    batch_size: int,
    input_shape: tuple[str, ...],
    threads: int | None,
    report: str | None,
) -> None:
    """Compare CAND with REF in onnxruntime: checker, fidelity, latency, sizes."""
    from onnxprune.report import write_json
    from onnxprune.verify import validate

    shapes = parse_input_shapes(input_shape)
    reference, candidate = _io.load(ref), _io.load(cand)
    source = open_source(data, reference, samples=samples, input_shapes=shapes)
    with _progress(not ctx.obj["quiet"]) as factory:
        result = validate(
            reference, candidate, source, batch_size=batch_size, threads=threads, progress=factory("validation")
        ).as_dict()
    before, after = model_stats(reference, shapes), model_stats(candidate, shapes)
    if report:
        write_json(
            {"ref": ref, "cand": cand, "before": before.as_dict(), "after": after.as_dict(), "validation": result},
            report,
        )
    if not ctx.obj["quiet"]:
        out.print(comparison_table(before, after, result))


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--input-shape", multiple=True, help="Fix dynamic dims for FLOPs: NAME=1,3,224,224.")
@click.option("--groups", is_flag=True, help="List the coupled channel groups and why groups cannot be pruned.")
@click.option("--ranks", is_flag=True, help="Per weight: SVD ranks holding 90/95/99% energy, break-even rank.")
@_handle_errors
def inspect(model: str, as_json: bool, input_shape: tuple[str, ...], groups: bool, ranks: bool) -> None:
    """Ops, parameters, FLOPs and prunable weights of MODEL."""
    from onnxprune.inspect import channel_groups, inspect_model

    if ranks:
        from onnxprune.passes.lowrank import layer_spectra

        spectra = layer_spectra(_io.load(model))
        if as_json:
            click.echo(json.dumps(spectra, indent=2))
        else:
            _print_spectra(model, spectra)
        return

    if groups:
        found = channel_groups(_io.load(model), parse_input_shapes(input_shape))
        if as_json:
            click.echo(json.dumps(found, indent=2))
        else:
            _print_groups(model, found)
        return
    info = inspect_model(_io.load(model), parse_input_shapes(input_shape))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{model}")
    table.add_column("item")
    table.add_column("value", justify="right")
    for key in ("opset", "nodes", "params", "nonzero_params", "macs", "flops"):
        table.add_row(key, str(info[key]))
    table.add_row("ops", ", ".join(f"{k}×{v}" for k, v in info["ops"].items()))
    out.print(table)
    weights = Table(title="prunable weights")
    for column in ("tensor", "op", "shape", "nodes", "sparsity"):
        weights.add_column(column)
    for w in info["prunable"]:
        weights.add_row(w["tensor"], w["op"], str(w["shape"]), ", ".join(w["nodes"]), f"{w['sparsity']:.3f}")
    out.print(weights)
    for s in info["skipped"]:
        out.print(f"not prunable: {s['tensor']} ({s['op']} {s['node']}): {s['reason']}")


def _print_spectra(model: str, spectra: list[dict[str, Any]]) -> None:
    table = Table(title=f"{model}: ranks holding a fraction of each weight's energy (plain SVD)")
    for column in ("tensor", "op", "m x n", "full", "break-even", "90%", "95%", "99%"):
        table.add_column(column)
    for row in spectra:
        if "reason" in row:
            continue
        ranks = row["ranks"]
        cells = [str(ranks[e]) + ("" if ranks[e] < row["break_even"] else "*") for e in ("0.9", "0.95", "0.99")]
        size = f"{row['m']}x{row['n']}"
        table.add_row(row["tensor"], row["op"], size, str(row["full_rank"]), f"{row['break_even']:.1f}", *cells)
    out.print(table)
    out.print("* at or above the break-even rank: the layer would stay dense")
    for row in spectra:
        if "reason" in row:
            out.print(f"not factorizable: {row['tensor']} ({row['op']}): {row['reason']}")


def _print_groups(model: str, groups: list[dict[str, Any]]) -> None:
    table = Table(title=f"{model}: channel groups")
    for column in ("id", "channels", "block", "producers", "members", "prunable"):
        table.add_column(column)
    for g in groups:
        members = ", ".join(f"{v['value']}[{v['axis']}]" for v in g["values"][:6])
        if len(g["values"]) > 6:
            members += f" (+{len(g['values']) - 6})"
        producers = ", ".join(g["producers"][:4]) + (
            f" (+{len(g['producers']) - 4})" if len(g["producers"]) > 4 else ""
        )
        table.add_row(
            str(g["id"]), str(g["channels"]), str(g["block"]), producers, members, "yes" if g["prunable"] else "no"
        )
    out.print(table)
    prunable = [g for g in groups if g["prunable"]]
    out.print(f"{len(prunable)} of {len(groups)} groups prunable ({sum(g['channels'] for g in prunable)} channels)")
    for g in groups:
        if not g["prunable"]:
            out.print(f"not prunable: group {g['id']} ({', '.join(g['producers'][:3])}): {g['reasons'][0]}")


@cli.command()
def passes() -> None:
    """List the registered passes and their options."""
    from onnxprune.passes import PASSES

    for name, cls in PASSES.items():
        out.print(f"[bold]{name}[/bold]: {(cls.__doc__ or '').strip().splitlines()[0]}")
        for field in dataclasses.fields(cls.config_class):
            out.print(f"    {field.name} = {field.default!r}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="onnxprune")
