"""Structured pruning on what the torch exporters really emit (issue 10, item 1): one regression test per crash.

The models are :mod:`tests.models.vision_zoo`'s torchvision-faithful ResNet-18 / MobileNetV2 /
EfficientNet-B0 (small size): ``dynamo`` + ``fresh`` weights gives bias-free Convs and a bias-free Gemm
(the crash of the issue: the refit wrote a bias into a Conv without a bias input), ``torchscript`` +
``fresh`` zero biases aliased through Identity nodes, ``torchscript-bn`` separate BatchNorm nodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.context import PassContext
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass
from tests.conftest import ort_run, to_ir
from tests.models.paddleocr import paddleocr_models
from tests.models.vision_zoo import VISION, vision_input, vision_onnx

pytest.importorskip("torch")

#: (exporter, weights): the three graph shapes of the issue
VARIANTS = [
    pytest.param("dynamo", "fresh", id="dynamo-nobias"),
    pytest.param("torchscript", "fresh", id="torchscript-identity"),
    pytest.param("torchscript-bn", "trained", id="torchscript-bn"),
]
#: MACs kept at 50% channels (both sides of most convs halve; the 7x7 stem, depthwise and SE convs keep half)
MAX_MACS = {"resnet18": 0.36, "mobilenetv2": 0.35, "efficientnet_b0": 0.35}


def _calib(model: ir.Model, samples: int = 8, seed: int = 0) -> ArraySource:
    """Real (not ``RandomSource``) calibration data, so that the refit runs."""
    specs = input_specs(model)
    rng = np.random.default_rng(seed)
    arrays = {s.name: rng.standard_normal((samples, *[d or 1 for d in s.shape[1:]])).astype(np.float32) for s in specs}
    return ArraySource(arrays, specs, "test arrays")


def _prune(model: ir.Model, calib: object = None, **config: object) -> dict:
    result = ChannelPrunePass(ChannelPruneConfig(**config), PassContext(calibration=calib))(model)  # type: ignore[arg-type]
    return result.report.summary


def _macs(model: ir.Model) -> int:
    return count_model(model, infer_shapes(model)).macs


def _bias_free(model: ir.Model, op: str) -> int:
    return sum(1 for n in model.graph if n.op_type == op and (len(n.inputs) < 3 or n.inputs[2] is None))


def test_dynamo_export_has_bias_free_convs_and_gemm() -> None:
    """What the crash needed: dynamo drops the all-zero folded biases of freshly initialized models."""
    model = to_ir(vision_onnx("mobilenetv2", exporter="dynamo", norms="fresh"))
    assert _bias_free(model, "Conv") == sum(1 for n in model.graph if n.op_type == "Conv")
    assert _bias_free(model, "Gemm") == 1
    assert not any(n.op_type == "BatchNormalization" for n in model.graph)
    separate = to_ir(vision_onnx("mobilenetv2", exporter="torchscript-bn", norms="fresh"))
    assert sum(n.op_type == "BatchNormalization" for n in separate.graph) == _bias_free(separate, "Conv") > 0


@pytest.mark.parametrize(("exporter", "norms"), VARIANTS)
@pytest.mark.parametrize("name", VISION)
def test_half_channels_with_refit_is_exact(name: str, exporter: str, norms: str) -> None:
    model = to_ir(vision_onnx(name, exporter=exporter, norms=norms))
    before, bias_free = _macs(model), _bias_free(model, "Conv") + _bias_free(model, "Gemm")
    summary = _prune(model, _calib(model), ratio=0.5, verify=True)
    assert summary["refitted"] > 0 and summary["refit_error_after"] < summary["refit_error_before"]
    assert summary["verify_max_rel_diff"] < 1e-5
    assert _macs(model) / before < MAX_MACS[name]
    if bias_free:  # refitted consumers got an intercept: a new bias input
        assert _bias_free(model, "Conv") + _bias_free(model, "Gemm") < bias_free
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    (out,) = ort_run(model, {"x": vision_input(name, batch=3).numpy()}).values()
    assert out.shape == (3, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("importance", ["wanda", "bn"])
def test_importances_and_flops_target_on_bias_free_export(importance: str) -> None:
    model = to_ir(vision_onnx("efficientnet_b0", exporter="dynamo", norms="fresh"))
    before = _macs(model)
    summary = _prune(model, _calib(model), target_flops=0.5, importance=importance, verify=True)
    assert summary["verify_max_rel_diff"] < 1e-5
    assert abs(_macs(model) / before - 0.5) <= 0.01


@pytest.mark.parametrize(("exporter", "norms"), VARIANTS)
def test_zero_ratio_changes_nothing(exporter: str, norms: str) -> None:
    proto = vision_onnx("resnet18", exporter=exporter, norms=norms)
    model = to_ir(proto)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.0, verify=True), PassContext(calibration=_calib(model)))(model)
    assert not result.modified and result.report.summary["channels_removed"] == 0
    x = vision_input("resnet18", batch=2).numpy()
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript-bn"])
def test_removing_zero_channels_changes_nothing(exporter: str) -> None:
    """Half the output channels of the first block conv are zero (fresh BN: no shift): removing them,
    refit on, leaves the outputs as they were, whether the Conv has no bias or a separate BN follows."""
    proto = vision_onnx("resnet18", exporter=exporter, norms="fresh")
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    target = convs[1]  # layer1.0.conv1: its output channels form their own group
    inits = {t.name: t for t in proto.graph.initializer}
    weight = onnx.numpy_helper.to_array(inits[target.input[1]]).copy()
    weight[::2] = 0
    inits[target.input[1]].CopyFrom(onnx.numpy_helper.from_array(weight, target.input[1]))
    others = tuple(n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and n.name != target.name)
    model = to_ir(proto)
    summary = _prune(model, _calib(model), ratio=0.5, importance="l1", exclude=others, verify=True)
    assert summary["pruned_groups"] == 1 and summary["channels_removed"] == weight.shape[0] // 2
    x = vision_input("resnet18", batch=2).numpy()
    np.testing.assert_allclose(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_cli_prunes_bias_free_export(tmp_path: Path) -> None:
    """The command of the issue: ``prune --channels 0.5 --calib ... --verify`` on a dynamo export exits 0."""
    from click.testing import CliRunner

    from onnxprune.cli import cli

    path, out, calib = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "calib.npz"
    onnx.save(vision_onnx("resnet18", exporter="dynamo", norms="fresh"), path)
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    result = CliRunner().invoke(cli, ["prune", str(path), "-o", str(out), "--channels", "0.5", "--calib", str(calib)])
    assert result.exit_code == 0, result.output
    assert "refitted" in result.output and out.exists()


def test_conv_transpose_consumer_is_left_unrefitted() -> None:
    """PP-OCRv4 det crashed: a ConvTranspose that loses input channels was refitted as if it were a MatMul."""
    import torch

    from tests.models.export import torch_export
    from tests.models.exported import seeded

    nn = torch.nn
    module = seeded(
        0,
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 4, 2, stride=2),
            nn.ReLU(),
            nn.Conv2d(4, 2, 1),
        ),
    )
    model = to_ir(torch_export(module, (torch.randn(2, 3, 8, 8),), dynamo=False))
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, verify=True), PassContext(calibration=_calib(model)))(model)
    assert result.report.summary["pruned_groups"] == 2 and result.report.summary["refitted"] == 1  # the last Conv
    assert any("ConvTranspose consumers are not refitted" in s["reason"] for s in result.report.skipped)
    assert result.report.summary["verify_max_rel_diff"] < 1e-5


def test_flops_target_is_met_at_the_data_size_for_dynamic_spatial_dims() -> None:
    """PP-OCR rec: with dynamic H/W the MACs were counted at 1x1 inputs, so ``target_flops`` missed the data's."""
    proto = vision_onnx("resnet18", exporter="torchscript", norms="trained")
    for d, name in zip(proto.graph.input[0].type.tensor_type.shape.dim[2:], ("H", "W"), strict=True):
        d.dim_param = name
    del proto.graph.value_info[:]
    model = to_ir(proto)
    shapes = {"x": (1, 3, 32, 32)}
    before = count_model(model, infer_shapes(model, shapes)).macs
    summary = _prune(
        model, _calib(ir.serde.deserialize_model(vision_onnx("resnet18", exporter="torchscript"))), target_flops=0.5
    )
    assert abs(count_model(model, infer_shapes(model, shapes)).macs / before - 0.5) <= 0.01
    assert abs(summary["macs_kept"] - 0.5) <= 0.01


