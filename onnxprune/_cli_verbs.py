"""``onnxprune lowrank``, ``onnxprune depth`` and ``onnxprune finetune``: factorize, drop blocks, fine-tune."""

from __future__ import annotations

from typing import Any

import click

from onnxprune._assign import parse_assignments
from onnxprune._cli_base import Job, absolute, cli, described_by, emit, handle_errors, job_options
from onnxprune.errors import CalibrationError
from onnxprune.passes._sparse_methods import SPARSE_METHODS
from onnxprune.passes.depth import CRITERIA, UNITS, DepthPruneConfig
from onnxprune.passes.finetune import FinetuneConfig
from onnxprune.passes.lowrank import RANK_ALLOCATIONS, LowRankConfig
from onnxprune.recipe import PassSpec

__all__ = ["depth", "finetune", "lowrank"]


@described_by({"lowrank": LowRankConfig})
@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option("--energy", type=click.FloatRange(0, 1, min_open=True))
@click.option("--rank", type=click.IntRange(1))
@click.option("--target-params", type=click.FloatRange(0, 1, min_open=True))
@click.option("--target-flops", type=click.FloatRange(0, 1, min_open=True))
@click.option("--activation-aware", is_flag=True)
@click.option("--energy-transfer", is_flag=True)
@click.option("--bn-rectify/--no-bn-rectify", default=True, show_default=True)
@click.option("--round-to", type=click.IntRange(1), default=8, show_default=True)
@click.option("--whitening", type=click.Choice(["cholesky", "eigen"]), default="cholesky", show_default=True)
@click.option("--allow-larger", is_flag=True, help="Factorize even where the rank saves no parameters or MACs.")
@click.option("--allocation", type=click.Choice(RANK_ALLOCATIONS), default="energy", show_default=True)
@job_options
@click.pass_context
@handle_errors
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
    allocation: str,
    job: Job,
) -> None:
    """Factorize MODEL's Gemm/MatMul/Conv weights by truncated SVD (two nodes per layer) and write OUTPUT."""
    modes = {"energy": energy, "rank": rank, "target_params": target_params, "target_flops": target_flops}
    given = {k: v for k, v in modes.items() if v is not None}
    if len(given) != 1:
        raise click.UsageError("give exactly one of --energy, --rank, --target-params or --target-flops")
    if allocation != "energy":
        if target_params is None and target_flops is None:
            raise click.UsageError(
                f"--allocation {allocation} spreads a budget: give --target-params or --target-flops"
            )
        if job.calib is None:
            raise CalibrationError(f"--allocation {allocation} needs calibration data (--calib PATH)")
    config = {
        **given,
        "round_to": round_to,
        "activation_aware": activation_aware,
        "whitening": whitening,
        "energy_transfer": energy_transfer,
        "bn_rectify": bn_rectify,
        "only_if_smaller": not allow_larger,
        "allocation": allocation,
        **job.selection,
    }
    emit(ctx, job, model, output, PassSpec("lowrank", config))


@described_by({"depth": DepthPruneConfig})
@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option("--blocks", type=click.IntRange(0))
@click.option("--target-params", type=click.FloatRange(0, 1, min_open=True))
@click.option("--target-flops", type=click.FloatRange(0, 1, min_open=True))
@click.option("--max-error", type=click.FloatRange(0))
@click.option("--criterion", type=click.Choice(CRITERIA), default="output_error", show_default=True)
@click.option("--error", type=click.Choice(["rel_mse", "cosine"]), default="rel_mse", show_default=True)
@click.option("--unit", type=click.Choice(UNITS), default="block", show_default=True)
@click.option("--iterative", is_flag=True)
@job_options
@click.pass_context
@handle_errors
def depth(
    ctx: click.Context,
    model: str,
    output: str,
    blocks: int | None,
    target_params: float | None,
    target_flops: float | None,
    max_error: float | None,
    criterion: str,
    error: str,
    unit: str,
    iterative: bool,
    job: Job,
) -> None:
    """Drop whole residual blocks of MODEL (y = x + f(x) becomes y = x), least sensitive first, and write OUTPUT."""
    budgets = {"blocks": blocks, "target_params": target_params, "target_flops": target_flops}
    given = {k: v for k, v in budgets.items() if v is not None}
    if len(given) > 1 or (not given and max_error is None):
        raise click.UsageError("give one of --blocks, --target-params or --target-flops (or --max-error alone)")
    if (criterion == "output_error" or max_error is not None) and job.calib is None:
        needs = "--criterion output_error" if criterion == "output_error" else "--max-error"
        raise CalibrationError(f"{needs} needs calibration data (--calib PATH); --criterion angular does not")
    config: dict[str, Any] = {
        **given,
        "max_error": max_error,
        "criterion": criterion,
        "error": error,
        "unit": unit,
        "iterative": iterative,
        "exclude": list(job.exclude),
    }
    emit(ctx, job, model, output, PassSpec("depth", config))


