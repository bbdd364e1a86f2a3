"""Sanity check of the harness: the in-process runs the fuzzers use behave as the real console script.

A few inputs (clean, garbled, and known defect classes) run through ``CliRunner`` and through a real
``python -c 'from onnxprune.cli import main; main()'`` process; exit status and stderr must agree,
and the subprocess run must keep the contract too.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.fuzz.contract import assert_contract, invoke, invoke_subprocess, snapshot
from tests.fuzz.model_mutations import Mutation, apply
from tests.fuzz.seeds import seed_model, write_calibration, write_model

pytestmark = pytest.mark.fuzz


def _model(folder: Path, *edits: Mutation) -> Path:
    proto = seed_model("cnn")
    for edit in edits:
        assert apply(edit, proto, folder)
    path = folder / "model.onnx"
    write_model(proto, path)
    return path


def _clean(folder: Path) -> list[str]:
    return ["prune", str(_model(folder)), "-o", str(folder / "out.onnx"), "--sparsity", "0.5", "--calib", "calib.npz"]


def _garbled(folder: Path) -> list[str]:
    (folder / "model.onnx").write_bytes(b"\x08\x07garbage")
    return ["inspect", str(folder / "model.onnx")]


def _negative_dim(folder: Path) -> list[str]:
    model = _model(folder, Mutation("tensor_dim", 0, (0, -1)))
    return ["prune", str(model), "-o", str(folder / "out.onnx"), "--sparsity", "0.5"]


def _report_is_model(folder: Path) -> list[str]:
    model = _model(folder)
    return ["prune", str(model), "-o", str(folder / "out.onnx"), "--sparsity", "0.5", "--report", str(model)]


def _usage_error(folder: Path) -> list[str]:
    return ["prune", str(_model(folder)), "-o", str(folder / "out.onnx")]


def _nan_calibration(folder: Path) -> list[str]:
    data = np.load(folder / "calib.npz")["x"].copy()
    data[0, 0, 0, 0] = np.nan
    np.savez(folder / "nan.npz", x=data)
    return ["prune", str(_model(folder)), "-o", str(folder / "out.onnx"), "--pattern", "2:4", "--calib", "nan.npz"]


CASES: dict[str, Callable[[Path], list[str]]] = {
    "clean prune": _clean,
    "garbled model": _garbled,
    "negative initializer dim": _negative_dim,
    "--report is the input model": _report_is_model,
    "usage error": _usage_error,
    "NaN in calibration": _nan_calibration,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_process_runs_match_the_console_script(case: str, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    arrays = write_calibration("cnn", folder / "calib.npz")
    args = [a if not a.endswith(".npz") else str(folder / a) for a in CASES[case](folder)]
    before = snapshot(folder)
    shutil.copytree(folder, tmp_path / "backup", symlinks=True)
    inside = invoke(args)
    shutil.rmtree(folder)  # the same inputs at the same paths for the real process
    shutil.copytree(tmp_path / "backup", folder, symlinks=True)
    real = invoke_subprocess(args, cwd=folder)
    assert (inside.exit_code, inside.stderr) == (real.exit_code, real.stderr), f"{inside.describe()}\n{real.describe()}"
    must_fail = "NaN calibration" if case == "NaN in calibration" else None
    out = folder / "out.onnx" if args[0] == "prune" else None
    assert_contract(real, folder, before, output=out, sample={"x": arrays["x"][:1]}, must_fail=must_fail, context=case)