def _paddle_style_model() -> onnx.ModelProto:
    """Conv(no bias) -> Add(Reshape(bias, [1, C, 1, 1])) -> Relu -> Conv: how Paddle2ONNX writes conv biases."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
        numpy_helper.from_array(np.array([1, 8, 1, 1], np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["b1", "shape"], ["b1r"], name="bias_reshape"),
        helper.make_node("Add", ["c1", "b1r"], ["a1"], name="add_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle_style",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


def test_unfolded_reshape_of_a_bias_follows_the_channels() -> None:
    """PP-OCR cls: 29 of 36 groups were blocked by ``Add(Conv, Reshape(bias))``; the Reshape is read as a constant."""
    proto = _paddle_style_model()
    model = to_ir(proto)
    summary = _prune(model, _calib(model), ratio=0.5, verify=True)
    assert summary["pruned_groups"] == 1 and summary["verify_max_rel_diff"] < 1e-5
    assert not any(n.op_type == "Reshape" for n in model.graph)  # the bias became a sliced initializer
    add = next(n for n in model.graph if n.op_type == "Add")
    assert add.inputs[1].const_value.shape == (1, 4, 1, 1)  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize(
    "short",
    [
        "ocr_cls",
        "ocr_det",
        "ocr_rec",
    ],
)
def test_paddleocr_models_prune_exactly(short: str) -> None:
    """Real Paddle2ONNX exports (bias-free Conv + separate BatchNorm, HardSigmoid SE, dynamic H/W)."""
    found = paddleocr_models()
    if short not in found:
        pytest.skip("rapidocr_onnxruntime==1.4.4 is not installed (pip install -e .[dev])")
    path, shape = found[short]
    model = ir.load(path)
    arrays = {"x": np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)}
    summary = _prune(model, ArraySource(arrays, input_specs(model), "random images"), ratio=0.5, verify=True)
    assert summary["pruned_groups"] > 0 and summary["refitted"] > 0
    assert summary["verify_max_rel_diff"] < 1e-4