@described_by({"finetune": FinetuneConfig}, fields={"train_which": "train"})
@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the model.")
@click.option(
    "--teacher",
    required=True,
    type=click.Path(dir_okay=False),
    help="The original (unpruned) model to distill from.",
)
@click.option("--labels", type=click.Path(dir_okay=False))
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True)
@click.option("--epochs", type=click.FloatRange(0, min_open=True))
@click.option("--lr", type=click.FloatRange(0, min_open=True))
@click.option(
    "--schedule",
    type=click.Choice(["constant", "cosine", "warmup_cosine", "slr", "silo"]),
    default="warmup_cosine",
    show_default=True,
)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--distill", type=click.Choice(["mse", "kl"]), default="mse", show_default=True)
@click.option("--distill-weight", type=click.FloatRange(0), default=1.0, show_default=True)
@click.option("--feature", "features", multiple=True, help="Also distill this intermediate value (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--final-sparsity", type=click.FloatRange(0, 1, max_open=True))
@click.option("--cycles", type=click.IntRange(1), default=1, show_default=True)
@click.option("--rewind", is_flag=True)
@click.option("--drop-out", type=click.FloatRange(0, 1), default=0.0)
@click.option("--drop-in", type=click.FloatRange(0, 1), default=0.0)
@click.option("--prune-scope", type=click.Choice(["global", "layer"]), default="global", show_default=True)
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True)
@click.option("--eval-every", type=click.IntRange(1))
@click.option(
    "--patience",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Stop after N evaluations without a held-out improvement (0: never).",
)
@click.option(
    "--train", "train_which", type=click.Choice(["all", "weights", "norms+bias"]), default="all", show_default=True
)
@click.option(
    "--method",
    type=click.Choice(SPARSE_METHODS.names(aliases=True)),
    default="none",
    show_default=True,
    help="Sparse-training method run inside the loop (see `onnxprune passes finetune`).",
)
@click.option(
    "--method-option",
    "method_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of --method (repeatable), e.g. --method-option drop_fraction=0.3.",
)
@click.option(
    "--scratch",
    type=click.Choice(["E", "B"]),
    help="Train MODEL's architecture from scratch instead (Rethinking): its weights re-initialised like torch's "
    "defaults (seeded), then E: the same steps, B: steps x FLOPs(TEACHER)/FLOPs(MODEL). Uses labels when given.",
)
@job_options
@click.pass_context
@handle_errors
def finetune(
    ctx: click.Context,
    model: str,
    output: str,
    teacher: str,
    labels: str | None,
    steps: int,
    epochs: float | None,
    lr: float | None,
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
    prune_scope: str,
    holdout: float,
    eval_every: int | None,
    patience: int,
    train_which: str,
    method: str,
    method_option: tuple[str, ...],
    scratch: str | None,
    job: Job,
) -> None:
    """Fine-tune MODEL by distillation from TEACHER on the calibration data and write OUTPUT (same graph).

    --method free-tickets also writes each member next to OUTPUT (OUTPUT's stem + _member{i}.onnx, and
    _ensemble.onnx with --method-option ensemble=mean_softmax); --scratch trains from a fresh initialisation.
    """
    if job.calib is None:
        raise click.UsageError("finetune needs --calib PATH (the inputs to train on)")
    config: dict[str, Any] = {
        "steps": steps,
        "epochs": epochs,
        "lr": lr,
        "schedule": schedule,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "teacher": absolute(teacher),
        "labels": absolute(labels),
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
        "prune_scope": prune_scope,
        "holdout": holdout,
        "eval_every": eval_every,
        "patience": patience or None,
        "train": train_which,
        "method": method,
        "method_options": parse_assignments(method_option, "--method-option"),
    }
    if scratch:
        emit(ctx, job, model, output, PassSpec("scratch", {**config, "budget": scratch}))
        return
    emit(ctx, job, model, output, PassSpec("finetune", config))
