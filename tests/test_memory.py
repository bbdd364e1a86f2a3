"""Large models without copies: sessions read external data in place, validation holds one model at a time."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxprune import _io, _ort, report, verify
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.verify import validate
from tests.conftest import to_ir
from tests.models.recognizers import offset_classifier


def _external_mlp(folder: Path, width: int = 64, layers: int = 3, seed: int = 0) -> Path:
    """x[N, width] -> (MatMul + Add + Relu) x layers, weights in one external-data file (biases too small: inline)."""
    rng = np.random.default_rng(seed)
    x = ir.val("x", ir.DataType.FLOAT, ir.Shape(["N", width]))
    nodes, inits, current = [], [], x
    for i in range(layers):
        w = ir.Value(name=f"w{i}", const_value=ir.tensor(rng.standard_normal((width, width)).astype(np.float32) / 8))
        b = ir.Value(name=f"b{i}", const_value=ir.tensor(np.full(width, 0.1, np.float32)))
        inits += [w, b]
        mm = ir.node("MatMul", [current, w])
        add = ir.node("Add", [mm.outputs[0], b])
        relu = ir.node("Relu", [add.outputs[0]])
        nodes += [mm, add, relu]
        current = relu.outputs[0]
    current.name, current.type, current.shape = "y", ir.TensorType(ir.DataType.FLOAT), ir.Shape(["N", width])
    graph = ir.Graph([x], [current], nodes=nodes, initializers=inits, opset_imports={"": 17}, name="mlp")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlp.onnx"
    ir.save(ir.Model(graph, ir_version=8), path, external_data="mlp.onnx.data", size_threshold_bytes=1024)
    return path


def _no_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a copy of the model was written")

    monkeypatch.setattr(_io, "model_file", refuse)
    monkeypatch.setattr(_io, "save", refuse)
    monkeypatch.setattr(ir, "save", refuse)


def test_external_data_session_reads_weights_in_place_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _external_mlp(tmp_path / "m")
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    expected = onnx_run(path, x)
    model = _io.load(path)
    _no_copies(monkeypatch)
    for lean in (False, True):
        got = _ort.session(model, lean=lean).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    cut = _ort.session(model, ["val_1"], only=True)  # the first Add: a cut graph drops later weights
    assert [o.name for o in cut.get_outputs()] == ["val_1"]
    assert not any(isinstance(v.const_value, ir.Tensor) for v in model.graph.initializers.values() if v.name[0] == "w")


def onnx_run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_checker_and_sizes_need_no_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _external_mlp(tmp_path / "m")
    on_disk = path.stat().st_size + path.with_name("mlp.onnx.data").stat().st_size
    model = _io.load(path)
    _no_copies(monkeypatch)
    verify.check_model(model)
    size, zipped = report.file_sizes(model)
    assert abs(size - on_disk) < 1024 and 0 < zipped < size  # the placeholders' references differ by a few bytes


def test_validation_of_a_large_model_holds_one_session_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the interleaving threshold, latency alternates sessions; fidelity is that of both side by side."""
    ref, cand = to_ir(offset_classifier()), to_ir(offset_classifier(collapsed=True))
    source = ArraySource(
        {"x": np.random.default_rng(2).standard_normal((40, 16)).astype(np.float32)}, input_specs(ref), "t"
    )
    together = validate(ref, cand, source, batch_size=8, latency_runs=2)
    monkeypatch.setattr(verify, "INTERLEAVED_LATENCY_BYTES", 0)
    apart = validate(ref, cand, source, batch_size=8, latency_runs=2)
    assert together.latency_mode == "interleaved" and apart.latency_mode == "alternating lean sessions"
    assert apart.outputs == together.outputs and apart.samples == together.samples == 40
    assert apart.latency_ref_ms > 0 and apart.latency_cand_ms > 0


def test_reference_outputs_are_recorded_then_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's session is released before the result's is built (when its outputs are small)."""
    ref, cand = to_ir(offset_classifier()), to_ir(offset_classifier(collapsed=True))
    source = ArraySource(
        {"x": np.random.default_rng(3).standard_normal((24, 16)).astype(np.float32)}, input_specs(ref), "t"
    )
    sessions: list[weakref.ref] = []
    alive_at_creation: list[int] = []
    created = _ort.session

    def tracked(*args: object, **kwargs: object) -> object:
        alive_at_creation.append(sum(1 for r in sessions if r() is not None))
        sess = created(*args, **kwargs)
        sessions.append(weakref.ref(sess))
        return sess

    monkeypatch.setattr(_ort, "session", tracked)
    comparison = verify._compare(ref, cand, source, 8, None, None, keep_outputs=False)
    assert alive_at_creation == [0, 0] and comparison.samples == 24
    monkeypatch.setattr(verify, "record_outputs", lambda *_args: None)  # outputs too large to keep
    both = verify._compare(ref, cand, source, 8, None, None, keep_outputs=False)
    assert both.outputs == comparison.outputs


def test_dropped_pages_read_back_the_same_values(tmp_path: Path) -> None:
    from onnxprune.analysis.weights import drop_pages

    model = _io.load(_external_mlp(tmp_path / "m"))
    tensor = model.graph.initializers["w0"].const_value
    assert isinstance(tensor, ir.ExternalTensor)
    before = tensor.numpy().copy()
    report.model_stats(model)  # reads every weight, then drops its pages
    drop_pages(tensor)
    np.testing.assert_array_equal(tensor.numpy(), before)
