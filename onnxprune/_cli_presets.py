"""``onnxprune presets`` (list or show the seed-method presets) and the passes of ``prune --preset NAME``.

With ``--preset``, a few ``prune`` flags set the preset's field they obviously mean (:data:`FLAG_FIELDS`);
every other field is set with ``--set PASS.FIELD=VALUE``. A prune flag with no such field is refused,
never ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click
import yaml
from click.core import ParameterSource
from rich.table import Table
from rich.text import Text

from onnxprune._assign import parse_assignments
from onnxprune._cli_base import Job, absolute, cli, handle_errors, job_options, out
from onnxprune.errors import RecipeError
from onnxprune.passes import PASSES
from onnxprune.presets import apply_overrides, find_preset, ordered
from onnxprune.recipe import PassSpec, Recipe

__all__ = ["FLAG_FIELDS", "preset_passes", "presets"]

#: ``prune`` flag -> the (pass, field) candidates it sets with ``--preset``: the first candidate whose pass the
#: preset has (``finetune.final_sparsity`` only where the preset sets it) is set on every pass of that name.
#: ``--pattern N:M`` sets ``n`` and ``m`` of an ``nm`` pass, or of a ``sparsegpt`` pass the preset gives N:M.
FLAG_FIELDS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "sparsity": (("unstructured", "sparsity"), ("sparsegpt", "sparsity"), ("finetune", "final_sparsity")),
    "channels": (("channels", "ratio"),),
    "pattern": (("nm", "m"), ("sparsegpt", "m")),
    "finetune_steps": (("finetune", "steps"),),
    "finetune_lr": (("finetune", "lr"),),
}
#: Candidates that match only where the preset sets the field (else the flag would add a method to it).
_ONLY_IF_SET = {("finetune", "final_sparsity"), ("sparsegpt", "m")}
#: The selection flags: set on every pass whose config has the field.
_SELECTION = ("include", "exclude", "keep_first", "keep_last")
#: ``prune``'s options that work with ``--preset`` besides the flags above and the shared ones.
_PRESET_OPTIONS = ("output", "preset", "settings", "labels", "quiet", "debug")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _job_option_names() -> set[str]:
    """Names of the options every model-writing verb shares (data, selection, outputs): all work with a preset."""
    return {p.name for p in click.command()(job_options(lambda **_: None)).params if p.name}


def _given(ctx: click.Context) -> list[str]:
    """The prune options given on the command line (or by environment), in the command's order."""
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    options = [p.name for p in ctx.command.params if isinstance(p, click.Option) and p.name]
    return [name for name in options if ctx.get_parameter_source(name) in sources]


def _target(passes: Sequence[dict[str, Any]], flag: str) -> tuple[str, str] | None:
    for name, field in FLAG_FIELDS[flag]:
        for entry in passes:
            if entry["name"] == name and ((name, field) not in _ONLY_IF_SET or entry["config"].get(field)):
                return name, field
    return None


