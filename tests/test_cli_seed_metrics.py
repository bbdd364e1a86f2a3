"""The seed metrics on the CLI: ``compare`` (mask IoU, induced structure), ShrinkBench in ``inspect``/``validate``,
ReLU activity in ``validate``'s report -- on pruned outputs of the existing passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from onnxprune import _io
from onnxprune.analysis.masks import mask_similarity
from onnxprune.cli import cli
from tests.conftest import DIGITS, to_ir
from tests.models.handbuilt import conv_model


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _prune(model: Path, out: Path, *flags: object) -> Path:
    result = _invoke("prune", model, "-o", out, *flags)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def pruned_pair(tmp_path: Path, digits_model: Path) -> tuple[Path, Path]:
    """The digits CNN at 50% unstructured sparsity, by global and by per-layer magnitude."""
    return (
        _prune(digits_model, tmp_path / "global.onnx", "--sparsity", 0.5, "--scope", "global"),
        _prune(digits_model, tmp_path / "layer.onnx", "--sparsity", 0.5, "--scope", "layer"),
    )


def test_compare_json_matches_the_analysis(pruned_pair: tuple[Path, Path]) -> None:
    a, b = pruned_pair
    result = _invoke("compare", a, b, "--json", "--structure")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = mask_similarity(_io.load(str(a)), _io.load(str(b))).total
    assert data["global"]["jaccard"] == pytest.approx(expected.jaccard)
    assert data["global"]["density_a"] == pytest.approx(0.5, abs=0.01)
    assert 0 < data["global"]["jaccard"] < 1 and data["global"]["jaccard"] > data["global"]["random_jaccard"]
    assert {row["grouping"] for row in data["structure"]["a"]} >= {"kernel", "filter", "input"}


def test_compare_a_model_with_itself(pruned_pair: tuple[Path, Path]) -> None:
    data = json.loads(_invoke("compare", pruned_pair[0], pruned_pair[0], "--json").output)
    assert data["global"]["jaccard"] == 1.0 and data["global"]["hamming"] == 0.0
    assert all(layer["jaccard"] == 1.0 for layer in data["layers"])


def test_compare_table_and_unrelated_models(pruned_pair: tuple[Path, Path], tmp_path: Path) -> None:
    table = _invoke("compare", *pruned_pair, "--structure")
    assert table.exit_code == 0 and "mask similarity" in table.output and "(global)" in table.output
    other = tmp_path / "other.onnx"
    _io.save(to_ir(conv_model()), other)
    refused = _invoke("compare", pruned_pair[0], other)
    assert refused.exit_code == 2 and "share no prunable weight" in refused.output


def test_inspect_json_has_shrinkbench(pruned_pair: tuple[Path, Path]) -> None:
    data = json.loads(_invoke("inspect", pruned_pair[0], "--json").output)
    shrink = data["shrinkbench"]
    assert shrink["prunable_compression"] == pytest.approx(2.0, rel=0.02)
    assert shrink["theoretical_speedup"] == pytest.approx(shrink["macs"] / shrink["sparse_macs"])
    assert 1 < shrink["compression"] <= shrink["prunable_compression"]


def test_validate_report_has_shrinkbench_and_activity(
    pruned_pair: tuple[Path, Path], digits_model: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    data = DIGITS / "digits_calib.npz"
    result = _invoke("validate", digits_model, pruned_pair[0], "--data", data, "--report", report)
    assert result.exit_code == 0, result.output
    content = json.loads(report.read_text())
    assert content["shrinkbench"]["before"]["prunable_compression"] == 1.0
    assert content["shrinkbench"]["after"]["prunable_compression"] == pytest.approx(2.0, rel=0.02)
    assert content["shrinkbench"]["after"]["macs"] == content["after"]["macs"]
    for side in ("reference", "candidate"):
        activity = content["activity"][side]
        assert activity["layers"] and activity["samples"] == 128
        assert activity["dead_rate"] == pytest.approx(1 - activity["density"])
        assert all(0 <= layer["density"] <= 1 for layer in activity["layers"])


def test_prune_report_has_shrinkbench(digits_model: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    _prune(digits_model, tmp_path / "p.onnx", "--sparsity", 0.75, "--report", report)
    shrink = json.loads(report.read_text())["shrinkbench"]
    assert shrink["before"]["theoretical_speedup"] == 1.0
    assert shrink["after"]["prunable_compression"] == pytest.approx(4.0, rel=0.02)
    assert shrink["after"]["theoretical_speedup"] > 1.5
