"""``onnxprune quantize``: INT8 (QDQ) with onnxruntime, calibrated on the same data as the other verbs."""

from __future__ import annotations

import click

from onnxprune._cli_base import Job, cli, emit, handle_errors, job_options
from onnxprune.errors import CalibrationError
from onnxprune.passes._quant_ort import CALIBRATE_METHODS
from onnxprune.recipe import PassSpec

__all__ = ["quantize"]


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the INT8 model.")
@click.option(
    "--per-channel/--per-tensor",
    default=True,
    show_default=True,
    help="One weight scale per output channel, or one per tensor.",
)
@click.option(
    "--activation-type",
    type=click.Choice(["uint8", "int8"]),
    default="uint8",
    show_default=True,
    help="Activations: uint8 (asymmetric; onnxruntime's fast path on x86 CPUs) or int8. Weights are always"
    " symmetric int8, so zeros stay exact zeros.",
)
@click.option(
    "--calibrate-method",
    type=click.Choice(list(CALIBRATE_METHODS)),
    default="minmax",
    show_default=True,
    help="How activation ranges are fitted on --calib.",
)
@click.option("--reduce-range", is_flag=True, help="7-bit weights (CPUs without VNNI).")
@click.option("--no-preprocess", is_flag=True, help="Skip onnxruntime's quant_pre_process (shape inference, fusions).")
@click.option("--op-type", "op_types", multiple=True, help="Quantize only this op type (repeatable).")
@click.option(
    "--reference",
    type=click.Path(dir_okay=False),
    help="The original float model, when MODEL is already pruned: the INT8 result is validated against both.",
)
@job_options
@click.pass_context
@handle_errors
def quantize(
    ctx: click.Context,
    model: str,
    output: str,
    per_channel: bool,
    activation_type: str,
    calibrate_method: str,
    reduce_range: bool,
    no_preprocess: bool,
    op_types: tuple[str, ...],
    reference: str | None,
    job: Job,
) -> None:
    """Quantize MODEL to INT8 (QDQ, symmetric weights) with onnxruntime, calibrated on --calib, and write OUTPUT.

    Pruned zeros stay exact zeros and N:M patterns hold in the INT8 weights. --exclude keeps nodes in float.
    """
    if job.calib is None:
        raise CalibrationError("quantize needs calibration data (--calib PATH): activation ranges come from it")
    unused = {"--include": job.include, "--keep-first": job.keep_first, "--keep-last": job.keep_last}
    unused["--max-drop"] = job.max_drop is not None
    given = [name for name, value in unused.items() if value]
    if given:
        raise click.UsageError(f"quantize does not take {given[0]} (--exclude keeps nodes in float)")
    config = {
        "per_channel": per_channel,
        "activation_type": activation_type,
        "calibrate_method": calibrate_method,
        "reduce_range": reduce_range,
        "preprocess": not no_preprocess,
        "op_types": list(op_types),
        "exclude": list(job.exclude),
    }
    emit(ctx, job, model, output, PassSpec("quantize", config), reference=reference)
