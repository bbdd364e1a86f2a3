"""``onnxprune analyze`` and ``prune --allocation``: files written, cache reused, bad input refused with exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxprune.analysis.sensitivity import _engine as engine
from onnxprune.cli import cli
from tests.conftest import DIGITS, sha256


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))


def _invoke(*args: object, quiet: bool = True) -> object:
    return CliRunner().invoke(cli, [*(["--quiet"] if quiet else []), *map(str, args)], catch_exceptions=False)


def test_analyze_writes_files_and_reuses_the_cache(
    tmp_path: Path, digits_model: Path, digits_calib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sha256(digits_model)
    prefix = tmp_path / "out" / "digits"
    args = ["analyze", digits_model, "--calib", digits_calib, "--data", DIGITS / "digits_test.npz", "-o", prefix]
    result = _invoke(*args, "--kinds", "unstructured,channels,lowrank", quiet=False)
    assert result.exit_code == 0, result.output
    assert "dense top1: 98.6%" in result.output and "error" in result.output
    table = json.loads(prefix.with_suffix(".json").read_text())
    assert table["metric_name"] == "top1" and table["dense_metric"] == pytest.approx(0.986, abs=1e-3)
    assert {u["kind"] for u in table["units"]} == {"unstructured", "channels", "lowrank"}
    rows = list(csv.DictReader(prefix.with_suffix(".csv").open()))
    assert len(rows) == 4 * len(table["units"]) and set(rows[0]) >= {"kind", "unit", "ratio", "error", "top1"}
    assert prefix.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "cache").glob("sensitivity-*.json"))) == 3  # one per kind
    assert sha256(digits_model) == before

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(engine, "Frontier", fail)
    again = _invoke(
        *args[:-1], tmp_path / "again", "--kinds", "lowrank,channels,unstructured", "--grid", "0.9,0.75,0.5,0.25"
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again.json").read_text())["units"] == table["units"]
    # --allocation sensitivity reads the same cache (its errors do not depend on --data)
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    pruned = _invoke(
        "prune", digits_model, "-o", out, "--sparsity", "0.5", "--importance", "magnitude",
        "--allocation", "sensitivity", "--calib", digits_calib, "--report", report,
        "--one-shot",  # sequential SparseGPT also zeroes weights of inputs that upstream pruning silenced
    )  # fmt: skip
    assert pruned.exit_code == 0, pruned.output


def _bad_labels(tmp_path: Path, labels: np.ndarray) -> Path:
    data = np.load(DIGITS / "digits_test.npz")
    path = tmp_path / f"bad{len(labels)}.npz"
    np.savez(path, input=data["input"][:20], label=labels)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "needs calibration data"),
        (("--calib", "CALIB", "--data", "SHORT"), "one integer per sample"),
        (("--calib", "CALIB", "--data", "RANGE"), "the model has 10 classes"),
        (("--calib", "CALIB", "--kinds", "layers"), "kinds must be among"),
        (("--calib", "CALIB", "--grid", "0.5,1.5"), "in (0, 1)"),
    ],
)
def test_analyze_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, digits_model: Path, digits_calib: Path, extra: tuple[str, ...], message: str
) -> None:
    paths = {
        "CALIB": digits_calib,
        "SHORT": _bad_labels(tmp_path, np.zeros(5, dtype=np.int64)),
        "RANGE": _bad_labels(tmp_path, np.full(20, 12, dtype=np.int64)),
    }
    out = tmp_path / "res" / "s"
    result = _invoke("analyze", digits_model, "-o", out, *(paths.get(e, e) for e in extra))
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "res").exists() and not (tmp_path / "cache").exists()


def test_prune_allocation_needs_calibration(tmp_path: Path, digits_model: Path) -> None:
    out = tmp_path / "p.onnx"
    result = _invoke("prune", digits_model, "-o", out, "--sparsity", "0.7", "--allocation", "sensitivity")
    assert result.exit_code == 2 and "needs calibration data" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    result = _invoke("prune", digits_model, "-o", out, "--pattern", "2:4", "--allocation", "owl")
    assert result.exit_code == 2 and not out.exists()


@pytest.mark.parametrize("importance", ["magnitude", "sparsegpt"])
def test_prune_with_sensitivity_allocation(
    tmp_path: Path, digits_model: Path, digits_calib: Path, importance: str
) -> None:
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    result = _invoke(
        "prune", digits_model, "-o", out, "--sparsity", "0.75", "--importance", importance,
        "--allocation", "sensitivity", "--calib", digits_calib, "--report", report,
        "--one-shot",  # sequential SparseGPT also zeroes weights of inputs that upstream pruning silenced
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())["passes"][0]["summary"]
    assert summary["allocation"] == "sensitivity"
    # exact, except that SparseGPT also zeroes the weights of inputs that never fire on the data (a layer
    # allocated less sparsity than its dead inputs' share ends up sparser than allocated)
    assert 0.75 - 1e-3 <= summary["achieved_sparsity"] <= (0.75 + 0.005 if importance == "sparsegpt" else 0.75 + 1e-3)


def test_scope_global_is_allocation_global(tmp_path: Path, digits_model: Path) -> None:
    def recipe(*args: str) -> str:
        result = _invoke("prune", digits_model, "-o", tmp_path / "p.onnx", "--sparsity", "0.5", *args, "--dump-recipe")
        assert result.exit_code == 0, result.output
        return result.output

    assert recipe("--scope", "global") == recipe("--allocation", "global")


@pytest.mark.parametrize("importance", ["wanda", "sparsegpt"])
def test_nm_with_sensitivity_allocation_keeps_the_most_sensitive_dense(
    tmp_path: Path, digits_model: Path, digits_calib: Path, importance: str
) -> None:
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    result = _invoke(
        "prune", digits_model, "-o", out, "--pattern", "2:4", "--sparsity", "0.3", "--importance", importance,
        "--allocation", "sensitivity", "--calib", digits_calib, "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())["passes"][0]
    dense = [s for s in data["skipped"] if "left dense by the allocation" in s["reason"]]
    assert dense and data["changed"]  # some weights N:M, the most sensitive dense
    summary = data["summary"]
    assert summary["dense_by_allocation"] == len(dense) and summary["nm_budget"] == 0.3
    pruned = sum(e["zeros"] for e in data["changed"])  # the budget is over the weights that fit the pattern
    assert pruned >= 0.3 * summary["nm_candidates_numel"]
    assert all(e["pattern"] == "2:4" for e in data["changed"])


def test_nm_budget_needs_sensitivity_and_fits_the_pattern(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    out = tmp_path / "p.onnx"
    result = _invoke("prune", digits_model, "-o", out, "--pattern", "2:4", "--sparsity", "0.3", "--calib", digits_calib)
    assert result.exit_code == 2 and "needs --allocation sensitivity" in result.output and not out.exists()
    result = _invoke(
        "prune", digits_model, "-o", out, "--pattern", "2:4", "--sparsity", "0.6", "--allocation", "sensitivity",
        "--importance", "wanda", "--calib", digits_calib,
    )  # fmt: skip
    assert result.exit_code == 2 and "0.5" in result.output and not out.exists()
