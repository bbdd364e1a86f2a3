"""``onnxprune quantize``: INT8 on the bundled digits CNN, after pruning, and one-line errors with exit 2."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxprune._scratch import owner
from onnxprune.cli import cli
from onnxprune.passes._qdq import quantized_weights
from tests import models
from tests.conftest import DIGITS, sha256, to_ir


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _error_line(result: object) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def _accuracy(path: Path) -> float:
    data = np.load(DIGITS / "digits_test.npz")
    logits = ort.InferenceSession(str(path)).run(None, {"input": data["input"]})[0]
    return float((logits.argmax(axis=1) == data["label"]).mean())


def _our_temp_dirs() -> list[Path]:
    """Temporary folders this process made for onnxruntime's tools and has not removed."""
    return [p for kind in ("quant", "ort") for p in Path(tempfile.gettempdir()).glob(f"onnxprune-{kind}-{owner()}-*")]


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith((".onnxprune-", "onnxprune-"))]


def test_quantize_keeps_accuracy_and_never_touches_inputs(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    before, out, report = sha256(digits_model), tmp_path / "int8.onnx", tmp_path / "r.json"
    test = DIGITS / "digits_test.npz"
    result = _invoke("quantize", digits_model, "-o", out, "--calib", digits_calib, "--data", test, "--report", report)
    assert result.exit_code == 0, result.output
    assert sha256(digits_model) == before
    assert _accuracy(out) >= _accuracy(digits_model) - 0.01
    written = to_ir(onnx.load(out))
    assert quantized_weights(written) and all(w.values.dtype == np.int8 for w in quantized_weights(written))
    data = json.loads(report.read_text())
    assert data["passes"][0]["name"] == "quantize" and data["passes"][0]["summary"]["per_channel"] is True
    assert data["after"]["bytes"] < 0.5 * data["before"]["bytes"]
    assert data["validation"]["outputs"][0]["argmax_agreement"] >= 0.97
    assert "references" not in data  # nothing pruned before, no --reference: the input is the original
    assert _leftovers(tmp_path) == [] and _our_temp_dirs() == []


def test_prune_then_quantize_with_reference_reports_both(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    pruned, out, report = tmp_path / "pruned.onnx", tmp_path / "int8.onnx", tmp_path / "r.json"
    assert _invoke("prune", digits_model, "-o", pruned, "--pattern", "2:4", "--calib", digits_calib).exit_code == 0
    result = CliRunner().invoke(
        cli,
        ["quantize", str(pruned), "-o", str(out), "--calib", str(digits_calib), "--reference", str(digits_model)]
        + ["--per-tensor", "--report", str(report)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "original model / after" in result.output
    data = json.loads(report.read_text())
    (original,) = data["references"]
    assert original["what"] == "original model" and original["model"] == str(digits_model)
    assert original["stats"]["nonzero_params"] > data["before"]["nonzero_params"]  # the input was pruned
    assert original["stats"]["bytes"] > 3 * data["after"]["bytes"]
    assert original["validation"]["latency_cand_ms"] > 0
    written = to_ir(onnx.load(out))
    assert all(w.zero_point.size == 1 for w in quantized_weights(written))  # --per-tensor


def test_already_quantized_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    qdq, out = tmp_path / "qdq.onnx", tmp_path / "o.onnx"
    onnx.save(models.qdq_model(), qdq)
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    out.write_bytes(b"previous result")
    line = _error_line(_invoke("quantize", qdq, "-o", out, "--calib", tmp_path / "c.npz"))
    assert "already quantized" in line and "QuantizeLinear" in line
    assert out.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == [] and _our_temp_dirs() == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "needs calibration data"),
        (("--calib", "{calib}", "--activation-type", "int4"), "--activation-type"),
        (("--calib", "{calib}", "--calibrate-method", "mse"), "--calibrate-method"),
        (("--calib", "{calib}", "--include", "conv*"), "does not take --include"),
        (("--calib", "{calib}", "--max-drop", "1"), "does not take --max-drop"),
        (("--calib", "{calib}", "--reference", "{missing}"), "missing.onnx: no such file"),
        (("--calib", "{tmp}/nope.npz"), "nope.npz"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    tmp_path: Path, digits_model: Path, digits_calib: Path, args: tuple[str, ...], fragment: str
) -> None:
    out = tmp_path / "o.onnx"
    filled = [a.format(calib=digits_calib, missing=tmp_path / "missing.onnx", tmp=tmp_path) for a in args]
    line = _error_line(_invoke("quantize", digits_model, "-o", out, *filled))
    assert fragment in line
    assert not out.exists()


def test_output_over_the_input_exits_2(digits_model: Path, digits_calib: Path) -> None:
    before = sha256(digits_model)
    line = _error_line(_invoke("quantize", digits_model, "-o", digits_model, "--calib", digits_calib))
    assert "would overwrite the input model" in line
    assert sha256(digits_model) == before


def test_reference_with_other_inputs_exits_2(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    other = tmp_path / "mlp.onnx"
    onnx.save(models.mlp_model(), other)
    line = _error_line(
        _invoke("quantize", digits_model, "-o", tmp_path / "o.onnx", "--calib", digits_calib, "--reference", other)
    )
    assert "mlp.onnx" in line and "inputs" in line
    assert not (tmp_path / "o.onnx").exists()


def test_dump_recipe_then_run_reproduces(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    out = tmp_path / "int8.onnx"
    result = _invoke(
        "quantize", digits_model, "-o", out, "--calib", digits_calib, "--per-tensor", "--exclude", "*Gemm*"
    )
    assert result.exit_code == 0
    dumped = _invoke(
        "quantize",
        digits_model,
        "-o",
        out,
        "--calib",
        digits_calib,
        "--per-tensor",
        "--exclude",
        "*Gemm*",
        "--dump-recipe",
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dumped.output)
    assert "name: quantize" in dumped.output and "per_channel: false" in dumped.output
    first = out.read_bytes()
    assert _invoke("run", recipe).exit_code == 0
    again = to_ir(onnx.load(out))
    assert [w.float_name for w in quantized_weights(again)] == [
        w.float_name for w in quantized_weights(to_ir(onnx.load_from_string(first)))
    ]


def test_pruning_a_qdq_model_prunes_float_weights_and_names_the_int8_ones(tmp_path: Path) -> None:
    qdq, out, report = tmp_path / "qdq.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(models.qdq_model(), qdq)
    result = _invoke("prune", qdq, "-o", out, "--sparsity", "0.5", "--report", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert [e["tensor"] for e in data["passes"][0]["changed"]] == ["fc_w_float"]
    reasons = {s["tensor"]: s["reason"] for s in data["passes"][0]["skipped"]}
    assert "prune the float model, then quantize" in reasons["conv_w_q"]
    feed = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert np.isfinite(ort.InferenceSession(str(out)).run(None, feed)[0]).all()
