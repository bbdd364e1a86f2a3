"""Presets as data: every registered preset expands to passes that validate; overrides; needs; recipes with preset:."""

from __future__ import annotations

import json
import re

import pytest

from onnxprune.errors import CalibrationError, OnnxPruneError, RecipeError
from onnxprune.presets import NEEDS, PRESETS, Preset, _expand, check_needs, expand, find_preset
from onnxprune.recipe import PassSpec, Recipe, build_pass

#: Every preset registered, by any family module (the test covers presets added later too).
ALL = PRESETS.names()


def _recipe(**data: object) -> Recipe:
    return Recipe.from_dict({"model": "m.onnx", "output": "o.onnx", **data}, "r.yaml")


@pytest.mark.parametrize("name", ALL)
def test_every_preset_expands_to_passes_that_validate(name: str) -> None:
    preset = PRESETS[name]
    assert preset.description and preset.paper, name
    assert preset.method == "" or re.fullmatch(r"M\d+", preset.method), preset.method
    assert set(preset.requirements) <= set(NEEDS)
    for entry in expand(name):
        build_pass(PassSpec(entry["name"], entry["config"]))  # every config field known, every value valid
    recipe = _recipe(preset=name)
    assert recipe.preset == name
    assert [s.name for s in recipe.passes] == [p["name"] for p in preset.passes] + ["cleanup"]
    assert json.loads(json.dumps(preset.to_dict()))["passes"] == preset.recipe_passes()


def test_a_preset_is_a_recipe_not_a_copy_of_a_pass() -> None:
    """Expansion hands out fresh data: overriding one run never changes the registered preset."""
    before = PRESETS["dropnet"].recipe_passes()
    expand("dropnet", {"channels.ratio": 0.5})
    assert PRESETS["dropnet"].recipe_passes() == before


def test_an_override_sets_every_pass_of_that_name() -> None:
    passes = expand("dropnet", {"channels.ratio": 0.1, "finetune.steps": 3})
    assert [p["config"]["ratio"] for p in passes if p["name"] == "channels"] == [0.1, 0.1, 0.1]
    assert [p["config"]["steps"] for p in passes if p["name"] == "finetune"] == [3, 3, 3]


def test_an_override_sets_one_key_of_a_mapping_field() -> None:
    passes = expand("imp-slr", {"finetune.method_options.rate": 0.3})
    assert passes[0]["config"]["method_options"] == {"rate": 0.3}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"foo.steps": 1}, "preset 'imp-slr' has no pass 'foo' (its passes: finetune)"),
        ({"finetune.stepz": 1}, "pass 'finetune' has no field 'stepz' (did you mean steps?)"),
        ({"finetune.zzzzzz": 1}, "has no field 'zzzzzz' (fields: steps, epochs"),
        ({"finetune": 1}, "expected PASS.FIELD"),
        ({"finetune.steps.x": 1}, "'finetune.steps' is not a mapping"),
        ({"a.b.c.d": 1}, "expected PASS.FIELD"),
    ],
)
def test_bad_overrides_name_the_problem(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(fragment)):
        expand("imp-slr", overrides, what="--set")


def test_an_unknown_preset_lists_the_close_names_or_all() -> None:
    with pytest.raises(RecipeError, match=re.escape("unknown preset 'imp_slr' (did you mean imp-slr?")):
        find_preset("imp_slr")
    with pytest.raises(RecipeError, match="known: drop-pruning, .*, imp-slr, .*, lth-rewind, .*, 2:4, .*; see"):
        find_preset("qqqqqqqq")


def test_a_recipe_takes_a_preset_and_overrides_instead_of_passes() -> None:
    recipe = _recipe(preset="wanda", overrides={"unstructured.sparsity": 0.3})
    assert recipe.passes[0] == PassSpec("unstructured", {"sparsity": 0.3, "importance": "wanda"})
    assert recipe.to_dict()["preset"] == "wanda"
    again = Recipe.from_dict(recipe.to_dict())  # the dumped form: expanded passes, the preset as a label
    assert again.passes == recipe.passes and again.preset == "wanda"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"preset": "nosuch"}, "unknown preset 'nosuch'"),
        ({"passes": [{"name": "cleanup"}], "overrides": {"a.b": 1}}, "overrides apply to a preset"),
        ({"preset": "wanda", "overrides": {"unstructured.sparsity": 2}}, "sparsity must be in [0, 1), got 2"),
        ({"preset": "wanda", "overrides": ["x"]}, "overrides must map PASS.FIELD to values"),
        ({"passes": [{"name": "cleanup"}], "preset": "nosuch"}, "unknown preset 'nosuch'"),
        ({}, "missing 'passes' (or a 'preset')"),
    ],
)
def test_bad_preset_recipes_fail_on_one_line(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(fragment)) as info:
        _recipe(**data)
    assert "\n" not in str(info.value) and str(info.value).startswith("r.yaml: ")


def test_needs_are_declared_or_implied_by_the_passes() -> None:
    assert PRESETS["wanda"].requirements == ("calibration",)
    assert PRESETS["imp-slr"].requirements == ("calibration", "torch")  # finetune implies both
    with pytest.raises(ValueError, match="unknown needs"):
        Preset("x", "M1", "p", "d", ({"name": "cleanup"},), needs=("gpu",))
    with pytest.raises(ValueError, match="non-empty tuple"):
        Preset("x", "M1", "p", "d", ())


def test_check_needs_refuses_each_missing_need(monkeypatch: pytest.MonkeyPatch) -> None:
    labelled = Preset("x", "M1", "p", "d", ({"name": "finetune", "config": {}},), needs=("labels",))
    with pytest.raises(CalibrationError, match="needs calibration data"):
        check_needs(labelled, calibration=False, labels=True)
    with pytest.raises(CalibrationError, match="needs labels"):
        check_needs(labelled, calibration=True, labels=False)
    check_needs(labelled, calibration=True, labels=None)  # labels not known yet: not checked
    check_needs(labelled, calibration=True, labels=True)
    monkeypatch.setattr(_expand, "has_torch", lambda: False)
    with pytest.raises(OnnxPruneError, match=re.escape("needs torch (it fine-tunes): pip install onnxprune[torch]")):
        check_needs(labelled, calibration=True, labels=True)


def test_set_values_are_yaml_and_exponents_are_numbers() -> None:
    from onnxprune._assign import parse_assignments

    values = parse_assignments(["a.b=1e-3", "a.c=[x, y]", "a.d=true", "a.e=word", "a.f=-2E+2"], "--set")
    assert values == {"a.b": 0.001, "a.c": ["x", "y"], "a.d": True, "a.e": "word", "a.f": -200.0}
