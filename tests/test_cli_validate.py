"""The CLI's fidelity gates: --metric, --fail-below (exit 3), --strict, bad data (exit 2), MACs at real shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner, Result

from onnxprune.cli import cli
from tests.conftest import ort_run, sha256, to_ir
from tests.models.recognizers import OCR_HEIGHT, ocr_macs, ocr_recognizer, offset_classifier

ACCURACY = """import numpy as np


def accuracy(outputs, data_path):
    truth = np.load(data_path)["label"]
    return float((outputs["logits"].argmax(1) == truth).mean())


def broken(outputs, data_path):
    return outputs["no_such_output"]
"""


def _invoke(*args: object, quiet: bool = True) -> Result:
    return CliRunner().invoke(cli, [*(["--quiet"] if quiet else []), *map(str, args)], catch_exceptions=False)


def _one_line(result: Result, code: int) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def classifier(tmp_path: Path) -> dict[str, Path]:
    """A classifier with a large shared logit offset, its collapsed copy, labelled data and a metric file."""
    ref, collapsed = tmp_path / "clf.onnx", tmp_path / "collapsed.onnx"
    onnx.save(offset_classifier(), ref)
    onnx.save(offset_classifier(collapsed=True), collapsed)
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, label=ort_run(to_ir(offset_classifier()), {"x": x})["logits"].argmax(1))
    metric = tmp_path / "task.py"
    metric.write_text(ACCURACY)
    return {"ref": ref, "collapsed": collapsed, "data": data, "metric": metric}


@pytest.fixture
def recognizer(tmp_path: Path) -> dict[str, Path]:
    """The dynamic-width recognizer and 12 images of width 48."""
    model = tmp_path / "ocr.onnx"
    onnx.save(ocr_recognizer(), model)
    data = tmp_path / "images.npz"
    np.savez(data, image=np.random.default_rng(1).random((12, 1, OCR_HEIGHT, 48)).astype(np.float32))
    return {"model": model, "data": data}


def test_validate_fail_below_exits_3_naming_the_threshold(tmp_path: Path, classifier: dict[str, Path]) -> None:
    report = tmp_path / "v.json"
    metric = f"{classifier['metric']}:accuracy"
    args = ("validate", classifier["ref"], classifier["collapsed"], "--data", classifier["data"], "--metric", metric)
    line = _one_line(_invoke(*args, "--fail-below", "cos=0.99,agree=0.95", "--report", report), 3)
    assert line.startswith("onnxprune: error: --fail-below: agree 0.") and "< 0.95 (output 'logits')" in line
    validation = json.loads(report.read_text())["validation"]
    assert validation["outputs"][0]["mean_cosine"] > 0.99
    assert validation["metric"]["reference"] == 1.0 and validation["metric"]["candidate"] < 0.3
    line = _one_line(_invoke(*args, "--fail-below", "metric-drop=0.05"), 3)
    assert "metric-drop" in line and "task.py:accuracy" in line
    same = _invoke("validate", classifier["ref"], classifier["ref"], "--data", classifier["data"], "--metric", metric,
                   "--fail-below", "cos=0.99,agree=0.95,top1=0.95,acc=0.99,metric-drop=0")  # fmt: skip
    assert same.exit_code == 0, same.output


def test_validate_table_shows_agreement_metric_and_random_note(classifier: dict[str, Path]) -> None:
    metric = f"{classifier['metric']}:accuracy"
    shown = _invoke("validate", classifier["ref"], classifier["collapsed"], "--data", classifier["data"],
                    "--metric", metric, quiet=False)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "top-1 agree" in shown.output and "metric" in shown.output and "LOW FIDELITY" in shown.stderr
    random = _invoke("validate", classifier["ref"], classifier["collapsed"], quiet=False)
    assert random.exit_code == 0 and "fidelity not measured" in " ".join(random.stdout.split())


def test_prune_strict_refuses_low_agreement_and_writes_nothing(tmp_path: Path, classifier: dict[str, Path]) -> None:
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    args = ("prune", classifier["ref"], "-o", out, "--sparsity", "0.9", "--calib", classifier["data"])
    line = _one_line(_invoke(*args, "--strict", "--report", report), 3)
    assert "--strict" in line and "argmax agreement" in line and "nothing written" in line
    assert not out.exists() and not report.exists()
    warned = _invoke(*args, quiet=False)
    assert warned.exit_code == 0 and out.exists()
    assert "LOW FIDELITY" in warned.stderr
    line = _one_line(_invoke("prune", classifier["ref"], "-o", tmp_path / "q.onnx", "--sparsity", "0.5", "--strict"), 2)
    assert "--strict needs real validation data" in line


def test_prune_metric_is_reported_and_recipes_keep_it(tmp_path: Path, classifier: dict[str, Path]) -> None:
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    args = ["prune", classifier["ref"], "-o", out, "--sparsity", "0.3", "--calib", classifier["data"]]
    assert _invoke(*args, "--metric", "task.py:accuracy", "--report", report).exit_code == 2  # relative to cwd
    spec = f"{classifier['metric']}:accuracy"
    assert _invoke(*args, "--metric", spec, "--report", report).exit_code == 0
    metric = json.loads(report.read_text())["validation"]["metric"]
    assert metric["reference"] == 1.0 and metric["drop"] == pytest.approx(1.0 - metric["candidate"])
    recipe = yaml.safe_load(_invoke(*args, "--metric", spec, "--strict", "--dump-recipe").output)
    assert recipe["metric"] == spec and recipe["strict"] is True
    recipe["metric"] = "task.py:accuracy"  # relative to the recipe's folder
    recipe["output"], recipe["report"], recipe["strict"] = "again.onnx", "again.json", False
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    ran = _invoke("run", tmp_path / "r.yaml")
    assert ran.exit_code == 0, ran.output
    assert json.loads((tmp_path / "again.json").read_text())["validation"]["metric"]["reference"] == 1.0


@pytest.mark.parametrize(
    ("data", "metric", "fail_below", "fragment"),
    [
        ({"label": np.zeros(63, np.int64)}, None, None, "'label' must hold one integer per sample (64)"),
        ({"label": np.full(64, 10, np.int64)}, None, None, "labels range over [10, 10]"),
        ({}, "broken", None, "raised KeyError: 'no_such_output'"),
        ({}, "missing", None, "has no function 'missing'"),
        ({}, None, "cos=0.99,agreement=0.9", "unknown key 'agreement'"),
        ({}, None, "metric-drop=0.01", "no --metric was given"),
        ({}, None, "acc=0.9", "--fail-below acc: the data holds no 'label'"),
    ],
)
def test_bad_validation_input_exits_2_with_one_line(
    tmp_path: Path, classifier: dict[str, Path], data: dict, metric: str | None, fail_below: str | None, fragment: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.load(classifier["data"])["x"], **data)
    before = sha256(classifier["collapsed"])
    report = tmp_path / "v.json"
    extra = [*(["--metric", f"{classifier['metric']}:{metric}"] if metric else []),
             *(["--fail-below", fail_below] if fail_below else [])]  # fmt: skip
    line = _one_line(_invoke("validate", classifier["ref"], classifier["collapsed"], "--data", path, "--report",
                             report, *extra), 2)  # fmt: skip
    assert fragment in line
    assert not report.exists() and sha256(classifier["collapsed"]) == before
    if metric or data:  # prune reads the same data: one line, nothing written
        out = tmp_path / "p.onnx"
        args = ["prune", classifier["ref"], "-o", out, "--sparsity", "0.5", "--calib", path, *extra]
        assert fragment in _one_line(_invoke(*args), 2)
        assert not out.exists()


def test_inspect_counts_macs_at_real_widths(recognizer: dict[str, Path]) -> None:
    unknown = json.loads(_invoke("inspect", recognizer["model"], "--json").output)
    assert unknown["assumed_dims"] == ["'width' (input 'image', axis 3)"]
    assert unknown["macs"] != ocr_macs(48)
    shown = _invoke("inspect", recognizer["model"])
    assert "MACs at assumed dim 1" in shown.output and "'width'" in shown.output
    given = json.loads(_invoke("inspect", recognizer["model"], "--json", "--input-shape", "image=1,1,16,64").output)
    assert given["macs"] == ocr_macs(64) and given["assumed_dims"] == []
    from_data = json.loads(_invoke("inspect", recognizer["model"], "--json", "--calib", recognizer["data"]).output)
    assert from_data["macs"] == ocr_macs(48) and from_data["assumed_dims"] == []


def test_prune_reports_macs_and_sequence_agreement_at_data_shapes(tmp_path: Path, recognizer: dict[str, Path]) -> None:
    report = tmp_path / "r.json"
    result = _invoke(
        "prune", recognizer["model"], "-o", tmp_path / "p.onnx", "--sparsity", "0.5", "--calib", recognizer["data"],
        "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["before"]["macs"] == data["after"]["macs"] == ocr_macs(48)
    assert data["before"]["assumed_dims"] == []
    logits = data["validation"]["outputs"][0]
    assert logits["top1_agreement"] is None
    assert 0 <= logits["sequence_agreement"] <= logits["argmax_agreement"] <= 1
    shown = _invoke("validate", recognizer["model"], tmp_path / "p.onnx", "--data", recognizer["data"], quiet=False)
    assert "whole sequence" in shown.stdout and "assumed dim" not in shown.stdout
