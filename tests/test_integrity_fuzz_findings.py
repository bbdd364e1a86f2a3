"""Malformed models the fuzzer found (tests/fuzz): each exited 1 ("internal error") before its fix.

The contract is the one of :mod:`tests.test_integrity`: exit 2 with one stderr line naming the file
and the culprit (or exit 0 where the model can be handled), inputs byte-identical, nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune import _io
from tests import models
from tests.test_integrity import _hashes, _init, _invoke, _mlp, _refused, _run_all_verbs, _set_external, _verbs


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """protobuf hands invalid UTF-8 text over as bytes; writing the model back failed (SerdeError)."""
    model = _mlp()
    model.producer_name = "onnxprune-tests"
    blob = bytearray(model.SerializeToString())
    blob[blob.find(b"nxprune-tests")] ^= 0xF4
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    path.write_bytes(bytes(blob))
    _run_all_verbs(tmp_path, path, "producer_name", "UTF-8")


def test_weight_of_the_wrong_rank_is_skipped_not_crashed(tmp_path: Path) -> None:
    """A 0-d Gemm weight (external data longer than its dims) crashed ``inspect --ranks`` (IndexError)."""
    folder = tmp_path / "m"
    folder.mkdir()
    model = _mlp()
    w2 = _init(model, "W2")
    (folder / "w.bin").write_bytes(w2.raw_data)
    _set_external(w2, "w.bin", 0, None)
    del w2.dims[:]
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    before = _hashes(folder)
    for verb in ("inspect-ranks", "prune", "lowrank"):
        result = _invoke(*_verbs(path, tmp_path / "out" / f"{verb}.onnx")[verb])
        assert result.exit_code in (0, 2), result.output
        assert len(result.stderr.strip().splitlines()) <= 1, result.stderr
    assert _hashes(folder) == before


def _prune_rewired_conv_model(tmp_path: Path, rewire: Callable[[onnx.ModelProto], None], *names: str) -> str:
    """Prune (with calibration data) the conv model after ``rewire``; the one refusal line, checked."""
    folder = tmp_path / "m"
    folder.mkdir()
    model = models.conv_model()
    rewire(model)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.savez(folder / "calib.npz", **{model.graph.input[0].name: x})
    before = _hashes(folder)
    out = tmp_path / "out.onnx"
    result = _invoke("prune", path, "-o", out, "--sparsity", "0.5", "--calib", folder / "calib.npz")
    line = _refused(result, path, *names)
    assert not out.exists() and _hashes(folder) == before
    return line


def test_activation_without_its_channel_axis_is_an_input_error(tmp_path: Path) -> None:
    """A Conv reading a 1-D value (a bias rewired as its data) crashed calibration (IndexError).

    The input model is tried on one sample first, so onnxruntime names it; calibration would refuse too.
    """

    def bias_as_data(model: onnx.ModelProto) -> None:
        relu = next(n for n in model.graph.node if n.op_type == "Relu")
        relu.input[0] = next(t.name for t in model.graph.initializer if len(t.dims) == 1)

    _prune_rewired_conv_model(tmp_path, bias_as_data, "input model", "conv2")


def test_input_model_that_fails_on_its_first_sample_is_the_inputs_fault(tmp_path: Path) -> None:
    """Swapped Conv inputs load but fail when run: the input model is named, up front."""

    def swap_conv_inputs(model: onnx.ModelProto) -> None:
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        conv.input[0], conv.input[1] = conv.input[1], conv.input[0]

    assert "result" not in _prune_rewired_conv_model(tmp_path, swap_conv_inputs, "input model")


def test_running_out_of_memory_on_an_input_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declared sizes under every cap can still exceed the machine (a 2^31-wide input)."""

    def exhausted(*_args: object, **_kwargs: object) -> None:
        raise MemoryError("Unable to allocate 8.00 GiB for an array with shape (1, 2147483648)")

    path = tmp_path / "model.onnx"
    path.write_bytes(_mlp().SerializeToString())
    monkeypatch.setattr(_io, "load", exhausted)
    result = _invoke("inspect", path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: out of memory"), result.stderr
