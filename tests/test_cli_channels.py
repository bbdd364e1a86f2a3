"""CLI for structured pruning: prune --channels/--target-flops, inspect --groups, errors."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from tests.conftest import sha256


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _conv_widths(path: Path) -> list[int]:
    model = onnx.load(path)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    return [shapes[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"]


def test_prune_channels_with_reconstruction_and_verify(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    before = sha256(digits_model)
    out, report = tmp_path / "c.onnx", tmp_path / "r.json"
    result = _invoke(
        "prune",
        digits_model,
        "-o",
        out,
        "--channels",
        "0.5",
        "--calib",
        digits_calib,
        "--round-to",
        "4",
        "--verify",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    assert sha256(digits_model) == before
    assert all(w % 4 == 0 for w in _conv_widths(out)) and _conv_widths(out) < _conv_widths(digits_model)
    passes = json.loads(report.read_text())["passes"]
    summary = passes[0]["summary"]
    assert passes[0]["name"] == "channels" and summary["refitted"] > 0 and summary["verify_max_rel_diff"] < 1e-5
    assert out.stat().st_size < digits_model.stat().st_size / 2


def test_prune_target_flops_and_no_reconstruct(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    report = tmp_path / "r.json"
    result = _invoke(
        "prune",
        digits_model,
        "-o",
        tmp_path / "t.onnx",
        "--target-flops",
        "0.5",
        "--calib",
        digits_calib,
        "--no-reconstruct",
        "--importance",
        "wanda",
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["passes"][0]["summary"]
    assert abs(summary["macs_kept"] - 0.5) <= 0.01 and summary["refitted"] == 0


def test_dump_recipe_round_trips(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    result = _invoke(
        "prune", digits_model, "-o", tmp_path / "x.onnx", "--channels", "0.25", "--calib", digits_calib, "--dump-recipe"
    )
    recipe = yaml.safe_load(result.output)
    assert recipe["passes"][0]["name"] == "channels" and recipe["passes"][0]["config"]["ratio"] == 0.25
    path = tmp_path / "r.yaml"
    path.write_text(result.output)
    assert _invoke("run", path).exit_code == 0


def test_inspect_groups(digits_model: Path) -> None:
    result = _invoke("inspect", digits_model, "--groups", "--json")
    groups = json.loads(result.output)
    assert sum(g["prunable"] for g in groups) == 4
    last = next(g for g in groups if not g["prunable"])
    assert "graph output" in last["reasons"][0]
    assert all(g["values"] and g["params"] for g in groups)
    text = CliRunner().invoke(cli, ["inspect", str(digits_model), "--groups"]).output
    assert "not prunable" in text and "4 of 5 groups prunable" in text


def test_structured_flags_are_checked(tmp_path: Path, digits_model: Path) -> None:
    out = tmp_path / "x.onnx"
    for args in (
        ("--channels", "0.5", "--sparsity", "0.5"),
        ("--sparsity", "0.5", "--verify"),
        ("--sparsity", "0.5", "--importance", "bn"),
        ("--channels", "1.5"),
        ("--channels", "0.5", "--importance", "sparsegpt"),
    ):
        result = CliRunner().invoke(cli, ["prune", str(digits_model), "-o", str(out), *args])
        assert result.exit_code == 2, (args, result.output)
        assert not out.exists()


def test_bad_model_gets_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    result = CliRunner().invoke(cli, ["prune", str(bad), "-o", str(tmp_path / "o.onnx"), "--channels", "0.5"])
    assert result.exit_code == 2 and "bad.onnx" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["inspect", str(bad), "--groups"])
    assert result.exit_code == 2 and "bad.onnx" in result.output
