"""Mask similarity / induced structure (M5), ShrinkBench counts (M35), ReLU activity (M7/M19): hand-computed."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest

from onnxprune.analysis.activity import measure_activity, relu_outputs
from onnxprune.analysis.masks import group_zero_fraction, induced_structure, mask_similarity, random_iou
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.shrinkbench import ratio, shrinkbench_counts
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.inspect import inspect_model
from tests.conftest import to_ir
from tests.models.handbuilt import conv_model, mlp_model


def _set(model: ir.Model, name: str, values: np.ndarray) -> None:
    model.graph.initializers[name].const_value = ir.tensor(values.astype(np.float32), name=name)


def _keep_only(model: ir.Model, name: str, flat: list[int]) -> None:
    values = model.graph.initializers[name].const_value.numpy().copy()
    keep = np.zeros(values.size, dtype=bool)
    keep[flat] = True
    values.reshape(-1)[~keep] = 0
    values.reshape(-1)[keep] = 1.0  # nonzero for sure
    _set(model, name, values)


def test_mask_similarity_per_layer_and_global() -> None:
    a, b = to_ir(mlp_model()), to_ir(mlp_model())
    _keep_only(a, "W1", [0, 1, 2, 3])
    _keep_only(b, "W1", [2, 3, 4, 5])
    result = mask_similarity(a, b)
    layers = {layer.tensor: layer for layer in result.layers}
    w1 = layers["W1"]
    assert (w1.size, w1.kept_a, w1.kept_b, w1.both, w1.either) == (512, 4, 4, 2, 6)
    assert w1.jaccard == pytest.approx(1 / 3)
    assert w1.hamming == pytest.approx(4 / 512)
    assert w1.random_jaccard == pytest.approx(random_iou(4 / 512, 4 / 512))
    assert layers["W2"].jaccard == 1.0 and layers["W2"].hamming == 0.0
    total = result.total
    assert (total.size, total.both, total.either) == (832, 322, 326)
    assert total.jaccard == pytest.approx(322 / 326)
    assert result.unmatched == ()


def test_random_iou_and_unmatched_weights() -> None:
    assert random_iou(0.5, 0.5) == pytest.approx(1 / 3)
    assert random_iou(1.0, 1.0) == 1.0
    a, b = to_ir(mlp_model()), to_ir(mlp_model())
    b.graph.initializers["W2"].name = "W2_renamed"
    result = mask_similarity(a, b)
    assert [layer.tensor for layer in result.layers] == ["W1"]
    assert set(result.unmatched) == {"W2", "W2_renamed"}


def test_induced_structure_counts_whole_zero_groups() -> None:
    model = to_ir(conv_model())
    weights = model.graph.initializers["conv2_w"].const_value.numpy().copy()  # [16, 8, 3, 3]
    weights[1] = 0  # a whole filter: its 8 kernels
    _set(model, "conv2_w", weights)
    rows = {(r.tensor, r.grouping): r for r in induced_structure(model)}
    kernel, filt, inp = rows["conv2_w", "kernel"], rows["conv2_w", "filter"], rows["conv2_w", "input"]
    assert (kernel.groups, kernel.group_size, kernel.zero_fraction) == (128, 9, 8 / 128)
    assert kernel.density == pytest.approx(15 / 16)
    assert kernel.random_fraction == pytest.approx((1 / 16) ** 9)
    assert (filt.groups, filt.group_size, filt.zero_fraction) == (16, 72, 1 / 16)
    assert (inp.groups, inp.group_size, inp.zero_fraction) == (8, 144, 0.0)


def test_induced_structure_of_matmul_uses_the_output_axis() -> None:
    model = to_ir(mlp_model())
    weights = model.graph.initializers["W1"].const_value.numpy().copy()  # MatMul [in 16, out 32]
    weights[:, 5] = 0  # output neuron 5
    weights[3, :] = 0  # input feature 3
    _set(model, "W1", weights)
    rows = {(r.tensor, r.grouping): r for r in induced_structure(model)}
    assert ("W1", "kernel") not in rows
    assert rows["W1", "filter"].groups == 32 and rows["W1", "filter"].zero_fraction == 1 / 32
    assert rows["W1", "input"].groups == 16 and rows["W1", "input"].zero_fraction == 1 / 16


def test_group_zero_fraction_random_expectation() -> None:
    kept = np.array([[True, False], [False, False]])
    measured, expected = group_zero_fraction(kept)
    assert measured == 0.5 and expected == pytest.approx(0.75**2)


def test_shrinkbench_counts_by_hand() -> None:
    model = to_ir(mlp_model())
    weights = model.graph.initializers["W1"].const_value.numpy().copy()
    weights[:8] = 0  # 8 of 16 input rows: 256 of 512 weights
    _set(model, "W1", weights)
    counts = shrinkbench_counts(model, {"x": (1, 16)})
    assert (counts.macs, counts.sparse_macs) == (16 * 32 + 32 * 10, 256 + 320)
    assert (counts.params, counts.nonzero_params) == (874, 874 - 256)
    assert (counts.prunable, counts.prunable_nonzero) == (832, 576)
    assert counts.speedup == pytest.approx(832 / 576)
    assert counts.compression == pytest.approx(874 / 618)
    assert counts.prunable_compression == pytest.approx(832 / 576)
    assert inspect_model(model, {"x": (1, 16)})["shrinkbench"] == counts.as_dict()
    assert counts.as_dict()["theoretical_speedup"] == counts.speedup


def test_shrinkbench_counts_at_the_real_batch() -> None:
    model = to_ir(mlp_model())
    assert shrinkbench_counts(model, {"x": (4, 16)}).macs == 4 * 832


def test_ratio_edges() -> None:
    assert ratio(0, 0) == 1.0 and math.isinf(ratio(5, 0)) and ratio(6, 3) == 2.0


def _source(model: ir.Model, array: np.ndarray) -> ArraySource:
    return ArraySource({model.graph.inputs[0].name: array}, input_specs(model), "test data")


def test_activity_of_an_mlp_by_hand() -> None:
    model = to_ir(mlp_model())
    _set(model, "W1", np.zeros((16, 32)))
    _set(model, "b1", np.where(np.arange(32) < 8, 1.0, -1.0))  # 8 units always on, 24 always off
    assert relu_outputs(model, complete_shapes(model)) == {"h_relu": -1}
    x = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)
    activity = measure_activity(model, _source(model, x), batch_size=4)
    (layer,) = activity.layers
    assert (layer.units, layer.per_unit, layer.nonzero, layer.dead_units) == (32, 10, 80, 24)
    assert activity.density == pytest.approx(0.25) and activity.dead_rate == pytest.approx(0.75)
    assert activity.samples == 10 and activity.as_dict()["layers"][0]["dead_unit_fraction"] == 0.75


def test_activity_of_a_conv_map_is_per_channel() -> None:
    model = to_ir(conv_model())
    _set(model, "conv1_w", np.zeros((8, 3, 3, 3)))
    _set(model, "conv1_b", np.where(np.arange(8) == 0, 1.0, -1.0))
    assert relu_outputs(model, complete_shapes(model)) == {"r1": 1}
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    activity = measure_activity(model, _source(model, x))
    (layer,) = activity.layers
    assert (layer.units, layer.per_unit, layer.dead_units) == (8, 6 * 8 * 8, 7)
    assert layer.density == pytest.approx(1 / 8)


def test_activity_without_relu_is_empty() -> None:
    model = to_ir(mlp_model())
    node = next(n for n in model.graph if n.op_type == "Relu")
    node.op_type = "Sigmoid"
    activity = measure_activity(model, _source(model, np.zeros((2, 16), np.float32)))
    assert activity.layers == () and math.isnan(activity.density)
