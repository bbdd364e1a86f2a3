"""Recipes get the CLI's validation of every field; YAML size and alias caps; pass configs refuse NaN/inf."""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from onnxprune.errors import RecipeError
from onnxprune.passes import PASSES
from onnxprune.passes.channels import ChannelPruneConfig
from onnxprune.passes.cleanup import CleanupConfig
from onnxprune.passes.finetune import FinetuneConfig
from onnxprune.passes.lowrank import LowRankConfig
from onnxprune.passes.sparsegpt import SparseGPTConfig
from onnxprune.passes.sparsify import NMPruneConfig, UnstructuredPruneConfig
from onnxprune.recipe import MAX_RECIPE_BYTES, Recipe
from tests.conftest import sha256


def _run(recipe: Path) -> object:
    return CliRunner().invoke(cli, ["--quiet", "run", str(recipe)], catch_exceptions=False)


def _one_error_line(result: object, code: int = 2) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxprune: error: ") and len(lines[0]) < 500
    return lines[0]


def _recipe(model_path: Path, **changes: object) -> dict:
    base = {
        "model": str(model_path),
        "output": str(model_path.parent / "o.onnx"),
        "passes": [{"name": "unstructured", "config": {"sparsity": 0.5}}],
        "latency_runs": 1,
    }
    calibration = changes.pop("calibration", None)
    if calibration is not None:
        base["calibration"] = calibration
    return {**base, **changes}


BAD_FIELDS = [
    ({"calibration": {"samples": "ten"}}, "calibration.samples"),
    ({"calibration": {"samples": 0}}, "calibration.samples"),
    ({"calibration": {"batch_size": -5}}, "calibration.batch_size"),
    ({"calibration": {"batch_size": 2.5}}, "calibration.batch_size"),
    ({"calibration": {"memory_mb": 1}}, "calibration.memory_mb"),
    ({"calibration": {"seed": -1}}, "calibration.seed"),
    ({"calibration": {"sequential": "yes"}}, "calibration.sequential"),
    ({"calibration": {"input_shapes": {"input": [1, -1, 8, 8]}}}, "input_shapes"),
    ({"calibration": {"input_shapes": {"input": [1, "a", 8, 8]}}}, "input_shapes"),
    ({"calibration": {"input_shapes": {"input": 5}}}, "input_shapes"),
    ({"calibration": {"input_shapes": [1, 2]}}, "input_shapes"),
    ({"calibration": 5}, "calibration"),
    ({"calibration": {"path": 7}}, "calibration.path"),
    ({"passes": 5}, "passes"),
    ({"passes": []}, "passes"),
    ({"passes": [{"name": 5}]}, "name"),
    ({"passes": [{"name": "unstructured", "config": [1]}]}, "config"),
    ({"threads": -1}, "threads"),
    ({"threads": True}, "threads"),
    ({"latency_runs": 0}, "latency_runs"),
    ({"latency_runs": math.inf}, "latency_runs"),
    ({"validate": "false"}, "validate"),
    ({"strict": "yes"}, "strict"),
    ({"external_data": "no"}, "external_data"),
    ({"max_drop": math.nan}, "max_drop"),
    ({"max_drop": -1}, "max_drop"),
    ({"model": 5}, "model"),
    ({"output": ""}, "output"),
    ({"report": ["a"]}, "report"),
    ({"passes": [{"name": "unstructured", "config": {"sparsity": math.nan}}]}, "sparsity"),
    ({"passes": [{"name": "unstructured", "config": {"sparsity": math.inf}}]}, "sparsity"),
    ({"passes": [{"name": "unstructured", "config": {"sparsity": "half"}}]}, "sparsity"),
    ({"passes": [{"name": "unstructured", "config": {"keep_first": "true"}}]}, "keep_first"),
    ({"passes": [{"name": "unstructured", "config": {"exclude": [1, 2]}}]}, "exclude"),
    ({"passes": [{"name": "nm", "config": {"n": 0, "m": 4}}]}, "1 <= N <= M"),
    ({"passes": [{"name": "finetune", "config": {"lr": math.nan}}]}, "lr"),
    ({"passes": [{"name": "finetune", "config": {"steps": "many"}}]}, "steps"),
    ({"passes": [{"name": "channels", "config": {"ratio": math.nan}}]}, "ratio"),
    ({"passes": [{"name": "lowrank", "config": {"energy": math.inf}}]}, "energy"),
    ({"passes": [{"name": "sparsegpt", "config": {"percdamp": math.nan}}]}, "percdamp"),
    ({"passes": [{"name": "cleanup", "config": {"remove_unused": "no"}}]}, "remove_unused"),
]


@pytest.mark.parametrize(("changes", "key"), BAD_FIELDS, ids=[k + str(i) for i, (_, k) in enumerate(BAD_FIELDS)])
def test_recipe_fields_of_the_wrong_type_or_range_exit_2_naming_the_key(
    tmp_path: Path, digits_model: Path, changes: dict, key: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(digits_model, **changes)))
    before = sha256(digits_model), sha256(path)
    line = _one_error_line(_run(path))
    assert key in line and str(path) in line
    assert (sha256(digits_model), sha256(path)) == before
    assert not (tmp_path / "o.onnx").exists()


