"""The CLI through click's CliRunner: happy paths, recipes, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from tests.conftest import DIGITS, sha256


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _accuracy(path: Path) -> float:
    data = np.load(DIGITS / "digits_test.npz")
    logits = ort.InferenceSession(str(path)).run(None, {"input": data["input"]})[0]
    return float((logits.argmax(axis=1) == data["label"]).mean())


def test_prune_writes_model_and_report(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    before = sha256(digits_model)
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    result = _invoke(
        "prune",
        digits_model,
        "-o",
        out,
        "--sparsity",
        "0.5",
        "--importance",
        "wanda",
        "--calib",
        digits_calib,
        "--report",
        report,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["after"]["nonzero_params"] < 0.55 * data["before"]["nonzero_params"]
    assert data["validation"]["checker"] == "passed"
    assert data["validation"]["outputs"][0]["top1_agreement"] > 0.9
    assert data["passes"][0]["summary"]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert sha256(digits_model) == before


def test_table_is_printed(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["prune", str(digits_model), "-o", str(tmp_path / "p.onnx"), "--pattern", "2:4", "--calib", str(digits_calib)],
    )
    assert result.exit_code == 0, result.output
    assert "nonzero parameters" in result.output and "latency" in result.output


def test_dump_recipe_then_run_reproduces(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    out = tmp_path / "p.onnx"
    args = [
        "prune",
        digits_model,
        "-o",
        out,
        "--sparsity",
        "0.6",
        "--scope",
        "global",
        "--calib",
        digits_calib,
        "--exclude",
        "*classifier.3*",
    ]
    dumped = _invoke(*args, "--dump-recipe")
    assert dumped.exit_code == 0 and not out.exists()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dumped.output)
    assert yaml.safe_load(dumped.output)["passes"][0]["config"]["exclude"] == ["*classifier.3*"]
    assert _invoke("run", recipe).exit_code == 0
    first = out.read_bytes()
    out.unlink()
    assert _invoke(*args).exit_code == 0
    assert out.read_bytes() == first


def test_validate_inspect_passes(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    out = tmp_path / "p.onnx"
    assert _invoke("prune", digits_model, "-o", out, "--sparsity", "0.3").exit_code == 0
    report = tmp_path / "v.json"
    result = _invoke("validate", digits_model, out, "--data", digits_calib, "--report", report)
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["validation"]["samples"] == 128
    info = json.loads(_invoke("inspect", out, "--json").output)
    assert {w["op"] for w in info["prunable"]} == {"Conv", "Gemm"}
    assert all(w["sparsity"] == pytest.approx(0.3, abs=0.01) for w in info["prunable"])
    assert info["macs"] > 0
    listing = _invoke("passes").output
    assert "unstructured" in listing and "nm" in listing
    finetune = " ".join(_invoke("passes", "finetune").output.split())
    assert "method: rigl options: update_every = 100" in finetune  # each method's options, with their docs
    assert "allocation: pca options: variance = 0.99" in " ".join(_invoke("passes", "channels").output.split())


def test_bundled_model_keeps_stated_accuracy_at_50_percent(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    assert _accuracy(digits_model) >= 0.98
    floors = {("wanda", "layer"): 0.97, ("magnitude", "global"): 0.97, ("magnitude", "layer"): 0.93}
    for (importance, scope), floor in floors.items():
        out = tmp_path / f"{importance}-{scope}.onnx"
        result = _invoke(
            "prune",
            digits_model,
            "-o",
            out,
            "--sparsity",
            "0.5",
            "--importance",
            importance,
            "--scope",
            scope,
            "--calib",
            digits_calib,
        )
        assert result.exit_code == 0, result.output
        assert _accuracy(out) >= floor, (importance, scope)


def _error_line(result: object) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("kind", ["truncated", "not_onnx", "missing"])
def test_bad_model_files_exit_2_with_one_line(tmp_path: Path, digits_model: Path, kind: str) -> None:
    bad = tmp_path / "bad.onnx"
    if kind == "truncated":
        bad.write_bytes(digits_model.read_bytes()[:5000])
    elif kind == "not_onnx":
        bad.write_text("name,value\na,1\n")
    before = sha256(bad) if bad.exists() else None
    line = _error_line(_invoke("prune", bad, "-o", tmp_path / "o.onnx", "--sparsity", "0.5"))
    assert "bad.onnx" in line and "Traceback" not in line
    assert not (tmp_path / "o.onnx").exists()
    if before:
        assert sha256(bad) == before


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"image": np.zeros((4, 1, 1, 8, 8), np.float32)}, "missing model input 'input'"),
        ({"input": np.zeros((4, 1, 2, 8, 8), np.float32)}, "input 'input' has shape"),
    ],
)
def test_bad_calibration_exits_2(tmp_path: Path, digits_model: Path, arrays: dict, fragment: str) -> None:
    calib = tmp_path / "c.npz"
    np.savez(calib, **arrays)
    line = _error_line(
        _invoke(
            "prune",
            digits_model,
            "-o",
            tmp_path / "o.onnx",
            "--sparsity",
            "0.5",
            "--importance",
            "wanda",
            "--calib",
            calib,
        )
    )
    assert fragment in line
    assert not (tmp_path / "o.onnx").exists()


def test_output_equal_to_input_exits_2(digits_model: Path) -> None:
    before = sha256(digits_model)
    line = _error_line(_invoke("prune", digits_model, "-o", digits_model, "--sparsity", "0.5"))
    assert "would overwrite the input model" in line
    assert sha256(digits_model) == before


def test_usage_errors_exit_2(tmp_path: Path, digits_model: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["prune", str(digits_model), "-o", str(tmp_path / "o.onnx")]).exit_code == 2
    assert (
        runner.invoke(
            cli, ["prune", str(digits_model), "-o", str(tmp_path / "o.onnx"), "--pattern", "two:four"]
        ).exit_code
        == 2
    )
    bad_recipe = tmp_path / "r.yaml"
    bad_recipe.write_text("model: x.onnx\noutput: y.onnx\npasses: [{name: nosuch}]\n")
    assert "unknown pass 'nosuch'" in _error_line(_invoke("run", bad_recipe))


def test_validate_reports_accuracy_when_labels_are_given(tmp_path: Path, digits_model: Path) -> None:
    out, report = tmp_path / "p.onnx", tmp_path / "v.json"
    assert _invoke("prune", digits_model, "-o", out, "--sparsity", "0.5", "--scope", "global").exit_code == 0
    assert (
        _invoke("validate", digits_model, out, "--data", DIGITS / "digits_test.npz", "--report", report).exit_code == 0
    )
    logits = json.loads(report.read_text())["validation"]["outputs"][0]
    assert logits["accuracy_ref"] == pytest.approx(_accuracy(digits_model))
    assert logits["accuracy_cand"] == pytest.approx(_accuracy(out))


def test_max_drop_finds_the_strongest_sparsity_within_the_drop(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    out, report = tmp_path / "m.onnx", tmp_path / "m.json"
    data = DIGITS / "digits_test.npz"
    args = ["prune", digits_model, "-o", out, "--sparsity", "0.95", "--importance", "magnitude"]
    result = _invoke(*args, "--calib", digits_calib, "--data", data, "--max-drop", "1", "--report", report)
    assert result.exit_code == 0, result.output
    search = json.loads(report.read_text())["budget_search"]
    assert search["measure"] == "top-1 points" and search["measured_drop"] <= 1.0
    assert 0.3 < search["found"] < 0.95 and len(search["trials"]) == 7
    assert _accuracy(out) >= _accuracy(digits_model) - 0.01
    refused = _invoke("prune", digits_model, "-o", out, "--pattern", "2:4", "--data", data, "--max-drop", "1")
    assert refused.exit_code == 2 and "--max-drop needs a pass with a global budget" in _error_line(refused)
    random = _invoke("prune", digits_model, "-o", tmp_path / "r.onnx", "--sparsity", "0.5", "--max-drop", "1")
    assert random.exit_code == 2 and "real data" in _error_line(random)
    assert not (tmp_path / "r.onnx").exists()
