"""The ``validate`` verb: CAND against REF in onnxruntime on --ep (cpu, cuda, tensorrt)."""

from __future__ import annotations

import tempfile
from typing import Any

import click
from rich.table import Table

from onnxprune import _io
from onnxprune._cli_base import cli, ep_option, fidelity_verdict, handle_errors, out, progress_bars
from onnxprune._cli_data import data_options
from onnxprune._paths import check_outputs, data_files
from onnxprune._providers import ExecutionTarget, resolve_ep
from onnxprune._run_paths import model_inputs
from onnxprune.analysis.activity import measure_activity
from onnxprune.calibration.preprocess import ImagePreprocess
from onnxprune.calibration.sources import open_source, parse_input_shapes, sample_shapes
from onnxprune.calibration.text import TextSpec
from onnxprune.report import activity_table, comparison_table, model_stats, shrinkbench_of, shrinkbench_table
from onnxprune.sparse_kernels import TRT_OPTIONS, probe, sparse_kernel_report


@cli.command("validate")
@click.argument("ref", type=click.Path(dir_okay=False))
@click.argument("cand", type=click.Path(dir_okay=False))
@click.option(
    "--data", type=click.Path(), help="Input data .npz/.npy file or folder, images or text (default: random inputs)."
)
@click.option("--samples", type=click.IntRange(1))
@data_options(calib_text=False)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--input-shape", multiple=True, help="Fix dynamic dims: NAME=1,3,224,224 (repeatable).")
@click.option("--threads", type=click.IntRange(1))
@click.option(
    "--report", type=click.Path(dir_okay=False), help="Write the report here: JSON, or an HTML page for a .html path."
)
@click.option(
    "--metric",
    metavar="MODULE:FUNCTION",
    help="Task metric on --data: function(outputs, data_path) -> float, higher is better "
    "(MODULE: dotted name or path/to/file.py).",
)
@click.option(
    "--fail-below",
    metavar="KEY=F,...",
    help="Exit 3 when a figure misses its threshold. Keys: cos, agree, top1, seq, acc, metric "
    "(at least F); acc-drop, metric-drop (at most F). Example: cos=0.99,agree=0.95",
)
@ep_option
@click.pass_context
@handle_errors
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
    metric: str | None,
    fail_below: str | None,
    images: ImagePreprocess | None,
    text: TextSpec | None,
    ep: str,
) -> None:
    """Compare CAND with REF in onnxruntime: checker, fidelity, latency, sizes.

    Both run on the execution provider --ep. With --ep tensorrt (sparse kernels on), the 2:4 weights
    are listed with the layers TensorRT found eligible and picked a sparse kernel for.
    Exits 3 when the candidate gives NaN/inf where REF does not, or misses a --fail-below threshold.
    """
    from onnxprune.gates import missed_gates, parse_fail_below
    from onnxprune.html.profile import compare_op_latency
    from onnxprune.metric import load_metric, metric_file
    from onnxprune.report import is_html, write_report
    from onnxprune.verify import validate

    gates = parse_fail_below(fail_below, metric=metric is not None) if fail_below else ()
    resolve_ep(ep)  # an unavailable provider fails before any model is read
    shapes = parse_input_shapes(input_shape)
    reference, candidate = _io.load(ref), _io.load(cand)
    module = metric_file(metric) if metric else None
    check_outputs(
        {"--report": report},
        {
            **model_inputs(reference, "the reference model"),
            **model_inputs(candidate, "the candidate model"),
            "the data": data_files(data),
            "the tokenizer": [text.tokenizer] if text else [],
            "the metric module": [module] if module else [],
        },
    )
    task_metric = load_metric(metric) if metric else None
    with progress_bars(not ctx.obj["quiet"]) as factory:
        source = open_source(
            data,
            reference,
            samples=samples,
            input_shapes=shapes,
            images=images,
            text=text,
            progress=factory("reading data"),
        )
    with tempfile.TemporaryDirectory(prefix="onnxprune-trt-") as cache:
        target = resolve_ep(ep, {**TRT_OPTIONS, "trt_engine_cache_path": cache} if ep == "tensorrt" else None)
        kernels = _probe_ep(reference, candidate, target, source, threads)
        with progress_bars(not ctx.obj["quiet"]) as factory:
            result = validate(
                reference,
                candidate,
                source,
                batch_size=batch_size,
                threads=threads,
                progress=factory("validation"),
                metric=task_metric,
                data_path=data,
                providers=target.providers,
            ).as_dict()
    result["execution_provider"] = {"ep": target.ep, "provider": target.provider}
    if kernels is not None:
        result["sparse_kernels"] = kernels
    missed = missed_gates(result, gates)
    shapes = {**sample_shapes(source), **shapes}
    before, after = model_stats(reference, shapes), model_stats(candidate, shapes)
    shrink = {"before": shrinkbench_of(reference, before), "after": shrinkbench_of(candidate, after)}
    activity = {
        side: measure_activity(model, source, input_shapes=shapes, batch_size=batch_size, threads=threads)
        for side, model in (("reference", reference), ("candidate", candidate))
    }
    if report:
        write_report(
            {
                "ref": ref,
                "cand": cand,
                "before": before.as_dict(),
                "after": after.as_dict(),
                "validation": result,
                "shrinkbench": {side: counts.as_dict() for side, counts in shrink.items()},
                "activity": {side: found.as_dict() for side, found in activity.items()},
            },
            report,
            op_latency=compare_op_latency(reference, candidate, source, threads=threads, labels=("REF", "CAND"))
            if is_html(report)
            else None,
        )
    if not ctx.obj["quiet"]:
        out.print(comparison_table(before, after, result))
        out.print(shrinkbench_table(shrink["before"], shrink["after"]))
        if activity["reference"].layers or activity["candidate"].layers:
            out.print(activity_table(activity["reference"], activity["candidate"]))
        out.print(f"execution provider: {target.provider} (--ep {target.ep})", highlight=False)
        if kernels is not None:
            _print_sparse_kernels(kernels)
    fidelity_verdict(result, missed)


def _probe_ep(
    reference: Any, candidate: Any, target: ExecutionTarget, source: Any, threads: int | None
) -> dict[str, Any] | None:
    """On a GPU provider, check both models load on it; on TensorRT, the candidate's sparse-kernel report."""
    if target.ep == "cpu":
        return None
    feed = next(iter(source.batches(1)))
    probe(reference, target, feed, "reference model", threads)
    log = probe(candidate, target, feed, "candidate model", threads)
    return sparse_kernel_report(candidate, log) if target.ep == "tensorrt" else None


def _print_sparse_kernels(report: dict[str, Any]) -> None:
    table = Table(title=f"2:4 weights and TensorRT sparse kernels ({report['two_four']} of {report['weights']} 2:4)")
    for column in ("tensor", "op", "nodes", "2:4", "eligible", "sparse kernel"):
        table.add_column(column)

    def cell(value: bool | None) -> str:
        return "?" if value is None else "yes" if value else "no"

    for entry in report["layers"]:
        nodes = ", ".join(entry["nodes"])
        table.add_row(
            entry["tensor"],
            entry["op"],
            nodes,
            cell(entry["two_four"]),
            cell(entry["eligible"]),
            cell(entry["sparse_kernel"]),
        )
    out.print(table)
    if report["log"] == "absent":
        out.print("TensorRT's log had no sparsity lines: eligible/sparse kernel unknown (?)", highlight=False)
