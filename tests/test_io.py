"""Model I/O: loading, atomic saving, external data, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import onnxprune
from onnxprune import _io
from onnxprune.errors import ModelLoadError, OutputPathError
from onnxprune.passes import UnstructuredPruneConfig, UnstructuredPrunePass
from tests import models
from tests.conftest import data_files_of, ort_run, sha256


def _external_model(tmp_path: Path) -> Path:
    proto = models.conv_model()
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save(
        proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=64
    )
    return path


def test_external_data_round_trip_stays_memory_mapped(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    before_hash = sha256(path.parent / "weights.bin")
    model = onnxprune.load(path)
    assert any(isinstance(v.const_value, ir.ExternalTensor) for v in model.graph.initializers.values())
    feeds = models.random_inputs(models.conv_model())
    reference = ort_run(model, feeds)
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.0))(model)
    out = onnxprune.save(model, tmp_path / "out" / "model.onnx", external_data=True, size_threshold_bytes=64)
    assert len(data_files_of(out)) == 1
    reloaded = onnxprune.load(out)
    assert any(isinstance(v.const_value, ir.ExternalTensor) for v in reloaded.graph.initializers.values())
    for key, value in ort_run(reloaded, feeds).items():
        assert np.array_equal(value, reference[key])
    assert sha256(path.parent / "weights.bin") == before_hash


def test_external_layout_is_kept_by_default_and_inline_on_request(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    model = onnxprune.load(path)
    before = {t.name: t.data_location for t in onnx.load(path, load_external_data=False).graph.initializer}
    kept = onnxprune.save(model, tmp_path / "kept.onnx")
    assert len(data_files_of(kept)) == 1
    after = {t.name: t.data_location for t in onnx.load(kept, load_external_data=False).graph.initializer}
    assert after == before
    out = onnxprune.save(model, tmp_path / "inline.onnx", external_data=False)
    assert not data_files_of(out)
    proto = onnx.load(out, load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    proto = onnx.load(path, load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(proto, path)
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        onnxprune.load(path)


def test_truncated_external_data_is_refused(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    data = path.parent / "weights.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="truncated"):
        onnxprune.load(path)


@pytest.mark.parametrize("content", [b"", b"hello, this is not onnx\n" * 10, b"\x08\x07\x12\x04"])
def test_non_onnx_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=str(path)):
        onnxprune.load(path)


def test_truncated_model_is_refused(tmp_path: Path, digits_model: Path) -> None:
    data = digits_model.read_bytes()
    digits_model.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        onnxprune.load(digits_model)


def test_output_equal_to_input_is_refused(digits_model: Path) -> None:
    before = sha256(digits_model)
    model = onnxprune.load(digits_model)
    with pytest.raises(OutputPathError):
        onnxprune.save(model, digits_model)
    with pytest.raises(OutputPathError):
        onnxprune.save(model, digits_model.parent / "." / digits_model.name)
    assert sha256(digits_model) == before


def test_save_is_atomic(tmp_path: Path, digits_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnxprune.load(digits_model)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def broken_save(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(_io.ir, "save", broken_save)
    with pytest.raises(OSError):
        onnxprune.save(model, target)
    assert target.read_bytes() == b"previous"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxprune-")]


def test_opset18_model_round_trips(tmp_path: Path) -> None:
    proto = models.opset18_model()
    onnx.save(proto, tmp_path / "m.onnx")
    model = onnxprune.load(tmp_path / "m.onnx")
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5))(model)
    onnxprune.save(model, tmp_path / "o.onnx")
    reloaded = onnx.load(tmp_path / "o.onnx")
    onnx.checker.check_model(reloaded, full_check=True)
    assert {n.op_type for n in reloaded.graph.node} >= {"Reshape", "ReduceMean"}
    ort_run(reloaded, models.random_inputs(proto))


def test_pruning_external_data_keeps_weights_memory_mapped(tmp_path: Path) -> None:
    path = _external_model(tmp_path)
    model = onnxprune.load(path)
    feeds = models.random_inputs(models.conv_model())
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5))(model)
    pruned = [v for v in model.graph.initializers.values() if v.const_value.size >= 64]
    assert pruned and all(isinstance(v.const_value, ir.ExternalTensor) for v in pruned)
    assert all(
        np.mean(v.const_value.numpy() == 0) == pytest.approx(0.5, abs=0.02) for v in pruned if v.shape.rank() > 1
    )
    in_memory = ort_run(model, feeds)
    out = onnxprune.save(model, tmp_path / "pruned.onnx", external_data=True, size_threshold_bytes=64)
    for key, value in ort_run(onnxprune.load(out), feeds).items():
        assert np.array_equal(value, in_memory[key])


def test_initializers_listed_as_graph_inputs_become_plain_weights(tmp_path: Path) -> None:
    """Older exporters list every weight as a graph input; channel pruning renames weights (fuzz finding)."""
    from click.testing import CliRunner

    from onnxprune.cli import cli

    proto = models.conv_model()
    weights = {i.name for i in proto.graph.input}
    for tensor in proto.graph.initializer:
        proto.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    path, out = tmp_path / "model.onnx", tmp_path / "out.onnx"
    onnx.save(proto, path)
    before = sha256(path)
    result = CliRunner().invoke(cli, ["-q", "prune", str(path), "-o", str(out), "--channels", "0.5"])
    assert result.exit_code == 0, result.output
    assert sha256(path) == before
    pruned = onnx.load(out)
    assert {i.name for i in pruned.graph.input} == weights
    feeds = models.random_inputs(models.conv_model())
    assert all(np.isfinite(v).all() for v in ort_run(pruned, feeds).values())
