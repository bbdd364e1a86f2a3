"""Atomic external-data saves: at every instant OUT loads as the old pair or the new one; nothing left after."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxprune
from onnxprune import _io
from onnxprune.passes import UnstructuredPruneConfig, UnstructuredPrunePass
from tests import models
from tests.conftest import data_files_of, ort_run, sha256

FEEDS = models.random_inputs(models.conv_model())


def _source(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "model.onnx"
    path.parent.mkdir()
    onnx.save(models.conv_model(), path, save_as_external_data=True, location="w.bin", size_threshold=64)
    return path


def _pruned(source: Path, sparsity: float) -> ir.Model:
    model = onnxprune.load(source)
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=sparsity))(model)
    return model


def _outputs(path: Path) -> dict[str, np.ndarray]:
    return ort_run(onnxprune.load(path), FEEDS)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _beside(out: Path) -> set[str]:
    return {p.name for p in out.parent.iterdir()}


@pytest.fixture
def old_out(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    source = _source(tmp_path)
    out = tmp_path / "out" / "model.onnx"
    onnxprune.save(_pruned(source, 0.3), out)
    assert len(data_files_of(out)) == 1
    return source, out, _outputs(out)


def test_completed_overwrite_leaves_only_the_new_pair(old_out: tuple[Path, Path, dict]) -> None:
    source, out, old = old_out
    before = sha256(source.parent / "w.bin")
    new_model = _pruned(source, 0.7)
    expected = ort_run(new_model, FEEDS)
    onnxprune.save(new_model, out)
    assert not _same(expected, old)
    assert _same(_outputs(out), expected)
    (data,) = data_files_of(out)
    assert _beside(out) == {out.name, data.name}
    assert sha256(source.parent / "w.bin") == before


@pytest.mark.parametrize("step", ["data rename", "model rename", "old data removal"])
def test_crash_at_each_step_leaves_a_loadable_out(
    old_out: tuple[Path, Path, dict], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    source, out, old = old_out
    new_model = _pruned(source, 0.7)
    expected = ort_run(new_model, FEEDS)
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src: object, dst: object) -> None:
        dst = Path(dst)  # onnx_ir's own writes in the temporary folder go through os.replace too
        if (step == "data rename" and dst.parent == out.parent and dst.suffix == ".data") or (
            step == "model rename" and dst == out
        ):
            raise OSError("simulated crash")
        real_replace(src, dst)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if step == "old data removal" and self.suffix == ".data" and self.parent == out.parent.resolve():
            raise OSError("simulated crash")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(_io.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError, match="simulated crash"):
        onnxprune.save(new_model, out)
    monkeypatch.undo()
    got = _outputs(out)
    assert _same(got, expected if step == "old data removal" else old), step
    assert not [n for n in _beside(out) if n.startswith(".onnxprune-")]
    onnxprune.save(new_model, out)  # the next save cleans what the crash left
    (data,) = data_files_of(out)
    assert _beside(out) == {out.name, data.name}
    assert _same(_outputs(out), expected)


KILLED_SAVE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import onnxprune
    from onnxprune import _io
    from onnxprune.passes import UnstructuredPruneConfig, UnstructuredPrunePass

    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    model = onnxprune.load(source)
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.7))(model)
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out:  # the data file is in place, the .onnx not yet: die as SIGKILL would
            os._exit(9)
        real(src, dst)

    _io.os.replace = replace
    onnxprune.save(model, out)
    """
)


def test_kill_between_the_renames_keeps_the_old_pair_and_a_later_save_cleans_up(
    old_out: tuple[Path, Path, dict],
) -> None:
    source, out, old = old_out
    old_data = data_files_of(out)
    result = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(source), str(out)], capture_output=True)
    assert result.returncode == 9, result.stderr.decode()
    left = _beside(out)
    assert [n for n in left if n.startswith(".onnxprune-save-")], left  # the killed save's folder
    assert len(data_files_of(out)) == 2  # old data (referenced) + new data (stray)
    assert _same(_outputs(out), old)  # OUT still loads as the old pair
    assert set(old_data) <= set(data_files_of(out))
    new_model = _pruned(source, 0.5)
    onnxprune.save(new_model, out)
    (data,) = data_files_of(out)
    assert _beside(out) == {out.name, data.name}, _beside(out)
    assert _same(_outputs(out), ort_run(new_model, FEEDS))


def test_old_data_that_is_an_input_is_never_removed(tmp_path: Path) -> None:
    """OUT's previous data file is an input of the model being saved: it stays."""
    source = _source(tmp_path)
    out = tmp_path / "in" / "copy.onnx"
    proto = onnx.load(source, load_external_data=False)
    onnx.save(proto, out)  # a second model file referring to the input's w.bin
    before = sha256(source.parent / "w.bin")
    onnxprune.save(_pruned(source, 0.5), out)
    assert (source.parent / "w.bin").is_file() and sha256(source.parent / "w.bin") == before
    assert _same(_outputs(source), ort_run(onnxprune.load(source), FEEDS))


def test_foreign_data_files_of_a_replaced_out_are_kept(tmp_path: Path) -> None:
    """Only files named like ours (OUT.onnx[.<token>].data) are removed, never a user's weights.bin."""
    source = _source(tmp_path)
    out = tmp_path / "o" / "m.onnx"
    out.parent.mkdir()
    onnx.save(models.conv_model(), out, save_as_external_data=True, location="weights.bin", size_threshold=64)
    onnxprune.save(_pruned(source, 0.5), out)
    assert (out.parent / "weights.bin").is_file()
    assert len(data_files_of(out)) == 1
