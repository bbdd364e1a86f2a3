"""``--dump-recipe`` then ``onnxprune run`` reproduces the direct run bit for bit, for every verb that dumps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from onnxprune.recipe import Recipe
from tests.conftest import DIGITS, sha256


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


# verb arguments after MODEL (``{calib}``, ``{model}`` and ``{labels}`` are filled in)
VERBS = {
    "prune-unstructured-wanda": [
        "prune",
        *("--sparsity", "0.5", "--importance", "wanda", "--calib", "{calib}", "--data", "{calib}"),
    ],
    "prune-sparsegpt": ["prune", "--sparsity", "0.5", "--calib", "{calib}", "--samples", "64"],
    "prune-magnitude-global": ["prune", "--sparsity", "0.6", "--scope", "global", "--exclude", "*classifier.3*"],
    "prune-nm": ["prune", "--pattern", "2:4", "--importance", "magnitude", "--calib", "{calib}"],
    "prune-nm-sparsegpt": ["prune", "--pattern", "2:4", "--calib", "{calib}", "--samples", "64"],
    "prune-channels": ["prune", "--channels", "0.25", "--calib", "{calib}", "--samples", "64"],
    "prune-finetune": [
        "prune",
        "--sparsity",
        "0.5",
        "--importance",
        "magnitude",
        "--calib",
        "{calib}",
        "--finetune-steps",
        "3",
        "--finetune-lr",
        "1e-4",
    ],
    "lowrank": ["lowrank", "--energy", "0.9", "--calib", "{calib}"],
    "lowrank-activation-aware": ["lowrank", "--rank", "4", "--activation-aware", "--calib", "{calib}"],
    "finetune": [
        "finetune",
        "--teacher",
        "{model}",
        "--labels",
        "{labels}",
        "--calib",
        "{calib}",
        "--steps",
        "3",
        "--lr",
        "1e-4",
    ],
}


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    """128 integer labels (the test set's: the equality of two runs is checked, not accuracy)."""
    path = tmp_path / "labels.npz"
    with np.load(DIGITS / "digits_test.npz") as data:
        np.savez(path, label=data["label"][:128])
    return path


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_dumped_recipe_reproduces_the_direct_run(
    tmp_path: Path, digits_model: Path, digits_calib: Path, labels: Path, verb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if verb.endswith("finetune"):
        pytest.importorskip("torch")
    fill = {"{calib}": str(digits_calib), "{model}": str(digits_model), "{labels}": str(labels)}
    command, *options = VERBS[verb]
    options = [fill.get(o, o) for o in options]
    inputs = {p: sha256(p) for p in (digits_model, digits_calib, labels)}
    direct, direct_report = tmp_path / "direct.onnx", tmp_path / "direct.json"
    result = _invoke(command, digits_model, "-o", direct, "--report", direct_report, *options)
    assert result.exit_code == 0, result.output

    # the recipe is dumped from one folder and run from another: its paths must not depend on the cwd
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(work)
    dumped = _invoke(
        command, digits_model, "-o", "via-recipe.onnx", "--report", "via-recipe.json", *options, "--dump-recipe"
    )
    assert dumped.exit_code == 0, dumped.output
    assert not (work / "via-recipe.onnx").exists()
    recipe_path = elsewhere / "recipe.yaml"
    recipe_path.write_text(dumped.output)
    loaded = Recipe.from_yaml(recipe_path)
    if str(digits_calib) in options:  # never None: that would calibrate on random data
        assert loaded.calibration.path == str(digits_calib)
    if "--data" in options:
        assert loaded.validation_data == str(digits_calib)
    monkeypatch.chdir(elsewhere)
    ran = _invoke("run", recipe_path)
    assert ran.exit_code == 0, ran.output

    via = work / "via-recipe.onnx"
    assert via.read_bytes() == direct.read_bytes(), f"{verb}: the dumped recipe wrote a different model"
    first, second = json.loads(direct_report.read_text()), json.loads((work / "via-recipe.json").read_text())
    assert second["validation"] is not None
    assert second["validation"].get("random_inputs") == first["validation"].get("random_inputs")
    for a, b in zip(first["passes"], second["passes"], strict=True):
        assert (a["name"], a["summary"].keys()) == (b["name"], b["summary"].keys())
        assert a["changed"] == b["changed"]
    assert {p: sha256(p) for p in inputs} == inputs


def test_relative_paths_in_a_recipe_are_relative_to_its_folder(
    tmp_path: Path, digits_model: Path, digits_calib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(digits_model.read_bytes())
    (folder / "c.npz").write_bytes(digits_calib.read_bytes())
    recipe = {
        "model": "m.onnx",
        "output": "out/o.onnx",
        "report": "r.json",
        "calibration": {"path": "c.npz", "samples": 32},
        "passes": [{"name": "finetune", "config": {"teacher": "m.onnx", "labels": "c.npz", "steps": 1}}],
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    loaded = Recipe.from_yaml(path)
    assert loaded.model == str(folder / "m.onnx") and loaded.report == str(folder / "r.json")
    assert loaded.calibration.path == str(folder / "c.npz")
    assert loaded.passes[0].config["teacher"] == str(folder / "m.onnx")
    assert loaded.passes[0].config["labels"] == str(folder / "c.npz")
    absolute = dict(recipe, model=str(digits_model))
    path.write_text(yaml.safe_dump(absolute))
    assert Recipe.from_yaml(path).model == str(digits_model)