def test_a_recipe_with_batch_size_minus_5_never_passes_validation_on_0_samples(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(digits_model, calibration={"path": str(digits_calib), "batch_size": -5})))
    assert "batch_size must be >= 1" in _one_error_line(_run(path))


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\nmodel: *a8\n")
    assert path.stat().st_size < 1000
    line = _one_error_line(_run(path))
    assert "alias" in line


def test_an_expansion_within_the_alias_cap_is_refused(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["x","x","x","x","x","x","x","x"]']
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 8) + "]" for i in range(1, 8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\nmodel: *a7\n")  # 57 aliases, 8^8 values
    assert "expanded" in _one_error_line(_run(path))


def test_a_recipe_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("model: m.onnx\n# " + "x" * MAX_RECIPE_BYTES + "\n")
    assert "at most" in _one_error_line(_run(path))


@pytest.mark.parametrize(
    "text",
    ["[" * 5000, "model: !!python/object:os.system x\n", "\udcff", "model: [1, 2\n", ": : :"],
    ids=["deep", "tag", "bad-utf8", "unclosed", "junk"],
)
def test_unreadable_recipes_exit_2_with_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert "cannot read recipe" in _one_error_line(_run(path))


def test_echoed_values_are_shortened(tmp_path: Path, digits_model: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(digits_model, threads="x" * 100_000)))
    line = _one_error_line(_run(path))
    assert "threads" in line and "..." in line


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: FinetuneConfig(lr=math.nan), "lr"),
        (lambda: FinetuneConfig(lr_max=math.inf), "lr_max"),
        (lambda: FinetuneConfig(temperature=0.0), "temperature"),
        (lambda: UnstructuredPruneConfig(sparsity=math.nan), "sparsity"),
        (lambda: UnstructuredPruneConfig(sparsity=-math.inf), "sparsity"),
        (lambda: NMPruneConfig(n=0, m=4), "N <= M"),
        (lambda: NMPruneConfig(sparsity=math.nan), "sparsity"),
        (lambda: SparseGPTConfig(sparsity=math.nan), "sparsity"),
        (lambda: SparseGPTConfig(n=0, m=4), "N <= M"),
        (lambda: ChannelPruneConfig(ridge=math.nan), "ridge"),
        (lambda: LowRankConfig(energy=math.nan), "energy"),
        (lambda: CleanupConfig(remove_unused="yes"), "remove_unused"),
    ],
)
def test_pass_configs_refuse_non_finite_and_wrong_types(make: object, field: str) -> None:
    with pytest.raises(RecipeError, match=field):
        make()


def test_every_registered_pass_config_checks_its_field_types() -> None:
    for name, cls in PASSES.items():
        first = next(f for f in cls.config_class.__dataclass_fields__.values())
        with pytest.raises(RecipeError, match=first.name):
            cls.config_class(**{first.name: object()})
        assert name


def test_validate_false_still_refuses_a_model_onnxruntime_cannot_load(tmp_path: Path, digits_model: Path) -> None:
    proto = onnx.load(digits_model)
    proto.opset_import[0].version = 99
    bad = tmp_path / "opset99.onnx"
    onnx.save(proto, bad)
    out = tmp_path / "o.onnx"
    path = tmp_path / "r.yaml"
    recipe = _recipe(bad, validate=False, output=str(out))
    path.write_text(yaml.safe_dump(recipe))
    before = sha256(bad)
    line = _one_error_line(_run(path))
    assert "input model" in line and str(bad) in line  # the input is at fault: it is tried on one sample first
    assert not out.exists() and sha256(bad) == before


def test_validate_false_checks_the_result_it_would_write(digits_model: Path) -> None:
    """With validation off the result still goes through the checker and an onnxruntime load."""
    from onnxprune import _io
    from onnxprune.errors import ValidationError
    from onnxprune.recipe import _check_loadable

    model = _io.load(digits_model)
    _check_loadable(model)
    model.opset_imports[""] = 99
    with pytest.raises(ValidationError, match="result"):
        _check_loadable(model)


def test_validate_false_still_refuses_an_unknown_domain(tmp_path: Path, digits_model: Path) -> None:
    proto = onnx.load(digits_model)
    proto.graph.node[0].domain = "com.nosuch"
    proto.opset_import.append(onnx.helper.make_opsetid("com.nosuch", 1))
    bad = tmp_path / "domain.onnx"
    onnx.save(proto, bad)
    out = tmp_path / "o.onnx"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(bad, validate=False, output=str(out))))
    _one_error_line(_run(path))
    assert not out.exists()


def test_validate_false_writes_a_loadable_model(tmp_path: Path, digits_model: Path) -> None:
    out = tmp_path / "o.onnx"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(digits_model, validate=False, output=str(out))))
    result = _run(path)
    assert result.exit_code == 0, result.output
    assert Recipe.from_yaml(path).validate is False
    assert onnx.load(out).graph.node