def preset_passes(
    ctx: click.Context, name: str, flags: Mapping[str, Any], settings: Sequence[str], labels: str | None, job: Job
) -> tuple[PassSpec, ...]:
    """The passes of ``prune --preset NAME``: the preset's, then the prune flags, then ``--set`` applied.

    ``flags``: the values of :data:`FLAG_FIELDS`'s flags (``pattern`` as ``(n, m)``). ``--labels`` and
    ``--batch-size`` are given to every finetune pass.
    """
    preset = find_preset(name)
    allowed = {*FLAG_FIELDS, *_PRESET_OPTIONS, *_job_option_names()}
    refused = [n for n in _given(ctx) if n not in allowed]
    if refused:
        raise RecipeError(
            f"{_flag(refused[0])} does not combine with --preset; set the preset's fields with --set PASS.FIELD=VALUE"
            f" (see 'onnxprune presets {name}')"
        )
    passes = preset.recipe_passes()
    for flag, value in flags.items():
        if value is not None:
            _set_flag(preset.name, passes, flag, value)
    names = {entry["name"] for entry in passes}
    for field in _SELECTION:
        if ctx.get_parameter_source(field) == ParameterSource.COMMANDLINE:
            owners = [n for n in names if n in PASSES and field in PASSES[n].config_class.__dataclass_fields__]
            if not owners:
                raise RecipeError(f"{_flag(field)}: no pass of preset '{preset.name}' selects weights")
            for entry in passes:
                if entry["name"] in owners:
                    entry["config"][field] = job.selection[field]
    for entry in passes:  # the batch size of prune's own fine-tuning (--finetune-steps) too
        if entry["name"] == "finetune" and ctx.get_parameter_source("batch_size") == ParameterSource.COMMANDLINE:
            entry["config"]["batch_size"] = job.batch_size
    if labels is not None:
        if "finetune" not in names:
            raise RecipeError(f"--labels: preset '{preset.name}' does not fine-tune (labels feed finetune passes)")
        for entry in passes:
            if entry["name"] == "finetune":
                entry["config"]["labels"] = absolute(labels)
    passes = apply_overrides(preset, passes, parse_assignments(settings, "--set"), what="--set")
    return tuple(PassSpec(entry["name"], entry["config"]) for entry in passes)


def _set_flag(preset: str, passes: list[dict[str, Any]], flag: str, value: Any) -> None:
    target = _target(passes, flag)
    if target is None:
        fields = ", ".join(f"{p}.{f}" for p, f in FLAG_FIELDS[flag])
        raise RecipeError(
            f"{_flag(flag)}: preset '{preset}' has none of {fields}; use --set PASS.FIELD=VALUE"
            f" (see 'onnxprune presets {preset}')"
        )
    pass_name, field = target
    for entry in passes:
        if entry["name"] != pass_name:
            continue
        if flag == "pattern":
            n, m = value
            entry["config"].update(n=n, m=m, **({"sparsity": 1.0 - n / m} if pass_name == "sparsegpt" else {}))
        else:
            entry["config"][field] = value


def _recipe(name: str) -> dict[str, Any]:
    """The recipe entries a preset expands to, exactly as a run uses them (validated)."""
    recipe = Recipe.from_dict({"model": "MODEL.onnx", "output": "OUT.onnx", "preset": name}, "preset")
    return {"preset": name, "passes": recipe.to_dict()["passes"]}


@cli.command("presets")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a list), recipes included.")
@handle_errors
def presets(names: tuple[str, ...], as_json: bool) -> None:
    """List the presets: research methods by name, with their METHODS.md id, paper, what they do and needs.

    With NAME: that preset in full, with the recipe it expands to (``prune MODEL -o OUT --preset NAME``
    runs it; ``--set PASS.FIELD=VALUE`` changes a field).
    """
    chosen = [find_preset(n) for n in names] if names else ordered()
    if as_json:
        click.echo(json.dumps([{**p.to_dict(), "recipe": _recipe(p.name)} for p in chosen], indent=2))
        return
    if not names:
        table = Table(title="onnxprune presets (onnxprune presets NAME shows one with its recipe)")
        table.add_column("name", no_wrap=True)
        table.add_column("method", no_wrap=True)
        table.add_column("what it does (paper)")
        table.add_column("needs")
        for p in chosen:
            what = Text(p.description)
            what.append(f"\n{p.paper}", style="dim")
            table.add_row(p.name, p.method or "-", what, "\n".join(p.requirements) or "-")
        out.print(table)
        return
    for p in chosen:
        out.print(f"[bold]{p.name}[/bold] ({p.method or 'not a seed method'}): ", end="", highlight=False)
        click.echo(p.description)
        click.echo(f"  paper: {p.paper}")
        click.echo(f"  needs: {', '.join(p.requirements) or 'nothing beyond the model'}")
        if p.notes:
            click.echo(f"  notes: {p.notes}")
        click.echo("  recipe (prune --preset, or run with 'preset: NAME'):")
        text = yaml.safe_dump(_recipe(p.name), sort_keys=False)
        click.echo("".join(f"    {line}\n" for line in text.splitlines()))
