"""The package builds as a wheel whose mapped subpackages import from the installed copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_installs_and_imports(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("onnxprune-*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        cwd=tmp_path,
    )
    code = (
        "import onnxprune, onnxprune.passes, onnxprune.calibration, onnxprune.analysis, onnxprune.cli;"
        f"assert onnxprune.__file__.startswith({str(target)!r}), onnxprune.__file__;"
        f"assert onnxprune.passes.__file__.startswith({str(target)!r});"
        "print(sorted(onnxprune.passes.PASSES))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert "unstructured" in result.stdout
