"""INT8 quantization (QDQ, onnxruntime): numerics, exact zeros, 2:4 in the INT8 weights, QDQ inputs refused."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune.analysis.flops import count_params
from onnxprune.analysis.weights import find_weights, read_weight, write_weight
from onnxprune.calibration.sources import ArraySource, RandomSource, input_specs
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError, UnsupportedModelError
from onnxprune.passes import (
    NMPruneConfig,
    NMPrunePass,
    QuantizeConfig,
    QuantizePass,
    UnstructuredPruneConfig,
    UnstructuredPrunePass,
)
from onnxprune.passes._qdq import quantized_nodes, quantized_weights
from onnxprune.passes._quant_data import SourceReader
from onnxprune.recipe import CalibrationSpec, PassSpec, Recipe, run_recipe
from tests import models
from tests.conftest import ort_run, to_ir


def _context(model: ir.Model, n: int = 64, seed: int = 0) -> PassContext:
    proto = ir.to_proto(model)
    batches = [models.random_inputs(proto, batch=1, seed=seed + i) for i in range(n)]
    arrays = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return PassContext(calibration=ArraySource(arrays, input_specs(model), "test data"))


def _feeds(model: ir.Model, seed: int = 1000) -> dict[str, np.ndarray]:
    return models.random_inputs(ir.to_proto(model), batch=16, seed=seed)


def _rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _quantize(model: ir.Model, context: PassContext, **config: object) -> dict:
    return QuantizePass(QuantizeConfig(**config), context)(model).report.as_dict()


@pytest.mark.parametrize("build", [models.conv_model, models.mlp_model])
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_outputs_close_to_float(build: object, per_channel: bool) -> None:
    model = to_ir(build())
    float_model = model.clone()
    context = _context(model)
    report = _quantize(model, context, per_channel=per_channel)
    feeds = _feeds(model)
    expected, got = ort_run(float_model, feeds), ort_run(model, feeds)
    for name in expected:
        assert _rel_error(expected[name], got[name]) < 0.05, name
    quantized = quantized_weights(model)
    layouts = {w.name: w for w in find_weights(float_model)}
    assert len(quantized) == len(layouts) == report["summary"]["quantized_weights"]
    for weight in quantized:
        assert weight.values.dtype == np.int8
        assert np.all(weight.zero_point == 0)  # symmetric
        out_channels = weight.values.shape[layouts[weight.float_name].out_axis]
        assert weight.zero_point.size == (out_channels if per_channel else 1)
    assert {n.op_type for n in quantized_nodes(model)} == {"QuantizeLinear", "DequantizeLinear"}
    assert report["summary"]["preprocess"] == "ok"
    assert context.float_model is not None and not quantized_nodes(context.float_model)


def test_pruned_zeros_stay_exact_zeros_also_a_whole_channel() -> None:
    model = to_ir(models.conv_model())
    context = _context(model)
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.7), context)(model)
    conv2 = next(w for w in find_weights(model) if w.name == "conv2_w")
    values = read_weight(conv2).copy()
    values[3] = 0  # one output channel pruned whole: its scale must not turn zeros into anything else
    write_weight(conv2, values)
    zeros = {w.name: read_weight(w) == 0 for w in find_weights(model)}
    pruned = model.clone()
    report = _quantize(model, context)
    assert report["summary"]["zeros_kept"] == sum(int(m.sum()) for m in zeros.values())
    for weight in quantized_weights(model):
        assert np.all(weight.values[zeros[weight.float_name]] == 0), weight.name
    feeds = _feeds(model)
    expected, got = ort_run(pruned, feeds)["y"], ort_run(model, feeds)["y"]
    assert _rel_error(expected, got) < 0.05
    # dequantized weights are exactly 0 where the float ones were: read them through a session output
    dq = next(n for n in model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].name == "conv2_w_quantized")
    model.graph.outputs.append(dq.outputs[0])
    dequantized = ort_run(model, feeds)[dq.outputs[0].name]
    assert np.all(dequantized[zeros["conv2_w"]] == 0.0)
    assert np.all(dequantized[3] == 0.0)


@pytest.mark.parametrize("build", [models.conv_model, models.mlp_model])
def test_two_four_pattern_holds_in_the_int8_weights(build: object) -> None:
    model = to_ir(build())
    context = _context(model)
    NMPrunePass(NMPruneConfig(n=2, m=4), context)(model)
    layouts = {w.name: w for w in find_weights(model) if w.shape[w.in_axis] % 4 == 0}
    assert layouts
    _quantize(model, context)
    checked = 0
    for weight in quantized_weights(model):
        float_weight = layouts.get(weight.float_name)
        if float_weight is None:
            continue
        along_input = np.moveaxis(weight.values, float_weight.in_axis, -1)
        groups = along_input.reshape(*along_input.shape[:-1], -1, 4)
        assert np.all((groups == 0).sum(axis=-1) >= 2), weight.name
        checked += 1
    assert checked == len(layouts)


def test_params_of_the_int8_model_count_its_integer_weights() -> None:
    model = to_ir(models.conv_model())
    context = _context(model)
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5), context)(model)
    params, nonzero = count_params(model)
    _quantize(model, context)
    int8_params, int8_nonzero = count_params(model)
    assert int8_params == params  # int8 weights and int32 biases counted, scales and zero points not
    assert nonzero - 5 <= int8_nonzero <= nonzero  # a few tiny weights may round to 0


def test_already_quantized_model_is_refused() -> None:
    model = to_ir(models.qdq_model())
    with pytest.raises(UnsupportedModelError, match=r"already quantized .*DequantizeLinear|already quantized"):
        _quantize(model, _context(model))


def test_random_or_missing_calibration_is_refused() -> None:
    model = to_ir(models.mlp_model())
    with pytest.raises(CalibrationError, match="real calibration data"):
        QuantizePass(QuantizeConfig(), PassContext())(model)
    random = RandomSource(input_specs(model), 4, {})
    with pytest.raises(CalibrationError, match="real calibration data"):
        QuantizePass(QuantizeConfig(), PassContext(calibration=random))(model)


def test_bad_config_is_refused() -> None:
    with pytest.raises(RecipeError, match="activation_type"):
        QuantizeConfig(activation_type="int4")
    with pytest.raises(RecipeError, match="calibrate_method"):
        QuantizeConfig(calibrate_method="mse")
    with pytest.raises(RecipeError):
        QuantizeConfig(per_channel="yes")  # type: ignore[arg-type]


def test_failed_preprocessing_falls_back_with_the_reason(monkeypatch: pytest.MonkeyPatch, caplog: object) -> None:
    import onnxruntime.quantization.shape_inference as shape_inference

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("symbolic shape inference failed on node X\nmore")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    model = to_ir(models.mlp_model())
    float_model = model.clone()
    with caplog.at_level(logging.WARNING):  # type: ignore[attr-defined]
        report = _quantize(model, _context(model))
    assert report["summary"]["preprocess"] == "RuntimeError: symbolic shape inference failed on node X"
    assert "pre-processing failed" in caplog.text  # type: ignore[attr-defined]
    feeds = _feeds(model)
    assert _rel_error(ort_run(float_model, feeds)["y"], ort_run(model, feeds)["y"]) < 0.05


def test_failed_preprocessing_leaves_nothing_in_the_working_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """onnxruntime's symbolic shape inference saves its partial model into the working folder when it fails."""
    import onnxruntime.quantization.shape_inference as shape_inference

    def fails_like_ort(*_args: object, **_kwargs: object) -> None:
        Path("sym_shape_infer_temp.onnx").write_bytes(b"partial")
        Path("0a1b-2c3d.data").write_bytes(b"weights")
        raise RuntimeError("Incomplete symbolic shape inference")

    monkeypatch.setattr(shape_inference, "quant_pre_process", fails_like_ort)
    monkeypatch.chdir(tmp_path)
    model = to_ir(models.mlp_model())
    report = _quantize(model, _context(model))
    assert report["summary"]["preprocess"] == "RuntimeError: Incomplete symbolic shape inference"
    assert list(tmp_path.iterdir()) == []


