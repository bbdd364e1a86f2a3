"""``onnxprune presets``, ``prune --preset`` (flags, ``--set``, ``--labels``), ``run`` with ``preset:``, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from onnxprune.cli import cli
from onnxprune.presets import PRESETS, Preset, _expand, expand, ordered
from onnxprune.presets.classic import CLASSIC_PRESETS
from tests.conftest import DIGITS, sha256

TEST = DIGITS / "digits_test.npz"


def _invoke(*args: object) -> Any:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _logits(path: Path) -> np.ndarray:
    inputs = np.load(TEST)["input"]
    return ort.InferenceSession(str(path)).run(None, {"input": inputs})[0]


def _quick(name: str) -> list[str]:
    """``--set`` arguments that keep a preset's fine-tuning to a few steps (enough for its pruning cycles)."""
    sets: list[str] = []
    for entry in PRESETS[name].passes:
        if entry["name"] == "finetune":
            cycles = entry["config"].get("cycles", 1)
            sets = ["finetune.steps=" + str(max(6, 2 * cycles)), "finetune.lr=0.001", "finetune.holdout=0"]
    return [word for item in sets for word in ("--set", item)]


def test_presets_lists_every_preset_with_method_and_needs() -> None:
    result = CliRunner().invoke(cli, ["presets"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for preset in PRESETS:
        assert preset.name in result.output
    assert "M21" in result.output and "Frankle, Carbin" in result.output and "calibration" in result.output


def test_presets_name_shows_the_recipe_it_expands_to() -> None:
    result = CliRunner().invoke(cli, ["presets", "lth-rewind"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "M28" in result.output and "Rewinds to the imported" in result.output
    text = result.output.split("recipe (prune --preset, or run with 'preset: NAME'):\n", 1)[1]
    shown = yaml.safe_load(text)
    assert shown == {"preset": "lth-rewind", "passes": [*expand("lth-rewind"), {"name": "cleanup", "config": {}}]}


def test_presets_json_holds_every_preset_and_its_recipe() -> None:
    result = CliRunner().invoke(cli, ["presets", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [d["name"] for d in data] == [p.name for p in ordered()]  # by METHODS id, then name
    imp = next(d for d in data if d["name"] == "imp-slr")
    assert imp["method"] == "M21" and imp["needs"] == ["calibration", "torch"]
    assert imp["recipe"]["passes"][-1]["name"] == "cleanup"
    one = json.loads(CliRunner().invoke(cli, ["presets", "2:4", "--json"]).output)
    assert len(one) == 1 and one[0]["passes"] == [{"name": "sparsegpt", "config": {"n": 2, "m": 4, "sparsity": 0.5}}]


@pytest.mark.parametrize("name", [p.name for p in CLASSIC_PRESETS])
def test_every_classic_preset_runs_on_the_digits_cnn(
    tmp_path: Path, digits_model: Path, digits_calib: Path, name: str
) -> None:
    hashes = (sha256(digits_model), sha256(digits_calib))
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    args = ("prune", digits_model, "-o", out, "--preset", name, *_quick(name), "--calib", digits_calib, "--data", TEST)
    result = _invoke(*args, "--report", report)
    assert result.exit_code == 0, result.output
    assert (sha256(digits_model), sha256(digits_calib)) == hashes
    data = json.loads(report.read_text())
    assert data["preset"] == name and data["recipe"]["preset"] == name
    assert [p["name"] for p in data["passes"]] == [p["name"] for p in PRESETS[name].passes] + ["cleanup"]
    assert data["validation"]["checker"] == "passed"
    logits = _logits(out)
    assert logits.shape == (360, 10) and np.isfinite(logits).all()
    labels = np.load(TEST)["label"]
    assert (logits.argmax(1) == labels).mean() > 0.3, "the pruned model still classifies digits"
    config = PRESETS[name].passes[0]["config"]
    summary = data["passes"][0]["summary"]
    if "final_sparsity" in config:
        assert summary["sparsity_after"] == pytest.approx(config["final_sparsity"], abs=0.01)
    elif "sparsity" in config:
        assert data["after"]["nonzero_params"] < data["before"]["nonzero_params"] * (1 - 0.8 * config["sparsity"])
    else:  # channels or low rank: the model shrinks
        assert data["after"]["params"] < data["before"]["params"]


def test_sparsity_zero_leaves_the_outputs_unchanged(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    out = tmp_path / "same.onnx"
    result = _invoke("prune", digits_model, "-o", out, "--preset", "wanda", "--sparsity", "0", "--calib", digits_calib)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(_logits(out), _logits(digits_model), rtol=0, atol=1e-6)


def _dumped(*args: object) -> list[dict[str, Any]]:
    result = _invoke("prune", DIGITS / "digits_cnn.onnx", "-o", "x.onnx", *args, "--calib", DIGITS / "digits_calib.npz",
                     "--dump-recipe")  # fmt: skip
    assert result.exit_code == 0, result.output
    recipe = yaml.safe_load(result.output)
    assert recipe["preset"] == args[1]
    return recipe["passes"]


def test_prune_flags_set_the_preset_fields_they_mean() -> None:
    imp = _dumped("--preset", "imp-slr", "--sparsity", "0.5", "--finetune-steps", "9", "--finetune-lr", "0.01")
    assert {k: imp[0]["config"][k] for k in ("final_sparsity", "steps", "lr")} == {
        "final_sparsity": 0.5,
        "steps": 9,
        "lr": 0.01,
    }
    wanda = _dumped("--preset", "wanda", "--sparsity", "0.2", "--exclude", "fc*", "--keep-first")
    assert wanda[0]["config"] == {"sparsity": 0.2, "importance": "wanda", "exclude": ["fc*"], "keep_first": True}
    drop = _dumped("--preset", "dropnet", "--channels", "0.1", "--set", "finetune.steps=2")
    assert [p["config"].get("ratio", p["config"].get("steps")) for p in drop[:-1]] == [0.1, 2] * 3
    nm = _dumped("--preset", "2:4", "--pattern", "4:8", "--set", "sparsegpt.blocksize=64")
    assert nm[0]["config"] == {"n": 4, "m": 8, "sparsity": 0.5, "blocksize": 64}
    labels = _dumped("--preset", "apoz", "--labels", "y.npz", "--batch-size", "16")
    assert labels[1]["config"]["labels"] == str(Path("y.npz").resolve())
    assert labels[1]["config"]["batch_size"] == 16 and "batch_size" not in labels[0]["config"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--preset", "imp_slr"), "unknown preset 'imp_slr' (did you mean imp-slr?"),
        (("--preset", "wanda", "--set", "foo.x=1"), "--set foo.x: preset 'wanda' has no pass 'foo'"),
        (("--preset", "wanda", "--set", "unstructured.sparsty=0.1"), "has no field 'sparsty' (did you mean sparsity?)"),
        (("--preset", "wanda", "--set", "unstructured.sparsity"), "--set takes KEY=VALUE"),
        (("--preset", "wanda", "--set", "unstructured.sparsity=2"), "sparsity must be in [0, 1), got 2"),
        (("--preset", "wanda", "--scope", "global"), "--scope does not combine with --preset"),
        (("--preset", "lrpet", "--sparsity", "0.5"), "--sparsity: preset 'lrpet' has none of unstructured.sparsity"),
        (("--preset", "wanda", "--channels", "0.5"), "--channels: preset 'wanda' has none of channels.ratio"),
        (("--preset", "wanda", "--labels", "y.npz"), "--labels: preset 'wanda' does not fine-tune"),
        (("--preset", "imp-slr", "--exclude", "x"), "--exclude: no pass of preset 'imp-slr' selects weights"),
        (("--sparsity", "0.5", "--set", "unstructured.sparsity=0.1"), "--set PASS.FIELD=VALUE changes a preset's"),
        (("--sparsity", "0.5", "--labels", "y.npz"), "--labels feeds fine-tuning"),
    ],
)
def test_bad_preset_input_is_one_line_and_exit_2(
    tmp_path: Path, digits_model: Path, digits_calib: Path, args: tuple[str, ...], fragment: str
) -> None:
    before = sha256(digits_model)
    out = tmp_path / "out.onnx"
    result = _invoke("prune", digits_model, "-o", out, *args, "--calib", digits_calib)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and fragment in result.output, result.output
    assert not out.exists() and sha256(digits_model) == before


def test_a_preset_that_needs_calibration_refuses_to_run_without_it(tmp_path: Path, digits_model: Path) -> None:
    result = _invoke("prune", digits_model, "-o", tmp_path / "o.onnx", "--preset", "sparsegpt")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "preset 'sparsegpt' needs calibration data: give --calib PATH" in result.output


def test_a_preset_that_needs_torch_refuses_to_run_without_it(
    tmp_path: Path, digits_model: Path, digits_calib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_expand, "has_torch", lambda: False)
    result = _invoke("prune", digits_model, "-o", tmp_path / "o.onnx", "--preset", "imp-slr", "--calib", digits_calib)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "needs torch (it fine-tunes): pip install onnxprune[torch]" in result.output


@pytest.fixture
def labelled_preset(monkeypatch: pytest.MonkeyPatch) -> str:
    """A preset that needs labels, registered for one test."""
    preset = Preset(
        "test-labelled", "", "test", "fine-tune with labels", ({"name": "finetune", "config": {"steps": 2}},),
        needs=("labels",),
    )  # fmt: skip
    monkeypatch.setitem(PRESETS._entries, preset.name, preset)
    return preset.name


def test_a_preset_that_needs_labels_takes_them_from_labels_or_the_calibration_data(
    tmp_path: Path, digits_model: Path, digits_calib: Path, labelled_preset: str
) -> None:
    quick = ("--set", "finetune.lr=0.001", "--set", "finetune.holdout=0")
    base = ("prune", digits_model, "-o", tmp_path / "o.onnx", "--preset", labelled_preset, *quick)
    refused = _invoke(*base, "--calib", digits_calib)
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "preset 'test-labelled' needs labels: give --labels PATH" in refused.output
    test = np.load(TEST)
    np.savez(tmp_path / "y.npz", y=test["label"][:128])
    given = _invoke(*base, "--calib", digits_calib, "--labels", tmp_path / "y.npz", "--report", tmp_path / "r.json")
    assert given.exit_code == 0, given.output
    assert json.loads((tmp_path / "r.json").read_text())["passes"][0]["summary"]["labels"] is True
    np.savez(tmp_path / "calib.npz", input=test["input"][:64], labels=test["label"][:64])
    stored = _invoke(*base, "--calib", tmp_path / "calib.npz")
    assert stored.exit_code == 0, stored.output


def test_run_takes_a_preset_with_overrides(tmp_path: Path, digits_model: Path, digits_calib: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": str(digits_model),
                "output": "out.onnx",
                "preset": "global-magnitude",
                "overrides": {"unstructured.sparsity": 0.4, "finetune.steps": 4, "finetune.lr": 0.001},
                "calibration": {"path": str(digits_calib)},
                "report": "r.json",
            }
        )
    )
    hashes = sha256(digits_model), sha256(recipe)
    result = _invoke("run", recipe)
    assert result.exit_code == 0, result.output
    assert (sha256(digits_model), sha256(recipe)) == hashes
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["preset"] == "global-magnitude"
    assert data["passes"][0]["summary"]["achieved_sparsity"] == pytest.approx(0.4, abs=1e-3)
    assert data["passes"][1]["summary"]["steps"] == 4


def test_a_dumped_preset_recipe_runs_and_keeps_the_preset_name(
    tmp_path: Path, digits_model: Path, digits_calib: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    args = ("prune", digits_model, "-o", tmp_path / "o.onnx", "--preset", "2:4", "--calib", digits_calib)
    recipe.write_text(_invoke(*args, "--dump-recipe").output)
    result = _invoke("run", recipe, "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["preset"] == "2:4" and data["passes"][0]["name"] == "sparsegpt"
    weights = [w for w in data["passes"][0]["changed"]]
    assert weights and all(w["zeros"] >= w["numel"] // 2 for w in weights)


def test_run_refuses_a_preset_without_its_needs(tmp_path: Path, digits_model: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(digits_model), "output": "o.onnx", "preset": "wanda"}))
    result = _invoke("run", recipe)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "preset 'wanda' needs calibration data" in result.output
    recipe.write_text(yaml.safe_dump({"model": str(digits_model), "output": "o.onnx", "preset": "wandaa"}))
    result = _invoke("run", recipe)
    assert result.exit_code == 2 and "unknown preset 'wandaa' (did you mean wanda?" in result.output
