"""The ``onnxprune`` command line: every verb compiles to a :class:`Recipe` and runs it.

The group and the shared options live in ``_cli_base``; ``lowrank``, ``depth`` and ``finetune`` in ``_cli_verbs``;
``analyze``, ``compare``, ``quantize`` and ``validate`` in their own ``_cli_*`` modules.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from onnxprune import (
    _cli_analyze,  # noqa: F401 - registers analyze on the group
    _cli_compare,  # noqa: F401 - registers compare on the group
    _cli_presets,
    _cli_quantize,  # noqa: F401 - registers quantize on the group
    _cli_validate,  # noqa: F401 - registers validate on the group
    _cli_verbs,  # noqa: F401 - registers lowrank, depth and finetune on the group
    _io,
    _signals,
)
from onnxprune._assign import parse_assignments
from onnxprune._cli_base import (
    Job,
    absolute,
    cli,
    described_by,
    emit,
    handle_errors,
    job_options,
    out,
    real_shapes,
    run_and_show,
)
from onnxprune._field_docs import describe
from onnxprune._fields import short
from onnxprune._providers import EP_CHOICES, resolve_ep
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes._allocators import ALLOCATORS
from onnxprune.passes._importance import CHANNEL_IMPORTANCES
from onnxprune.passes._scores import WEIGHT_IMPORTANCES
from onnxprune.passes._vocab import AGGREGATES, NORMALIZERS, SCOPES
from onnxprune.passes.channels import ChannelPruneConfig
from onnxprune.passes.sparsify import NMPruneConfig, UnstructuredPruneConfig
from onnxprune.recipe import PassSpec, Recipe

__all__ = ["cli", "main"]


def _parse_pattern(pattern: str) -> tuple[int, int]:
    n, sep, m = pattern.partition(":")
    if not sep or not (n.isdecimal() and m.isdecimal() and len(n) <= 6 and len(m) <= 6):
        raise click.BadParameter(f"{short(pattern)} is not N:M (for example 2:4)", param_hint="--pattern")
    if not 1 <= int(n) <= int(m):
        raise click.BadParameter(f"{pattern} needs 1 <= N <= M (0:M would zero every weight)", param_hint="--pattern")
    return int(n), int(m)


def default_importance(*, structured: bool, calibrated: bool) -> str:
    """The importance used when none is given.

    With real calibration data, unstructured and N:M pruning use SparseGPT: on trained models it is
    the method that keeps the task metric (README, real-model benchmark); magnitude and Wanda
    collapsed a trained OCR recognizer at 50%. Without data: magnitude (structured: L2).
    """
    if structured:
        return "l2"
    return "sparsegpt" if calibrated else "magnitude"


def _channel_spec(
    ratio: float | None,
    target_flops: float | None,
    target_params: float | None,
    words: dict[str, str | None],
    round_to: int,
    min_channels: int,
    *,
    reconstruct: bool,
    verify: bool,
    exclude: tuple[str, ...],
    hidden: bool = False,
    hardware: dict[str, Any] | None = None,
) -> PassSpec:
    """The ``channels`` pass; ``words``: importance, scope, normalize, aggregate (``None``: the pass's default)."""
    importance = words["importance"]
    if importance not in CHANNEL_IMPORTANCES:
        choices = ", ".join(CHANNEL_IMPORTANCES.names(aliases=True))
        raise click.UsageError(f"--importance {importance} is not a structured importance (choose from {choices})")
    config: dict[str, Any] = {
        "ratio": ratio or 0.0,
        **{k: v for k, v in words.items() if v is not None},
        "round_to": round_to,
        "min_channels": min_channels,
        "reconstruct": reconstruct,
        "verify": verify,
        "exclude": list(exclude),
    }
    if hidden:
        config["allow_inexact"] = config["restore_outputs"] = True
    if target_flops is not None:
        config["target_flops"] = target_flops
    if target_params is not None:
        config["target_params"] = target_params
    return PassSpec("channels", {**config, **(hardware or {})})


def _hardware(target_latency: float | None, widths: str | None, ep: str) -> dict[str, Any]:
    """The channels pass's hardware-aware fields: measured widths, latency budget, execution provider.

    With measured widths, an explicit ``--round-to N`` makes the table's widths multiples of N.
    """
    resolve_ep(ep)  # refuse a provider this onnxruntime lacks before anything runs
    if target_latency is not None and widths == "round":
        raise click.UsageError("--target-latency picks measured widths; it does not combine with --widths round")
    if target_latency is None and widths != "measured":
        return {"ep": ep} if ep != "cpu" else {}
    config: dict[str, Any] = {"widths": "measured", "ep": ep}
    if target_latency is not None:
        config["target_latency"] = target_latency
    return config


def _nm_target(pattern: str, sparsity: float | None) -> dict[str, float]:
    """``n``, ``m`` and the sparsity budget (default: every weight N:M) of ``--pattern``."""
    n, m = _parse_pattern(pattern)
    return {"n": n, "m": m, "sparsity": 1.0 - n / m if sparsity is None else sparsity}


def _budget_free_kind(allocation: str | None, options: dict[str, Any]) -> str | None:
    """The one pruning kind of an allocation whose ratios follow from its own rule (``None``: it spends a budget)."""
    if allocation is None or allocation not in ALLOCATORS:
        return None
    entry = ALLOCATORS[allocation]
    if len(entry.kinds) != 1 or entry.configured(options).uses_budget:
        return None
    return entry.kinds[0]


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``allocation_options`` config entry (none when empty, so recipes stay as they were)."""
    return {"allocation_options": options} if options else {}


def _check_words(normalize: str | None, aggregate: str | None, allocation: str, *, structured: bool) -> None:
    """Refuse ``--normalize``/``--aggregate`` where they would change nothing (never ignored silently)."""
    if aggregate is not None and not structured:
        raise click.UsageError(
            "--aggregate combines a channel group's scores: it is for structured pruning (--channels)"
        )
    if normalize is not None and allocation != "global":
        raise click.UsageError(
            f"--normalize {normalize} scales each layer's scores for one global threshold: it needs --scope global"
            " (with a per-layer budget every layer is ranked on its own scores)"
        )


def _allocation(scope: str, allocation: str | None, job: Job, *, pattern: bool) -> str:
    """``--allocation``, defaulting to ``--scope`` (``--scope global`` is ``--allocation global``)."""
    if allocation is None:
        return "global" if scope == "global" else "uniform"
    if scope == "global" and allocation != "global":
        raise click.UsageError(f"--scope global and --allocation {allocation} disagree; give --allocation alone")
    if pattern and allocation not in ("uniform", "sensitivity"):
        raise click.UsageError(
            f"--allocation {allocation} spreads a sparsity; N:M (--pattern) takes uniform or sensitivity"
        )
    if ALLOCATORS[allocation].needs_data and job.calib is None:
        raise CalibrationError(f"--allocation {allocation} needs calibration data (--calib PATH)")
    return allocation


@described_by(
    {"unstructured": UnstructuredPruneConfig, "N:M": NMPruneConfig, "structured": ChannelPruneConfig},
    fields={"channels": "ratio"},
)
@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the pruned model.")
@click.option(
    "--sparsity",
    type=click.FloatRange(0, 1, max_open=True),
    help="Unstructured sparsity (fraction zeroed); with --pattern and --allocation sensitivity, the mean sparsity"
    " that N:M must reach (the most sensitive layers stay dense).",
)
@click.option("--pattern", help="N:M semi-structured sparsity, e.g. 2:4.")
@click.option("--channels", type=click.FloatRange(0, 1, max_open=True))
@click.option("--target-flops", type=click.FloatRange(0, 1, min_open=True))
@click.option("--target-params", type=click.FloatRange(0, 1, min_open=True))
@click.option(
    "--target-latency",
    type=click.FloatRange(0, min_open=True),
    metavar="MS",
    help="Structured: a latency budget in ms (batch 1, --ep, --threads); per-group widths from a measured latency"
    " table keeping the most importance within it.",
)
@click.option(
    "--widths",
    type=click.Choice(["round", "measured"]),
    help="Structured: round: kept counts are multiples of --round-to; measured: each group's latency is measured at a"
    " handful of widths on --ep (cached) and each kept count moves to the widest width no slower than it. Default:"
    " round (measured with --target-latency).",
)
@click.option(
    "--ep",
    type=click.Choice(EP_CHOICES),
    default="cpu",
    show_default=True,
    help="Structured, measured widths: the execution provider the latency is measured on.",
)
@click.option(
    "--importance",
    type=click.Choice(list(dict.fromkeys((*WEIGHT_IMPORTANCES.names(), *CHANNEL_IMPORTANCES.names(aliases=True))))),
    help="Unstructured/N:M: "
    + "; ".join(f"{e.name}: {e.description}" for e in WEIGHT_IMPORTANCES)
    + ". Structured ("
    + ", ".join(f"{a} = {t}" for a, t in CHANNEL_IMPORTANCES.aliases().items())
    + "): "
    + "; ".join(f"{e.name}: {e.description}" for e in CHANNEL_IMPORTANCES)
    + ". Default: sparsegpt with --calib, magnitude without (structured: l2).",
)
@click.option("--scope", type=click.Choice(SCOPES.names()), default="layer", show_default=True)
@click.option(
    "--allocation",
    type=click.Choice(ALLOCATORS.names()),
    help="How the budget is spread over layers/groups: "
    + "; ".join(f"{e.name}: {e.description}" for e in ALLOCATORS)
    + ". Default: uniform (global with --scope global).",
)
@click.option(
    "--allocation-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of --allocation (repeatable), e.g. --allocation-option variance=0.95 for pca,"
    " --allocation-option scope=layer for pqi, --allocation-option mode=random for sipp.",
)
@click.option("--normalize", type=click.Choice(NORMALIZERS.names()))
@click.option("--aggregate", type=click.Choice(AGGREGATES.names()))
@click.option("--round-to", type=click.IntRange(1), default=1, show_default=True)
@click.option("--min-channels", type=click.IntRange(0), default=1, show_default=True)
@click.option(
    "--no-reconstruct", is_flag=True, help="Structured: do not refit consumers on the calibration data (ridge)."
)
@click.option("--verify", is_flag=True)
@click.option(
    "--hidden",
    is_flag=True,
    help="Structured: also prune hidden sizes a LayerNorm normalizes (transformers' residual stream, a last hidden"
    " state output mapped back to its width); inexact.",
)
@click.option(
    "--finetune-steps",
    type=click.IntRange(1),
    help="Then fine-tune N steps by distillation from the original model (needs torch and --calib).",
)
@click.option("--finetune-lr", type=click.FloatRange(0, min_open=True), help="[default: chosen by a held-out probe]")
@click.option(
    "--preset",
    metavar="NAME",
    help="Run a named method's recipe (see `onnxprune presets`). With it, --sparsity, --channels, --pattern,"
    " --finetune-steps/--finetune-lr and --include/--exclude/--keep-first/--keep-last set the preset's"
    " matching fields; other fields with --set.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="PASS.FIELD=VALUE",
    help="With --preset: set a field of the preset's pass (every pass of that name; repeatable; VALUE read as YAML),"
    " e.g. --set finetune.steps=50; PASS.FIELD.KEY=VALUE sets one key of a mapping field.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    help="Fine-tuning labels (with --preset or --finetune-steps): an .npz holding one integer array, one label per"
    " calibration sample (labels stored in the calibration .npz as 'labels' are used without it).",
)
@job_options
@click.pass_context
@handle_errors
def prune(
    ctx: click.Context,
    model: str,
    output: str,
    sparsity: float | None,
    pattern: str | None,
    channels: float | None,
    target_flops: float | None,
    target_params: float | None,
    target_latency: float | None,
    widths: str | None,
    ep: str,
    importance: str | None,
    scope: str,
    allocation: str | None,
    allocation_option: tuple[str, ...],
    normalize: str | None,
    aggregate: str | None,
    round_to: int,
    min_channels: int,
    no_reconstruct: bool,
    verify: bool,
    hidden: bool,
    finetune_steps: int | None,
    finetune_lr: float | None,
    preset: str | None,
    settings: tuple[str, ...],
    labels: str | None,
    job: Job,
) -> None:
    """Prune MODEL (unstructured --sparsity, N:M --pattern, structured --channels, or a --preset) and write OUTPUT."""
    if preset is not None:
        flags = {
            "sparsity": sparsity,
            "channels": channels,
            "pattern": None if pattern is None else _parse_pattern(pattern),
            "finetune_steps": finetune_steps,
            "finetune_lr": finetune_lr,
        }
        specs = _cli_presets.preset_passes(ctx, preset, flags, settings, labels, job)
        emit(ctx, job, model, output, *specs, preset=preset)
        return
    if settings:
        raise click.UsageError("--set PASS.FIELD=VALUE changes a preset's fields: give --preset NAME")
    if labels is not None and finetune_steps is None:
        raise click.UsageError("--labels feeds fine-tuning: give --preset NAME or --finetune-steps N")
    targets = (channels, target_flops, target_params, target_latency)
    allocation_options = parse_assignments(allocation_option, "--allocation-option")
    if allocation_options and allocation is None:
        raise click.UsageError("--allocation-option sets an option of --allocation: give --allocation")
    # an allocation that chooses the budget itself (pca, pqi) needs no --channels/--sparsity
    own_kind = _budget_free_kind(allocation, allocation_options)
    given = any(t is not None for t in (sparsity, pattern, *targets))
    structured = any(t is not None for t in targets) or (own_kind == "channels" and not given)
    if own_kind == "unstructured" and not given:
        sparsity = 0.0
    budgeted_nm = pattern is not None and sparsity is not None  # --pattern N:M --sparsity S: S covered by N:M
    if sum((sparsity is not None and not budgeted_nm, pattern is not None, structured)) != 1:
        raise click.UsageError(
            "give exactly one of --sparsity, --pattern or --channels/--target-flops/--target-params/--target-latency"
        )
    if (verify or hidden or widths is not None) and not structured:
        raise click.UsageError("--verify, --hidden and --widths are for structured pruning (--channels/--target-flops)")
    if sum(t is not None for t in targets[1:]) > 1:
        raise click.UsageError("give one of --target-flops, --target-params and --target-latency")
    selection = job.selection
    allocation = _allocation(scope, allocation, job, pattern=pattern is not None)
    ranked_by = ALLOCATORS[allocation].scores_by if ALLOCATORS[allocation].ranks else None
    importance = importance or ranked_by or default_importance(structured=structured, calibrated=job.calib is not None)
    if budgeted_nm and allocation != "sensitivity":
        raise click.UsageError("--pattern with --sparsity needs --allocation sensitivity (which layers stay dense)")
    scope = "global" if allocation == "global" else scope
    _check_words(normalize, aggregate, allocation, structured=structured)
    if structured:
        words = {"importance": importance, "scope": scope, "normalize": normalize, "aggregate": aggregate}
        spec = _channel_spec(
            channels,
            target_flops,
            target_params,
            words,
            round_to,
            min_channels,
            reconstruct=job.calib is not None and not no_reconstruct,
            verify=verify,
            exclude=job.exclude,
            hidden=hidden,
            hardware=_hardware(target_latency, widths, ep),
        )
        spec = PassSpec(spec.name, {**spec.config, "allocation": allocation, **_options(allocation_options)})
    elif importance not in WEIGHT_IMPORTANCES:
        raise click.UsageError(f"--importance {importance} is for structured pruning (--channels)")
    elif WEIGHT_IMPORTANCES[importance].method == "sparsegpt":
        if normalize is not None:
            raise click.UsageError(
                "--normalize is not a sparsegpt setting: its global allocation ranks plain magnitudes"
            )
        target = {"sparsity": sparsity} if pattern is None else _nm_target(pattern, sparsity)
        spec = PassSpec("sparsegpt", {**target, **selection, "allocation": allocation})
    elif pattern is not None:
        target = _nm_target(pattern, sparsity)
        spec = PassSpec("nm", {**target, "importance": importance, "allocation": allocation, **selection})
    else:
        config = {"sparsity": sparsity, "importance": importance, "scope": scope, "normalize": normalize or "none"}
        # unstructured, or the pass implementing the importance with the same fields (gradient: SNIP, GraSP, DRIVE)
        spec = PassSpec(
            WEIGHT_IMPORTANCES[importance].method,
            {**config, "allocation": allocation, **_options(allocation_options), **selection},
        )
    specs = [spec]
    if finetune_steps is not None:
        tune = {"steps": finetune_steps, "lr": finetune_lr, "batch_size": job.batch_size, "labels": absolute(labels)}
        specs.append(PassSpec("finetune", tune))
    emit(ctx, job, model, output, *specs)


@cli.command("run")
@click.argument("recipe_path", metavar="RECIPE.yaml", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Override the recipe's output path.")
@click.option(
    "--report", type=click.Path(dir_okay=False), help="Override the recipe's report path (.html: the HTML page)."
)
@click.option("--metric", metavar="MODULE:FUNCTION", help="Override the recipe's task metric.")
@click.option("--strict", is_flag=True, help="Refuse to write when agreement on real data is low (as the recipe's).")
@click.pass_context
@handle_errors
def run_cmd(
    ctx: click.Context, recipe_path: str, output: str | None, report: str | None, metric: str | None, strict: bool
) -> None:
    """Run a recipe file (see ``prune --dump-recipe``).

    Instead of ``passes:``, a recipe may name a preset (``preset: NAME``, see ``onnxprune presets``) with
    ``overrides:`` mapping ``PASS.FIELD`` to values.
    """
    if not Path(recipe_path).is_file():
        raise RecipeError(f"{recipe_path}: no such recipe file")
    recipe = Recipe.from_yaml(recipe_path)
    given = (("output", output), ("report", report), ("metric", metric), ("strict", strict or None))
    overrides = {k: v for k, v in given if v is not None}
    run_and_show(ctx, dataclasses.replace(recipe, **overrides), inputs={"the recipe": recipe_path})


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--input-shape", multiple=True, help="Fix dynamic dims for FLOPs: NAME=1,3,224,224.")
@click.option("--calib", type=click.Path(), help="Count MACs at the input shapes of this data's first sample.")
@click.option("--groups", is_flag=True, help="List the coupled channel groups and why groups cannot be pruned.")
@click.option("--ranks", is_flag=True, help="Per weight: SVD ranks holding 90/95/99% energy, break-even rank.")
@handle_errors
def inspect(
    model: str, as_json: bool, input_shape: tuple[str, ...], calib: str | None, groups: bool, ranks: bool
) -> None:
    """Ops, parameters, FLOPs and prunable weights of MODEL (MACs at --input-shape, else --calib's shapes)."""
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
        loaded = _io.load(model)
        found = channel_groups(loaded, real_shapes(loaded, calib, input_shape))
        if as_json:
            click.echo(json.dumps(found, indent=2))
        else:
            _print_groups(model, found)
        return
    loaded = _io.load(model)
    info = inspect_model(loaded, real_shapes(loaded, calib, input_shape))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{model}")
    table.add_column("item")
    table.add_column("value", justify="right")
    for key in ("opset", "nodes", "params", "nonzero_params", "macs", "flops"):
        table.add_row(key, str(info[key]))
    shrink = info["shrinkbench"]
    table.add_row(
        "compression (all / prunable)", f"{shrink['compression']:.2f}x / {shrink['prunable_compression']:.2f}x"
    )
    table.add_row("theoretical speedup", f"{shrink['theoretical_speedup']:.2f}x")
    table.add_row("ops", ", ".join(f"{k}×{v}" for k, v in info["ops"].items()))
    if info["assumed_dims"]:
        table.add_row("[bold red]MACs at assumed dim 1[/bold red]", ", ".join(info["assumed_dims"]))
    out.print(table)
    weights = Table(title="prunable weights")
    for column in ("tensor", "op", "shape", "nodes", "sparsity"):
        weights.add_column(column)
    for w in info["prunable"]:
        weights.add_row(w["tensor"], w["op"], str(w["shape"]), ", ".join(w["nodes"]), f"{w['sparsity']:.3f}")
    out.print(weights)
    for s in info["skipped"]:
        out.print(f"not prunable: {s['tensor']} ({s['op']} {s['node']}): {s['reason']}")
    for bad in info["nonfinite"]:
        out.print(
            f"[bold red]non-finite[/bold red]: {bad['tensor']} ({bad['op_type']} {bad['node']}): "
            f"{bad['nan']} NaN, {bad['inf']} inf (prune, lowrank and finetune refuse this model)"
        )


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
    for column in ("id", "units", "producers", "members", "prunable"):
        table.add_column(column)
    for g in groups:
        members = ", ".join(f"{v['value']}[{v['axis']}]" for v in g["values"][:6])
        if len(g["values"]) > 6:
            members += f" (+{len(g['values']) - 6})"
        producers = ", ".join(g["producers"][:4]) + (
            f" (+{len(g['producers']) - 4})" if len(g["producers"]) > 4 else ""
        )
        table.add_row(str(g["id"]), g["units"], producers, members, "yes" if g["prunable"] else "no")
    out.print(table)
    prunable = [g for g in groups if g["prunable"]]
    out.print(f"{len(prunable)} of {len(groups)} groups prunable ({sum(g['channels'] for g in prunable)} channels)")
    for g in groups:
        if not g["prunable"]:
            out.print(f"not prunable: group {g['id']} ({', '.join(g['producers'][:3])}): {g['reasons'][0]}")


@cli.command()
@click.argument("names", nargs=-1, metavar="[PASS]...")
@handle_errors
def passes(names: tuple[str, ...]) -> None:
    """List the registered passes (or only PASS...) with every option: default, description, choices.

    The descriptions come from the pass configs; a recipe's ``passes:`` entries take these names and options.
    """
    from onnxprune.passes import PASSES

    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise RecipeError(f"unknown pass {short(unknown[0])} (known: {', '.join(PASSES)})")
    for name, cls in PASSES.items():
        if names and name not in names:
            continue
        out.print(f"[bold]{name}[/bold]: {(cls.__doc__ or '').strip().splitlines()[0]}", highlight=False)
        for field in dataclasses.fields(cls.config_class):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            out.print(f"    [bold]{field.name}[/bold] = {default!r}", highlight=False)
            text = describe(cls.config_class, field.name)
            if text:
                out.print(Padding(Text(text, style="dim"), (0, 0, 0, 8), expand=False))
            for entry, options in _entry_options(field.metadata.get("choices")):
                out.print(f"        [bold]{field.name}: {entry}[/bold] options:", highlight=False)
                for option, default, doc in options:
                    out.print(f"            {option} = {default!r}", highlight=False)
                    if doc:
                        out.print(Padding(Text(doc, style="dim"), (0, 0, 0, 16), expand=False))


def _entry_options(registry: Any) -> list[tuple[str, list[tuple[str, Any, str]]]]:
    """The options of each entry of a config field's vocabulary, as ``(entry, [(option, default, text)])``.

    Sparse-training methods hold an ``options`` dataclass; allocators' options are their own extra fields.
    """
    found = []
    for entry in registry or ():
        kind = getattr(entry, "options", None)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            owner, names = kind, [f.name for f in dataclasses.fields(kind)]
        elif hasattr(entry, "option_names"):
            owner, names = type(entry), list(entry.option_names())
        else:
            continue
        defaults = {f.name: f.default for f in dataclasses.fields(owner)}
        if names:
            found.append((entry.name, [(n, defaults.get(n), describe(owner, n)) for n in names]))
    return found


def main() -> None:
    """Console-script entry point: SIGINT/SIGTERM end the run cleanly (scratch removed, one line, 130/143)."""
    with _signals.exit_on_signals():
        cli(prog_name="onnxprune")
