"""Run every example, so that the examples never rot (as onnx-graphsurgeon's ``test_examples.py`` does).

``01_prune_cli`` runs the commands of its README's ``bash`` blocks, unchanged, in a copy of the
example folder (with ``examples/data`` beside it), so nothing is written into the repository.
The scripts of ``02`` and ``03`` write into ``tmp_path`` through ``--out``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATA = EXAMPLES / "data"
PRUNABLE = ("features.0.weight", "features.2.weight", "features.5.weight", "classifier.1.weight", "classifier.3.weight")


def bash_commands(readme: Path) -> list[str]:
    """The commands in a Markdown file's bash code blocks, one per line (a trailing backslash continues)."""
    commands: list[str] = []
    in_block, pending = False, ""
    for line in readme.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = not in_block and stripped == "```bash"
            continue
        if not in_block or not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        commands.append(pending)
        pending = ""
    return commands


def _run(command: str | list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's scripts folder first on PATH (where ``onnxprune`` lives)."""
    env = {**os.environ, "PATH": os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])}
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        shell=isinstance(command, str),
        executable="/bin/bash" if isinstance(command, str) else None,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _accuracy(path: Path) -> float:
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with np.load(DATA / "digits_test.npz") as test:
        logits = sess.run(None, {"input": test["input"]})[0]
        return float(np.mean(logits.argmax(axis=1) == test["label"]))


def _sparsity(array: np.ndarray) -> float:
    return float(np.mean(array == 0))


def _check_nm(array: np.ndarray, in_axis: int, n: int = 2, m: int = 4) -> None:
    rows = np.moveaxis(array, in_axis, -1).reshape(-1, m)
    assert (np.count_nonzero(rows, axis=1) <= n).all()


def test_01_prune_cli(tmp_path: Path) -> None:
    example = tmp_path / "01_prune_cli"
    shutil.copytree(EXAMPLES / "01_prune_cli", example, ignore=shutil.ignore_patterns("out"))
    shutil.copytree(DATA, tmp_path / "data")
    commands = bash_commands(example / "README.md")
    assert len(commands) >= 6 and all(c.startswith("onnxprune ") for c in commands)
    outputs = {command: _run(command, example).stdout for command in commands}
    out = example / "out"

    wanda = _weights(out / "wanda50.onnx")
    for name in PRUNABLE:
        assert _sparsity(wanda[name]) == pytest.approx(0.5, abs=0.01), name
    assert _accuracy(out / "wanda50.onnx") > 0.95
    assert _accuracy(out / "channels50.onnx") > 0.95  # measured 0.978 (dense 0.986)
    assert (out / "channels50.onnx").stat().st_size < (DATA / "digits_cnn.onnx").stat().st_size / 2
    assert _accuracy(out / "flops40.onnx") > 0.9
    lowrank = yaml.safe_load((out / "lowrank50.json").read_text())
    assert lowrank["after"]["params"] <= 0.5 * lowrank["before"]["params"]
    assert _accuracy(out / "lowrank50.onnx") > 0.97  # measured 0.986 (dense 0.986)
    assert _accuracy(out / "energy90.onnx") > 0.9
    assert _accuracy(out / "channels50_ft.onnx") > 0.96  # measured 0.986
    assert _accuracy(out / "sparse90_ft.onnx") > 0.93  # measured 0.964 (one-shot 0.442)
    assert _sparsity(_weights(out / "sparse90_ft.onnx")["classifier.1.weight"]) > 0.85
    both = yaml.safe_load((out / "channels25_lowrank.json").read_text())
    assert [p["name"] for p in both["passes"]] == ["channels", "lowrank", "cleanup"]
    assert all(p["changed"] for p in both["passes"][:2])
    assert _accuracy(out / "channels25_lowrank.onnx") > 0.95
    report = yaml.safe_load((out / "wanda50.json").read_text())  # JSON is YAML
    assert report["validation"]["samples"] == 360

    nm = _weights(out / "nm24.onnx")
    for name in PRUNABLE[1:]:
        _check_nm(nm[name], in_axis=1)  # Conv [out, in, kh, kw] and Gemm(transB=1) [out, in]
    assert _sparsity(nm["features.0.weight"]) == 0  # one input channel: skipped
    assert _accuracy(out / "nm24.onnx") > 0.9
    assert (out / "nm24_validation.json").is_file()

    recipe_out = _weights(out / "digits_cnn_wanda50.onnx")
    assert _sparsity(recipe_out["features.0.weight"]) == 0  # keep_first
    for name in PRUNABLE[1:]:
        assert _sparsity(recipe_out[name]) == pytest.approx(0.5, abs=0.01), name
    assert _accuracy(out / "digits_cnn_wanda50.onnx") > 0.95

    # recipe.yaml is the README's --dump-recipe output (absolute paths) with keep_first switched on
    dumped = yaml.safe_load(next(text for command, text in outputs.items() if "--dump-recipe" in command))
    dumped["passes"][0]["config"]["keep_first"] = True
    written = yaml.safe_load((example / "recipe.yaml").read_text())
    for section, key in (
        (None, "model"),
        (None, "output"),
        (None, "validation_data"),
        (None, "report"),
        ("calibration", "path"),
    ):
        holder = written[section] if section else written
        holder[key] = str((example / holder[key]).resolve())
    assert dumped == written


def test_02_python_api(tmp_path: Path) -> None:
    _run([sys.executable, "examples/02_python_api/prune.py", "--out", str(tmp_path)], REPO)
    wanda = _weights(tmp_path / "digits_cnn_wanda50.onnx")
    assert _sparsity(wanda["features.0.weight"]) == 0  # keep_first
    for name in PRUNABLE[1:]:
        assert _sparsity(wanda[name]) == pytest.approx(0.5, abs=0.01), name
    assert _accuracy(tmp_path / "digits_cnn_wanda50.onnx") > 0.95
    nm = _weights(tmp_path / "digits_cnn_2of4.onnx")
    for name in PRUNABLE[1:]:
        _check_nm(nm[name], in_axis=1)
    assert _accuracy(tmp_path / "digits_cnn_2of4.onnx") > 0.9
    both = tmp_path / "digits_cnn_channels25_lowrank.onnx"
    assert _accuracy(both) > 0.95
    ops = [n.op_type for n in onnx.load(both).graph.node]
    assert ops.count("Conv") > 3  # factorized convs come in pairs


def test_03_graphsurgeon(tmp_path: Path) -> None:
    _run([sys.executable, "examples/03_graphsurgeon/prune_gs.py", "--out", str(tmp_path)], REPO)
    path = tmp_path / "digits_cnn_2of4_gs.onnx"
    original, pruned = onnx.load(DATA / "digits_cnn.onnx"), onnx.load(path)
    assert [n.name for n in pruned.graph.node] == [n.name for n in original.graph.node]
    opsets = [[(o.domain, o.version) for o in m.opset_import] for m in (original, pruned)]
    assert opsets[0] == opsets[1] and pruned.ir_version == original.ir_version
    weights = _weights(path)
    for name in PRUNABLE[1:]:
        _check_nm(weights[name], in_axis=1)
    assert _accuracy(path) > 0.9
