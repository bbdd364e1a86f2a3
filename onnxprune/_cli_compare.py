"""The ``compare`` verb: the zero-masks of two pruned models of one graph (M5) and their induced structure."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from onnxprune import _io
from onnxprune._cli_base import cli, handle_errors, out
from onnxprune.errors import RecipeError


@cli.command("compare")
@click.argument("model_a", type=click.Path(dir_okay=False))
@click.argument("model_b", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--structure", is_flag=True, help="Also list whole kernels/filters/inputs at zero in each model.")
@handle_errors
def compare_cmd(model_a: str, model_b: str, as_json: bool, structure: bool) -> None:
    """Mask similarity of two pruned models of one graph: Jaccard (IoU) and Hamming, per weight and global.

    Weights are matched by name and shape; each figure is shown beside two random masks of the same
    densities. With --structure, the fraction of all-zero kernels, filters and inputs of each model beside
    the random expectation (1 - d)^K.
    """
    from onnxprune.analysis.masks import induced_structure, mask_similarity

    a, b = _io.load(model_a), _io.load(model_b)
    similarity = mask_similarity(a, b)
    if not similarity.layers:
        raise RecipeError(f"{model_a} and {model_b} share no prunable weight (same name and shape)")
    result: dict[str, Any] = similarity.as_dict()
    if structure:
        result["structure"] = {
            "a": [row.as_dict() for row in induced_structure(a)],
            "b": [row.as_dict() for row in induced_structure(b)],
        }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_similarity(result)
    for side, path in (("a", model_a), ("b", model_b)):
        if structure:
            _print_structure(path, result["structure"][side])


def _print_similarity(result: dict[str, Any]) -> None:
    table = Table(title="mask similarity (kept = nonzero weights)")
    for column in ("tensor", "size", "density A", "density B", "IoU", "IoU random", "Hamming"):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for row in (*result["layers"], result["global"]):
        table.add_row(
            row["tensor"],
            str(row["size"]),
            f"{row['density_a']:.3f}",
            f"{row['density_b']:.3f}",
            f"{row['jaccard']:.3f}",
            f"{row['random_jaccard']:.3f}",
            f"{row['hamming']:.4f}",
        )
    out.print(table)
    for name in result["unmatched"]:
        out.print(f"not compared: {name} (in one model only, or reshaped)", highlight=False)


def _print_structure(model: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{model}: whole groups at zero")
    for column in ("tensor", "group", "groups", "K", "density", "zero", "random (1-d)^K"):
        table.add_column(column, justify="left" if column in ("tensor", "group") else "right")
    for row in rows:
        table.add_row(
            row["tensor"],
            row["grouping"],
            str(row["groups"]),
            str(row["group_size"]),
            f"{row['density']:.3f}",
            f"{row['zero_fraction']:.3f}",
            f"{row['random_fraction']:.3g}",
        )
    out.print(table)
