"""Recipes and the end-of-run validation gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from onnxprune import passes as passes_module
from onnxprune.errors import RecipeError, ValidationError
from onnxprune.passes import OnnxPrunePass, PruneResult
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, run_recipe


@dataclasses.dataclass(frozen=True)
class _BreakConfig:
    tensor: str = "features.2.weight"


class _BreakingPass(OnnxPrunePass):
    """Writes a weight of the wrong shape: onnxruntime must refuse the result."""

    name = "break"
    config_class = _BreakConfig

    def call(self, model: ir.Model) -> PruneResult:
        value = model.graph.initializers[self.config.tensor]
        value.const_value = ir.Tensor(np.zeros((3, 3, 3, 3), np.float32), name=value.name)
        return PruneResult(model, True, self.new_report())


def test_result_that_onnxruntime_cannot_run_is_never_written(
    tmp_path: Path, digits_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(passes_module.PASSES, "break", _BreakingPass)
    out = tmp_path / "o.onnx"
    recipe = Recipe(str(digits_model), str(out), (PassSpec("break"),))
    with pytest.raises(ValidationError, match="features.2"):
        run_recipe(recipe)
    assert not out.exists()


def test_recipe_round_trips_through_yaml(tmp_path: Path) -> None:
    recipe = Recipe(
        "m.onnx",
        "o.onnx",
        (PassSpec("unstructured", {"sparsity": 0.4, "exclude": ["a*"]}), PassSpec("cleanup")),
        calibration=CalibrationSpec("c.npz", 16, 8, {"x": (1, 3, 8, 8)}),
    )
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    loaded = Recipe.from_yaml(path)
    assert loaded.passes == recipe.passes
    assert loaded.model == str(tmp_path / "m.onnx")
    assert loaded.calibration.input_shapes == {"x": (1, 3, 8, 8)}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model: m\noutput: o\npasses: []\nbogus: 1\n", "unknown key 'bogus'"),
        ("model: m\npasses: []\n", "missing 'output'"),
        ("model: m\noutput: o\npasses: [{name: unstructured, config: {sparsity: 2}}]\n", "sparsity"),
        ("model: m\noutput: o\npasses: [{name: unstructured, config: {spars: 0.5}}]\n", "unknown key 'spars'"),
        ("[1, 2", "cannot read recipe"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=fragment):
        Recipe.from_yaml(path)


def test_absolute_paths_in_a_recipe_are_kept(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere" / "c.npz"
    recipe = Recipe("m.onnx", "o.onnx", (PassSpec("cleanup"),), calibration=CalibrationSpec(str(data)))
    path = tmp_path / "r.yaml"
    path.write_text(dataclasses.replace(recipe, validation_data=str(data), metric="m.py:f").to_yaml())
    loaded = Recipe.from_yaml(path)
    assert loaded.calibration.path == loaded.validation_data == str(data)
    assert loaded.metric == f"{tmp_path / 'm.py'}:f"
