"""Scratch folders belong to a run: removed on exit, exceptions, SIGINT and SIGTERM; dead runs' folders swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner

from onnxprune import _scratch
from onnxprune.analysis.weights import spill
from onnxprune.cli import cli
from tests import models
from tests.conftest import sha256


def _external_model(folder: Path) -> Path:
    path = folder / "model.onnx"
    onnx.save(models.conv_model(), path, save_as_external_data=True, location="w.bin", size_threshold=64)
    return path


def _calib(folder: Path) -> Path:
    path = folder / "calib.npz"
    np.savez(path, **models.random_inputs(models.conv_model(), batch=8))
    return path


SLOW_METRIC = """
import os, tempfile, time
from pathlib import Path

def slow(outputs, data_path):
    # called during validation, after the pass spilled its weights: say so, list the temp folder, wait
    listing = sorted(os.listdir(tempfile.gettempdir()))
    Path(os.environ["READY"]).write_text("\\n".join(listing))
    time.sleep(60)
    return 1.0
"""


def _onnxprune_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "onnxprune-" in p.name)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_removes_every_scratch_folder(tmp_path: Path, sig: signal.Signals, status: int) -> None:
    temp = tmp_path / "tmp"
    work = tmp_path / "work"
    temp.mkdir()
    work.mkdir()
    model, calib = _external_model(work), _calib(work)
    (work / "slow_metric.py").write_text(SLOW_METRIC)
    ready = tmp_path / "ready"
    out = tmp_path / "out" / "pruned.onnx"
    before = {p: sha256(p) for p in (model, work / "w.bin", calib)}
    env = {**os.environ, "TMPDIR": str(temp), "READY": str(ready)}
    args = [sys.executable, "-c", "from onnxprune.cli import main; main()", "--quiet", "prune", str(model)]
    args += ["-o", str(out), "--sparsity", "0.5", "--calib", str(calib), "--metric", f"{work / 'slow_metric.py'}:slow"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.communicate(timeout=30)
        during = ready.read_text().split()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert any(name.startswith("onnxprune-spill-") for name in during), during  # the run did spill
    assert proc.returncode == status, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: interrupted by"), stderr
    assert _onnxprune_entries(temp) == []
    assert not out.parent.exists() or _onnxprune_entries(out.parent) == []
    assert not out.exists()
    assert {p: sha256(p) for p in before} == before


def _dead_pid() -> tuple[int, int]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = _scratch._start_ticks(child.pid) or 1
    child.wait()
    return child.pid, ticks


def _entry(folder: Path, pid: int, ticks: int, *, boot: str = _scratch._BOOT, hidden: bool = False) -> Path:
    path = folder / f"{'.' if hidden else ''}onnxprune-spill-{boot}-{pid}-{ticks}-abcd1234"
    path.mkdir()
    (path / "w.bin").write_bytes(b"x" * 10)
    return path


def test_sweep_removes_only_folders_of_provably_dead_runs(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        live_ticks = _scratch._start_ticks(live.pid)
        assert live_ticks is not None
        dead_pid, dead_ticks = _dead_pid()
        dead = _entry(tmp_path, dead_pid, dead_ticks)
        dead_hidden = _entry(tmp_path, dead_pid, dead_ticks, hidden=True)
        reused = _entry(tmp_path, live.pid, live_ticks + 1)  # the pid now belongs to another process
        alive = _entry(tmp_path, live.pid, live_ticks)
        mine = _entry(tmp_path, os.getpid(), _scratch._start_ticks(os.getpid()) or 0)
        other_boot_old = _entry(tmp_path, live.pid, live_ticks, boot="deadbeef")
        os.utime(other_boot_old, (1_000_000, 1_000_000))  # untouched since before this boot
        other_boot_new = _entry(tmp_path, live.pid + 1, 5, boot="deadbeef")  # maybe another machine's live run
        foreign = tmp_path / "onnxprune-spill-old-style"
        foreign.mkdir()
        removed = set(_scratch.sweep(tmp_path))
    finally:
        live.kill()
        live.wait()
    assert removed == {dead, dead_hidden, reused, other_boot_old}
    assert all(p.exists() for p in (alive, mine, other_boot_new, foreign))


def test_a_later_run_removes_dead_runs_folders_in_temp_and_beside_out(
    tmp_path: Path, digits_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    pid, ticks = _dead_pid()
    stale = [_entry(temp, pid, ticks), _entry(out_dir, pid, ticks, hidden=True)]
    live = _entry(temp, os.getpid(), _scratch._start_ticks(os.getpid()) or 0)
    result = CliRunner().invoke(
        cli, ["--quiet", "prune", str(digits_model), "-o", str(out_dir / "o.onnx"), "--sparsity", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    assert live.exists()
    assert _onnxprune_entries(out_dir) == []


def test_scratch_is_created_lazily_and_removed_on_exceptions(tmp_path: Path) -> None:
    scratch = _scratch.Scratch(parent=tmp_path)
    assert not scratch.created and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError), scratch.activate():
        tensor = spill(np.ones((4, 4), np.float32), ir.DataType.FLOAT, "w")
        assert Path(tensor.base_dir).parent == tmp_path
        assert np.array_equal(tensor.numpy(), np.ones((4, 4), np.float32))
        raise RuntimeError("a pass failed")
    assert list(tmp_path.iterdir()) == []
    assert _scratch.current() is not scratch
