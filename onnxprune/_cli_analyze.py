"""``onnxprune analyze``: sensitivity of every prunable unit, written as JSON, CSV, a plot and a table."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from rich.table import Table as RichTable

from onnxprune import _io
from onnxprune._cli_base import cli, handle_errors, out, progress_bars
from onnxprune._cli_data import data_options
from onnxprune._paths import check_outputs, data_files
from onnxprune._run_paths import model_inputs
from onnxprune._scratch import Scratch
from onnxprune.analysis.sensitivity import (
    KINDS,
    WEIGHT_METHODS,
    Settings,
    Table,
    analyze,
    cache_dir,
    write_csv,
    write_plot,
    write_table_json,
)
from onnxprune.calibration.preprocess import ImagePreprocess
from onnxprune.calibration.sources import open_source, parse_input_shapes
from onnxprune.calibration.text import TextSpec
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes._importance import CHANNEL_IMPORTANCES

__all__ = ["analyze_cmd", "parse_grid"]


def parse_grid(text: str) -> tuple[float, ...]:
    """``0.25,0.5`` as floats (checked by :class:`Settings`)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise RecipeError(f"--grid '{text}': expected comma-separated ratios such as 0.25,0.5,0.75") from e


def _show(table: Table, model: str) -> None:
    grid = table.settings["grid"]
    view = RichTable(title=f"{model}: output error (and {table.metric_name}) with one unit pruned")
    for column in ("kind", "unit", "size"):
        view.add_column(column, overflow="fold")
    for ratio in grid:
        view.add_column(f"{ratio:g}", justify="right")
    for unit in table.units:
        cells = [
            f"{p.error:.3f}" + ("" if p.metric is None else f" ({100 * p.metric:.1f}%)")
            for p in sorted(unit.points, key=lambda p: p.ratio)
        ]
        view.add_row(unit.kind, unit.name, str(unit.size), *cells)
    out.print(view)
    dense = "n/a" if table.dense_metric is None else f"{100 * table.dense_metric:.1f}%"
    out.print(f"dense {table.metric_name}: {dense}; measured in {table.seconds:.1f} s")


@cli.command("analyze")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--calib",
    type=click.Path(),
    help="Calibration .npz/.npy file or folder, or images (required): the error is measured on it.",
)
@data_options(calib_text=True)
@click.option("--data", type=click.Path(), help="Evaluation data; with labels ('label'), the metric is top-1 accuracy.")
@click.option("--samples", type=click.IntRange(1), help="Use at most N samples of each data set.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--input-shape", multiple=True, help="Fix dynamic dims: NAME=1,3,224,224 (repeatable).")
@click.option("--threads", type=click.IntRange(1), help="onnxruntime threads.")
@click.option(
    "--kinds",
    default="unstructured,channels",
    show_default=True,
    help=f"Comma-separated units to measure: {', '.join(KINDS)}.",
)
@click.option(
    "--grid",
    default="0.25,0.5,0.75,0.9",
    show_default=True,
    help="Ratios: sparsity (unstructured), channel fraction (channels), rank fraction removed (lowrank).",
)
@click.option("--method", type=click.Choice(WEIGHT_METHODS), default="magnitude", show_default=True)
@click.option(
    "--channel-importance",
    type=click.Choice(CHANNEL_IMPORTANCES.names()),
    default="l2",
    show_default=True,
    help="How a channel group ranks its channels.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Prefix of the written files (PREFIX.json, .csv, .png); default: MODEL's name + '.sensitivity'.",
)
@click.option(
    "--cache-dir",
    "cache_folder",
    type=click.Path(file_okay=False),
    help="Default: $ONNXPRUNE_CACHE, else $XDG_CACHE_HOME/onnxprune, else ~/.cache/onnxprune.",
)
@click.option("--no-cache", is_flag=True, help="Measure again and do not store the result.")
@click.pass_context
@handle_errors
def analyze_cmd(
    ctx: click.Context,
    model: str,
    calib: str | None,
    data: str | None,
    samples: int | None,
    batch_size: int,
    input_shape: tuple[str, ...],
    threads: int | None,
    kinds: str,
    grid: str,
    method: str,
    channel_importance: str,
    output: str | None,
    cache_folder: str | None,
    no_cache: bool,
    images: ImagePreprocess | None,
    text: TextSpec | None,
) -> None:
    """Measure how much MODEL's outputs change when each prunable unit alone is pruned, at a grid of ratios."""
    if calib is None:
        raise CalibrationError("analyze needs calibration data (--calib PATH): the error is measured on it")
    settings = Settings(
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
        grid=parse_grid(grid),
        method=method,
        channel_importance=channel_importance,
        batch_size=batch_size,
    )
    shapes = parse_input_shapes(input_shape)
    loaded = _io.load(model)
    prefix = Path(output) if output else Path(f"{Path(model).stem}.sensitivity")
    if prefix.parent.is_file():
        raise RecipeError(f"{prefix.parent}: is a file, not a folder")
    check_outputs(
        {f"-o (.{suffix})": prefix.with_name(f"{prefix.name}.{suffix}") for suffix in ("json", "csv", "png")},
        {
            **model_inputs(loaded),
            "the calibration data": data_files(calib),
            "the evaluation data": data_files(data),
            "the tokenizer": [text.tokenizer] if text else [],
        },
    )
    with progress_bars(not ctx.obj["quiet"]) as factory, Scratch().activate():
        read = functools.partial(
            open_source, model=loaded, samples=samples, input_shapes=shapes, images=images, text=text
        )
        calibration = read(calib, progress=factory("reading calibration data"))
        evaluation = read(data, progress=factory("reading evaluation data")) if data else None
        table = analyze(
            loaded,
            calibration,
            data=evaluation,
            settings=settings,
            threads=threads,
            cache=None if no_cache else cache_dir(cache_folder),
            progress=factory("sensitivity"),
        )
    written = [write_table_json(table, prefix.with_name(prefix.name + ".json"))]
    written.append(write_csv(table, prefix.with_name(prefix.name + ".csv")))
    plot = write_plot(table, prefix.with_name(prefix.name + ".png"))
    if plot is not None:
        written.append(plot)
    if not ctx.obj["quiet"]:
        _show(table, model)
        out.print("wrote " + ", ".join(str(p) for p in written))
