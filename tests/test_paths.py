"""Outputs checked before any work: no input file is ever overwritten, in any spelling; unusable outputs exit 2."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner

from onnxprune import _paths
from onnxprune.cli import cli
from onnxprune.errors import OutputPathError
from tests import models
from tests.conftest import DIGITS, sha256


def _invoke(*args: object) -> object:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)], catch_exceptions=False)


def _refused(result: object, *fragments: str) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _hashes(*paths: Path) -> dict[Path, str]:
    return {p: sha256(p) for p in paths}


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    shutil.copy(DIGITS / "digits_calib.npz", path)
    return path


def _prune(model: Path, out: Path, *extra: object) -> object:
    return _invoke("prune", model, "-o", out, "--sparsity", "0.5", *extra)


# --- the seven overwrites of the issue, each with the input bytes checked unchanged ---------------------------


def test_report_equal_to_input_model_is_refused(tmp_path: Path, digits_model: Path) -> None:
    before = _hashes(digits_model)
    _refused(_prune(digits_model, tmp_path / "o.onnx", "--report", digits_model), "--report", "the input model")
    assert _hashes(digits_model) == before
    assert not (tmp_path / "o.onnx").exists()


def test_recipe_relative_report_equal_to_input_model_is_refused(tmp_path: Path, digits_model: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"model": "digits.onnx", "output": "o.onnx", "report": "./digits.onnx", "passes": [{"name": "cleanup"}]}
        )
    )
    before = _hashes(digits_model, recipe)
    _refused(_invoke("run", recipe), "--report", "the input model")
    assert _hashes(digits_model, recipe) == before


@pytest.mark.parametrize("option", ["-o", "--report"])
def test_recipe_file_is_never_an_output(tmp_path: Path, digits_model: Path, option: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "digits.onnx", "output": "o.onnx", "passes": [{"name": "cleanup"}]}))
    before = _hashes(digits_model, recipe)
    _refused(_invoke("run", recipe, option, recipe), option, "the recipe")
    assert _hashes(digits_model, recipe) == before


@pytest.mark.parametrize("option", ["-o", "--report"])
def test_output_equal_to_calibration_file_is_refused(
    tmp_path: Path, digits_model: Path, calib: Path, option: str
) -> None:
    before = _hashes(digits_model, calib)
    out = calib if option == "-o" else tmp_path / "o.onnx"
    extra = ["--report", calib] if option == "--report" else []
    _refused(_prune(digits_model, out, "--calib", calib, *extra), option, "the calibration data")
    assert _hashes(digits_model, calib) == before


def test_output_equal_to_a_file_of_the_calibration_folder_is_refused(tmp_path: Path, digits_model: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    shutil.copy(DIGITS / "digits_calib.npz", folder / "a.npz")
    before = _hashes(folder / "a.npz")
    _refused(_prune(digits_model, folder / "a.npz", "--calib", folder), "-o", "the calibration data")
    assert _hashes(folder / "a.npz") == before


@pytest.mark.parametrize("option", ["-o", "--report"])
def test_output_equal_to_data_file_is_refused(tmp_path: Path, digits_model: Path, calib: Path, option: str) -> None:
    data = tmp_path / "data.npz"
    shutil.copy(DIGITS / "digits_test.npz", data)
    before = _hashes(digits_model, data)
    out = data if option == "-o" else tmp_path / "o.onnx"
    extra = ["--report", data] if option == "--report" else []
    _refused(_prune(digits_model, out, "--calib", calib, "--data", data, *extra), option, "the validation data")
    assert _hashes(digits_model, data) == before


def _teacher_external(tmp_path: Path) -> tuple[Path, Path]:
    teacher = tmp_path / "teacher" / "t.onnx"
    teacher.parent.mkdir()
    onnx.save(
        onnx.load(DIGITS / "digits_cnn.onnx"),
        teacher,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="t.bin",
        size_threshold=256,
    )
    return teacher, teacher.parent / "t.bin"


@pytest.mark.parametrize("target", ["teacher", "teacher data", "labels"])
def test_finetune_outputs_never_overwrite_teacher_or_labels(
    tmp_path: Path, digits_model: Path, calib: Path, target: str
) -> None:
    teacher, teacher_data = _teacher_external(tmp_path)
    labels = tmp_path / "labels.npz"
    np.savez(labels, label=np.load(calib)["label"] if "label" in np.load(calib) else np.zeros(128, dtype=np.int64))
    victim = {"teacher": teacher, "teacher data": teacher_data, "labels": labels}[target]
    before = _hashes(digits_model, teacher, teacher_data, labels)
    args = ["finetune", digits_model, "--teacher", teacher, "--labels", labels, "--calib", calib, "--steps", "1"]
    _refused(_invoke(*args, "-o", victim), "-o", "would overwrite")
    _refused(_invoke(*args, "-o", tmp_path / "o.onnx", "--report", victim), "--report", "would overwrite")
    assert _hashes(digits_model, teacher, teacher_data, labels) == before
    assert not (tmp_path / "o.onnx").exists()


def test_output_equal_to_metric_module_is_refused(tmp_path: Path, digits_model: Path, calib: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f(outputs, path):\n    return 1.0\n")
    before = _hashes(module)
    _refused(_prune(digits_model, tmp_path / "o.onnx", "--metric", f"{module}:f", "--report", module), "metric module")
    assert _hashes(module) == before


# --- every spelling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["dotdot", "symlink", "hardlink", "symlinked folder"])
def test_every_spelling_of_the_input_is_refused(tmp_path: Path, digits_model: Path, spelling: str) -> None:
    (tmp_path / "sub").mkdir()
    if spelling == "dotdot":
        alias = tmp_path / "sub" / ".." / digits_model.name
    elif spelling == "symlink":
        alias = tmp_path / "link.onnx"
        alias.symlink_to(digits_model)
    elif spelling == "hardlink":
        alias = tmp_path / "hard.onnx"
        os.link(digits_model, alias)
    else:
        alias = tmp_path / "linked" / digits_model.name
        (tmp_path / "linked").symlink_to(tmp_path)
    before = _hashes(digits_model)
    _refused(_prune(digits_model, alias), "-o", "the input model")
    _refused(_prune(digits_model, tmp_path / "o.onnx", "--report", alias), "--report", "the input model")
    assert _hashes(digits_model) == before


def test_input_external_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ext" / "m.onnx"
    path.parent.mkdir()
    onnx.save(models.conv_model(), path, save_as_external_data=True, location="w.bin", size_threshold=64)
    before = _hashes(path, path.parent / "w.bin")
    _refused(_prune(path, tmp_path / "o.onnx", "--report", path.parent / "w.bin"), "input model's external data")
    _refused(_prune(path, path.parent / "w.bin"), "-o", "input model's external data")
    assert _hashes(path, path.parent / "w.bin") == before


def test_report_equal_to_output_or_its_data_is_refused(tmp_path: Path, digits_model: Path) -> None:
    out = tmp_path / "o.onnx"
    _refused(_prune(digits_model, out, "--report", out), "--report", "same file as -o")
    data = tmp_path / "o.onnx.0123456789abcdef.data"
    _refused(_prune(digits_model, out, "--external-data", "--report", data), "--report", "external data of -o")
    assert not out.exists() and not data.exists()


def test_validate_report_never_overwrites_its_inputs(tmp_path: Path, digits_model: Path) -> None:
    data = tmp_path / "data.npz"
    shutil.copy(DIGITS / "digits_test.npz", data)
    before = _hashes(digits_model, data)
    for victim, what in ((digits_model, "the reference model"), (data, "the data")):
        result = _invoke("validate", digits_model, digits_model, "--data", data, "--report", victim)
        _refused(result, "--report", what)
    assert _hashes(digits_model, data) == before


def test_analyze_outputs_never_overwrite_its_inputs(tmp_path: Path, digits_model: Path, calib: Path) -> None:
    model = tmp_path / "m.png"  # PREFIX.png of `-o m` is the model itself
    shutil.copy(digits_model, model)
    (tmp_path / "c.json").symlink_to(calib)  # PREFIX.json of `-o c` is the calibration file
    before = _hashes(model, calib)
    _refused(_invoke("analyze", model, "--calib", calib, "-o", tmp_path / "m", "--no-cache"), "the input model")
    _refused(_invoke("analyze", model, "--calib", calib, "-o", tmp_path / "c", "--no-cache"), "the calibration data")
    assert _hashes(model, calib) == before


# --- outputs that cannot be written: refused before any pass runs -------------------------------------------------


def test_directory_at_output_is_refused(tmp_path: Path, digits_model: Path) -> None:
    (tmp_path / "d.onnx").mkdir()
    result = _prune(digits_model, tmp_path / "d.onnx")  # click's own check (its usage-error format)
    assert result.exit_code == 2 and "is a directory" in result.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "digits.onnx", "output": "d.onnx", "passes": [{"name": "cleanup"}]}))
    _refused(_invoke("run", recipe), "-o", "is a directory")
    assert not list((tmp_path / "d.onnx").iterdir())


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
@pytest.mark.parametrize("option", ["-o", "--report"])
def test_special_files_are_refused_and_kept(tmp_path: Path, digits_model: Path, kind: str, option: str) -> None:
    if kind == "fifo":
        special = tmp_path / "special"
        os.mkfifo(special)
    elif kind == "socket":
        special = tmp_path / "s"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(special))
    else:
        special = Path("/dev/null")
    out = special if option == "-o" else tmp_path / "o.onnx"
    extra = ["--report", special] if option == "--report" else []
    _refused(_prune(digits_model, out, *extra), option, "refusing to replace it")
    assert special.exists() and not special.is_file()
    assert not (tmp_path / "o.onnx").exists()


def test_unwritable_output_folder_is_refused_before_work(
    tmp_path: Path, digits_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder (simulated: tests may run as root, who writes anywhere) exits 2 before any pass."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(_paths.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    ran = []
    monkeypatch.setattr("onnxprune.pipeline.Pipeline.call", lambda self, model: ran.append(model))
    _refused(_prune(digits_model, locked / "o.onnx"), "-o", "not writable")
    _refused(_prune(digits_model, tmp_path / "o.onnx", "--report", locked / "r.json"), "--report", "not writable")
    _refused(_prune(digits_model, tmp_path / "o.onnx", "--report", locked / "new" / "r.json"), "--report")
    assert not ran and not (tmp_path / "o.onnx").exists()


def test_report_under_a_file_is_refused(tmp_path: Path, digits_model: Path) -> None:
    (tmp_path / "file").write_text("x")
    _refused(_prune(digits_model, tmp_path / "o.onnx", "--report", tmp_path / "file" / "r.json"), "--report")
    assert not (tmp_path / "o.onnx").exists()


def test_output_name_too_long_for_its_data_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ext" / "m.onnx"
    path.parent.mkdir()
    onnx.save(models.conv_model(), path, save_as_external_data=True, location="w.bin", size_threshold=64)
    out = tmp_path / ("x" * 240 + ".onnx")  # fits NAME_MAX, its data file does not
    _refused(_prune(path, out), "too long for its external-data file")
    _refused(_prune(path, tmp_path / ("x" * 300 + ".onnx")), "longer than")
    assert not list(tmp_path.glob("x*"))


# --- the check itself -----------------------------------------------------------------------------------------------


def test_check_outputs_names_option_input_and_path(tmp_path: Path) -> None:
    calib = tmp_path / "in.npz"
    calib.write_bytes(b"x")
    with pytest.raises(OutputPathError, match=r"--report would overwrite the calibration data \(.*in\.npz\)"):
        _paths.check_outputs({"--report": tmp_path / "." / "in.npz"}, {"the calibration data": [calib]})
    _paths.check_outputs({"--report": tmp_path / "r.json"}, {"the calibration data": [calib]})
