"""One-line errors for usage mistakes, degenerate settings, non-finite data and outputs, diverged fine-tunes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxprune.cli import cli
from onnxprune.fidelity import OutputTracker
from tests.conftest import DIGITS, sha256


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _one_error_line(result: object, code: int = 2) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxprune: error: ") and len(lines[0]) < 500
    return lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["prune", "{model}"], "Missing option '-o'"),
        (["prune", "{model}", "-o", "{out}", "--sparsity", "2"], "--sparsity"),
        (["prune", "{model}", "-o", "{out}", "--pattern", "two:four"], "--pattern"),
        (["prune", "{model}", "-o", "{out}", "--pattern", "9" * 5000 + ":4"], "--pattern"),
        (["prune", "{model}", "-o", "{out}", "--scope", "nosuch"], "--scope"),
        (["prune", "{model}", "-o", "{out}", "--bogus"], "--bogus"),
        (["prune", "{model}", "-o", "{out}"], "give exactly one of"),
        (["prnue", "{model}"], "No such command"),
        (["validate", "{model}"], "Missing argument"),
        (["finetune", "{model}", "-o", "{out}", "--teacher", "{model}"], "needs --calib"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path, digits_model: Path, args: list, fragment: str) -> None:
    fill = {"{model}": str(digits_model), "{out}": str(tmp_path / "o.onnx")}
    before = sha256(digits_model)
    line = _one_error_line(_invoke(*[fill.get(a, a) for a in args]))
    assert fragment in line and "--help" in line and "Usage:" not in line
    assert sha256(digits_model) == before and not (tmp_path / "o.onnx").exists()


def test_help_still_shows_the_usage(digits_model: Path) -> None:
    result = _invoke("prune", "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--pattern", "0:4"], "1 <= N <= M"),
        (["--pattern", "5:4"], "1 <= N <= M"),
        (["--sparsity", "0.999999"], "would zero every weight"),
        (["--sparsity", "0.999999", "--scope", "global"], "would zero every weight"),
        (["--sparsity", "0.5", "--input-shape", "image=1,1,8,8"], "no such input (inputs: input)"),
        (["--sparsity", "0.5", "--input-shape", "input=1,-1,8,8"], "dims >= 1"),
    ],
)
def test_degenerate_and_unknown_settings_are_refused(
    tmp_path: Path, digits_model: Path, options: list, fragment: str
) -> None:
    out = tmp_path / "o.onnx"
    before = sha256(digits_model)
    line = _one_error_line(_invoke("prune", digits_model, "-o", out, *options))
    assert fragment in line
    assert not out.exists() and sha256(digits_model) == before


def test_inspect_refuses_an_unknown_input_shape_name(digits_model: Path) -> None:
    assert "'nosuch'" in _one_error_line(_invoke("inspect", digits_model, "--input-shape", "nosuch=1,1,8,8"))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_one_non_finite_calibration_value_is_refused(tmp_path: Path, digits_model: Path, value: float) -> None:
    with np.load(DIGITS / "digits_calib.npz") as data:
        x = data["input"].copy()
    x.reshape(-1)[517] = value  # one of 8,192 values: sample 517 // 64 = 8
    calib = tmp_path / "c.npz"
    np.savez(calib, input=x)
    out = tmp_path / "o.onnx"
    before = sha256(calib), sha256(digits_model)
    line = _one_error_line(
        _invoke("prune", digits_model, "-o", out, "--sparsity", "0.5", "--importance", "wanda", "--calib", calib)
    )
    assert "c.npz: input 'input' sample 8 holds" in line
    assert not out.exists() and (sha256(calib), sha256(digits_model)) == before


def _log_model(path: Path) -> Path:
    """y[N, 4] = Log(x) * w: NaN for every negative input, in the reference and the candidate alike."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["l"]), helper.make_node("Mul", ["l", "w"], ["y"])],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_nan_in_both_models_outputs_is_a_failure_not_a_perfect_match() -> None:
    a = np.array([[np.nan, 1.0, 0.0], [0.0, 2.0, 1.0]])
    tracker = OutputTracker("y")
    tracker.add(a, a.copy())
    result = tracker.result()
    assert math.isnan(result.max_abs_diff) and math.isnan(result.mean_cosine)
    assert result.top1_agreement == 0.5 and result.nonfinite_ref == 1


def test_validate_exits_3_when_outputs_are_nan(tmp_path: Path) -> None:
    model = _log_model(tmp_path / "log.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.array([[1, 2, 3, 4], [-1, 2, 3, 4]], np.float32))
    report = tmp_path / "v.json"
    line = _one_error_line(_invoke("validate", model, model, "--data", data, "--report", report), code=3)
    assert "NaN/inf" in line and "reference" in line
    figures = json.loads(report.read_text())["validation"]["outputs"][0]
    assert figures["max_abs_diff"] is None and figures["top1_agreement"] == 0.5  # NaN is written as null


def test_a_run_whose_outputs_are_nan_writes_nothing(tmp_path: Path) -> None:
    model = _log_model(tmp_path / "log.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.array([[1, 2, 3, 4], [-1, 2, 3, 4]], np.float32))
    out = tmp_path / "o.onnx"
    line = _one_error_line(
        _invoke("prune", model, "-o", out, "--sparsity", "0.25", "--calib", data, "--importance", "magnitude"), code=3
    )
    assert "nothing written" in line and not out.exists()


def test_a_diverging_finetune_is_not_written(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "o.onnx"
    args = ["finetune", digits_model, "-o", out, "--teacher", digits_model, "--calib", digits_calib, "--steps", "5"]
    line = _one_error_line(_invoke(*args, "--lr", "1e30", "--holdout", "0"))
    assert "diverged" in line and "lower --lr" in line
    assert not out.exists()
    # with held-out samples, the best finite weights (here the starting ones) are kept and validated
    result = _invoke(*args, "--lr", "1e30")
    assert result.exit_code == 0, result.output
    assert np.isfinite(
        np.concatenate([np.ravel(onnx.numpy_helper.to_array(t)) for t in onnx.load(out).graph.initializer])
    ).all()


@pytest.mark.parametrize("values", [[0, 1, -1], [0, 1, 10]], ids=["negative", "past-the-classes"])
def test_finetune_labels_outside_the_classes_are_refused(
    tmp_path: Path, digits_model: Path, digits_calib: Path, values: list
) -> None:
    pytest.importorskip("torch")
    labels = tmp_path / "labels.npz"
    np.savez(labels, label=np.resize(np.array(values, np.int64), 128))
    out = tmp_path / "o.onnx"
    args = ["finetune", digits_model, "-o", out, "--teacher", digits_model, "--calib", digits_calib]
    line = _one_error_line(_invoke(*args, "--labels", labels, "--steps", "1", "--lr", "1e-4"))
    assert "labels" in line and not out.exists()
