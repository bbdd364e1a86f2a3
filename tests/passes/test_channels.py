"""The ``channels`` pass: importance, allocation, targets, reconstruction, exactness."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.calibration.sources import open_source
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass
from onnxprune.verify import validate
from tests.conftest import DIGITS, ort_run, to_ir
from tests.models import zoo_onnx

pytest.importorskip("torch")


def _digits() -> tuple[onnx.ModelProto, object, object]:
    proto = onnx.load(DIGITS / "digits_cnn.onnx")
    model = to_ir(proto)
    return proto, open_source(DIGITS / "digits_calib.npz", model), open_source(DIGITS / "digits_test.npz", model)


def _prune(proto: onnx.ModelProto, calib: object = None, **config: object) -> tuple[object, dict]:
    model = to_ir(proto)
    result = ChannelPrunePass(ChannelPruneConfig(**config), PassContext(calibration=calib))(model)  # type: ignore[arg-type]
    return model, result.report.summary


def _accuracy(proto: onnx.ModelProto, model: object, test: object) -> float:
    v = validate(to_ir(proto), model, test, latency_runs=1)  # type: ignore[arg-type]
    return float(v.outputs[0].accuracy_cand)  # type: ignore[arg-type]


def _kept_widths(model: object) -> list[int]:
    return [int(n.inputs[1].const_value.shape[0]) for n in model.graph if n.op_type == "Conv"]  # type: ignore[attr-defined]


def test_reconstruction_recovers_accuracy_on_digits() -> None:
    proto, calib, test = _digits()
    plain, _ = _prune(proto, calib, ratio=0.5, reconstruct=False)
    fitted, summary = _prune(proto, calib, ratio=0.5, reconstruct=True, verify=True)
    assert summary["refitted"] > 0 and summary["refit_error_after"] < summary["refit_error_before"]
    assert summary["verify_max_rel_diff"] < 1e-5
    assert _accuracy(proto, fitted, test) >= 0.95  # dense 0.986; measured 0.978
    assert _accuracy(proto, fitted, test) > _accuracy(proto, plain, test)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "act_mean", "apoz", "density", "wanda"])
def test_every_importance_runs_and_stays_exact(importance: str) -> None:
    proto = zoo_onnx("densenet", dynamo=False, opset=13)  # keeps BatchNormalization nodes
    calib = open_source(None, to_ir(proto), samples=4)
    model, summary = _prune(proto, calib, ratio=0.5, importance=importance, verify=True)
    assert summary["pruned_groups"] > 0 and summary["verify_max_rel_diff"] < 1e-5


def test_zero_weight_channels_are_removed_without_change() -> None:
    """Channels whose producer weights and bias are zero carry nothing: removing them changes nothing."""
    proto = zoo_onnx("vgg", dynamo=False, opset=13)
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    inits = {t.name: t for t in proto.graph.initializer}
    for name in conv.input[1:]:
        array = onnx.numpy_helper.to_array(inits[name]).copy()
        array[::2] = 0  # half the output channels of the first conv
        inits[name].CopyFrom(onnx.numpy_helper.from_array(array, name))
    others = tuple(n.name for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and n.name != conv.name)
    model, summary = _prune(proto, ratio=0.5, importance="l1", reconstruct=False, exclude=others)
    assert summary["pruned_groups"] == 1 and summary["channels_removed"] > 0
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_target_flops_is_met_within_one_percent() -> None:
    proto = zoo_onnx("resnet_bottleneck", dynamo=False, opset=13)
    before = count_model(to_ir(proto), infer_shapes(to_ir(proto))).macs
    model, summary = _prune(proto, target_flops=0.5)
    after = count_model(model, infer_shapes(model)).macs  # type: ignore[arg-type]
    assert abs(after / before - 0.5) <= 0.01
    assert abs(summary["macs_kept"] - after / before) < 1e-9


def test_target_params_global_scope() -> None:
    proto = zoo_onnx("inception", dynamo=False, opset=13)
    before = count_model(to_ir(proto), {}).params
    model, _ = _prune(proto, target_params=0.6, scope="global")
    assert abs(count_model(model, {}).params / before - 0.6) <= 0.01  # type: ignore[arg-type]


def test_round_to_and_min_channels() -> None:
    proto = zoo_onnx("resnet_basic", dynamo=False, opset=13)
    model, _ = _prune(proto, ratio=0.7, round_to=8)
    assert all(w % 8 == 0 for w in _kept_widths(model))
    model, _ = _prune(proto, ratio=0.95, min_channels=4)
    assert min(_kept_widths(model)) >= 4


def test_global_scope_removes_the_ratio_overall() -> None:
    proto = zoo_onnx("resnet_bottleneck", dynamo=False, opset=13)
    _, summary = _prune(proto, ratio=0.4, scope="global")
    assert abs(summary["channels_removed"] / summary["channels_in_prunable_groups"] - 0.4) < 0.05


def test_exclude_keeps_a_group_whole() -> None:
    proto = zoo_onnx("vgg", dynamo=False, opset=13)
    first = next(n.name for n in proto.graph.node if n.op_type == "Conv")
    model, summary = _prune(proto, ratio=0.5, exclude=(first,))
    widths = _kept_widths(model)
    original = [
        onnx.numpy_helper.to_array(t).shape[0]
        for n in proto.graph.node
        if n.op_type == "Conv"
        for t in proto.graph.initializer
        if t.name == n.input[1]
    ]
    assert widths[0] == original[0] and widths[1] < original[1]


def test_reconstruction_skips_random_data() -> None:
    proto = zoo_onnx("vgg", dynamo=False, opset=13)
    _, summary = _prune(proto, open_source(None, to_ir(proto), samples=2), ratio=0.5)
    assert summary["refitted"] == 0 and "needs real calibration data" in summary["reconstruction"]


@pytest.mark.parametrize(
    "bad",
    [
        {"ratio": 1.0},
        {"importance": "taylor"},
        {"scope": "row"},
        {"target_flops": 0.0},
        {"target_flops": 0.5, "target_params": 0.5},
    ],
)
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(RecipeError):
        ChannelPruneConfig(**bad)