def test_excluded_nodes_stay_float() -> None:
    model = to_ir(models.conv_model())
    report = _quantize(model, _context(model), exclude=("fc",))
    assert {w.float_name for w in quantized_weights(model)} == {"conv1_w", "conv2_w"}
    assert [s["tensor"] for s in report["skipped"]] == ["fc_w"]
    assert model.graph.initializers["fc_w"].const_value.dtype == ir.DataType.FLOAT


def test_source_reader_gives_every_sample_and_rewinds() -> None:
    model = to_ir(models.mlp_model())
    source = _context(model, n=10).calibration
    seen: list[tuple[int, int]] = []
    reader = SourceReader(source, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    sizes = [batch["x"].shape[0] for batch in iter(reader.get_next, None)]
    assert sizes == [4, 4, 2] and seen[-1] == (10, 10) and len(reader) == 10
    reader.rewind()
    assert reader.get_next()["x"].shape[0] == 4


def test_recipe_prune_then_quantize_compares_with_original_and_pruned(tmp_path: Path) -> None:
    source, calib, out = tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "int8.onnx"
    onnx.save(models.conv_model(), source)
    rng = np.random.default_rng(0)
    np.savez(calib, x=rng.standard_normal((64, 3, 8, 8)).astype(np.float32))
    before = source.read_bytes()
    recipe = Recipe(
        model=str(source),
        output=str(out),
        passes=(PassSpec("nm", {"n": 2, "m": 4}), PassSpec("quantize"), PassSpec("cleanup")),
        calibration=CalibrationSpec(str(calib)),
        latency_runs=3,
    )
    result = run_recipe(recipe)
    assert source.read_bytes() == before
    assert [r["what"] for r in result.report["references"]] == ["pruned float model"]
    pruned = result.report["references"][0]
    assert pruned["stats"]["nonzero_params"] < result.before.nonzero_params
    for validation in (result.report["validation"], pruned["validation"]):
        assert validation["latency_ref_ms"] > 0 and validation["latency_cand_ms"] > 0
    assert pruned["validation"]["outputs"][0]["mean_cosine"] > 0.999  # INT8 vs its float self: rounding only
    assert pruned["validation"]["outputs"][0]["mean_cosine"] >= result.report["validation"]["outputs"][0]["mean_cosine"]
    written = to_ir(onnx.load(out))
    assert quantized_weights(written) and result.after.params == result.before.params


def _as_opset12_with_constant_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` as older exporters (PaddlePaddle's PP-OCR) write it: opset 12, weights in Constant nodes."""
    constants = [
        onnx.helper.make_node("Constant", [], [init.name], name=f"const_{init.name}", value=init)
        for init in proto.graph.initializer
    ]
    nodes = [*constants, *proto.graph.node]
    del proto.graph.initializer[:]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.opset_import[0].version = 12
    return proto


def test_opset12_model_with_constant_weights_is_quantized_per_channel() -> None:
    """Constant-node weights are lifted (so they are quantized) and opset 12 goes to 13 (per-channel axis)."""
    model = to_ir(_as_opset12_with_constant_weights(models.conv_model()))
    float_model = model.clone()
    report = _quantize(model, _context(model), per_channel=True)
    assert model.opset_imports[""] == 13
    assert "lifted" in report["summary"]["prepared"] and "opset 12 converted to 13" in report["summary"]["prepared"]
    assert len(quantized_weights(model)) == report["summary"]["quantized_weights"] >= 2
    onnx.checker.check_model(ir.to_proto(model))
    feeds = _feeds(model)
    expected, got = ort_run(float_model, feeds), ort_run(model, feeds)
    for name in expected:
        assert _rel_error(expected[name], got[name]) < 0.05, name
