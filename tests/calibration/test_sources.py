"""Calibration sources: layouts, checks, and streaming statistics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from onnxprune.calibration import (
    ChannelStats,
    ConvGeometry,
    StatRequest,
    collect_stats,
    input_specs,
    open_source,
    parse_input_shapes,
    unfold_conv_input,
)
from onnxprune.errors import CalibrationError
from tests import models
from tests.conftest import to_ir


@pytest.fixture
def conv() -> object:
    return to_ir(models.conv_model())


def test_per_sample_and_stacked_layouts_give_the_same_batches(tmp_path: Path, conv: object) -> None:
    x = np.random.default_rng(0).standard_normal((10, 1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "per_sample.npz", x=x)
    np.savez(tmp_path / "stacked.npz", x=x[:, 0])
    a = list(open_source(tmp_path / "per_sample.npz", conv).batches(4))
    b = list(open_source(tmp_path / "stacked.npz", conv).batches(4))
    assert [batch["x"].shape for batch in a] == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    for p, q in zip(a, b, strict=True):
        assert np.array_equal(p["x"], q["x"])


def test_negative_dim_value_is_dynamic(tmp_path: Path) -> None:
    """Paddle2ONNX writes the batch as dim_value -1 (PP-OCR cls): a stacked npz must batch along axis 0."""
    proto = models.conv_model()
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    model = to_ir(proto)
    assert input_specs(model)[0].shape[0] is None
    np.savez(tmp_path / "x.npz", x=np.zeros((5, 3, 8, 8), np.float32))
    assert [b["x"].shape[0] for b in open_source(tmp_path / "x.npz", model).batches(4)] == [4, 1]


def test_folder_of_npz_and_samples_limit(tmp_path: Path, conv: object) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(tmp_path / f"part{i}.npz", x=rng.standard_normal((4, 1, 3, 8, 8)).astype(np.float32))
    source = open_source(tmp_path, conv, samples=9)
    assert source.num_samples == 9
    assert sum(b["x"].shape[0] for b in source.batches(5)) == 9


def test_folder_of_npy_single_input(tmp_path: Path, conv: object) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(tmp_path / f"s{i}.npy", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert open_source(tmp_path, conv).num_samples == 3


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"wrong": np.zeros((2, 1, 3, 8, 8), np.float32)}, "missing model input 'x'"),
        ({"x": np.zeros((2, 1, 3, 8, 8), np.float64)}, "input 'x' has dtype float64"),
        ({"x": np.zeros((2, 1, 4, 8, 8), np.float32)}, "input 'x' has shape"),
        ({"x": np.zeros((8, 8), np.float32)}, "input 'x' has shape"),
    ],
)
def test_bad_calibration_names_the_input(tmp_path: Path, conv: object, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(CalibrationError, match=message):
        open_source(tmp_path / "c.npz", conv)


def test_pickled_arrays_are_never_loaded(tmp_path: Path, conv: object) -> None:
    np.savez(tmp_path / "c.npz", x=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CalibrationError, match="cannot read"):
        open_source(tmp_path / "c.npz", conv)


def test_random_source_warns_and_needs_fixed_dims(conv: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        source = open_source(None, conv, samples=3)
    assert "NO CALIBRATION DATA" in caplog.text
    assert [b["x"].shape for b in source.batches(8)] == [(1, 3, 8, 8)] * 3
    bert_like = to_ir(models.opset18_model())
    specs = input_specs(bert_like)
    assert specs


def test_random_source_dynamic_dim_needs_input_shape() -> None:
    proto = models.lstm_model()  # [seq 5, batch N, 8]: only the batch is dynamic
    model = to_ir(proto)
    open_source(None, model, samples=1)
    with pytest.raises(CalibrationError, match="--input-shape"):
        parse_input_shapes(["x=oops"])


def test_stats_stream_equal_full_computation(conv: object) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3, 8, 8)).astype(np.float32)
    x[x < -1] = 0
    source = open_source_from(x, conv)
    requests = [StatRequest("x", 1, gram=True, conv=ConvGeometry((3, 3), pads=(1, 1, 1, 1)))]
    for batch_size in (1, 5, 12):
        stats = collect_stats(conv, source, requests, batch_size=batch_size)["x"]
        assert np.allclose(stats.mean_abs, np.abs(x).mean(axis=(0, 2, 3)))
        assert np.allclose(stats.mean_sq, (x**2).mean(axis=(0, 2, 3)))
        assert np.allclose(stats.nonzero_fraction, (x != 0).mean(axis=(0, 2, 3)))
        cols = unfold_conv_input(x, ConvGeometry((3, 3), pads=(1, 1, 1, 1)))
        reference = cols.T.astype(np.float64) @ cols
        # chunks are multiplied in float32 (BLAS) and accumulated in float64
        assert np.allclose(stats.gram, reference, rtol=1e-5, atol=1e-6 * np.abs(reference).max())


def open_source_from(x: np.ndarray, model: object):  # noqa: ANN201
    from onnxprune.calibration import ArraySource

    return ArraySource({"x": x[:, None]}, input_specs(model), "test")


@pytest.mark.parametrize("stride,dilation,pads", [(1, 1, (1, 1, 1, 1)), (2, 1, (0, 1, 2, 0)), (1, 2, (2, 2, 2, 2))])
def test_unfold_matches_onnxruntime_conv(stride: int, dilation: int, pads: tuple) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from tests.conftest import ort_run

    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"], ["y"], strides=[stride] * 2, dilations=[dilation] * 2, pads=list(pads))
    graph = helper.make_graph(
        [node],
        "c",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    y = ort_run(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), {"x": x})["y"]
    cols = unfold_conv_input(x, ConvGeometry((3, 3), (stride, stride), pads, (dilation, dilation)))
    ours = (cols @ w.reshape(5, -1).T).reshape(2, y.shape[2], y.shape[3], 5).transpose(0, 3, 1, 2)
    assert np.allclose(ours, y, atol=1e-4)


def test_channel_stats_memory_does_not_grow_with_samples() -> None:
    stats = ChannelStats(axis=-1, channels=4)
    for _ in range(50):
        stats.update(np.ones((100, 4), np.float32))
    assert stats.sum_abs.shape == (4,) and stats.count == 5000
