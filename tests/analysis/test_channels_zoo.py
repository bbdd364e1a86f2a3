"""Structured pruning on every test architecture, exported by both torch exporters.

For each: prune 50% of every prunable group, run the result in onnxruntime, check that the shrunk
model equals the masked model (``verify``) and that the MACs fell as planned.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune.analysis.channels import analyze_channels
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import infer_shapes
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass
from tests.conftest import ort_run, to_ir
from tests.models import example_input, zoo_onnx
from tests.models.export import torch_export
from tests.models.tied import tied_zero_bias_module

pytest.importorskip("torch")

#: MACs kept at 50% channels: about a quarter where both sides of most convs shrink
MAX_MACS = {
    "resnet_basic": 0.30,
    "resnet_bottleneck": 0.30,
    "mobilenetv2_ir": 0.35,
    "efficientnet_se": 0.35,
    "vgg": 0.30,
    "densenet": 0.30,
    "inception": 0.30,
    "unet": 0.30,
    "transformer_mlp": 0.55,  # only the MLP neurons: the residual stream reaches the input
}
EXPORTS = [pytest.param(False, 13, id="torchscript-13"), pytest.param(True, None, id="dynamo-default")]


def _macs(model: object) -> int:
    return count_model(model, infer_shapes(model)).macs  # type: ignore[arg-type]


@pytest.mark.parametrize(("dynamo", "opset"), EXPORTS)
@pytest.mark.parametrize("arch", sorted(MAX_MACS))
def test_half_channels_shrunk_equals_masked(arch: str, dynamo: bool, opset: int | None) -> None:
    proto = zoo_onnx(arch, dynamo=dynamo, opset=opset)
    model = to_ir(proto)
    before = _macs(model)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, verify=True))(model)
    assert result.modified
    assert result.report.summary["verify_max_rel_diff"] < 1e-5
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    ratio = _macs(model) / before
    assert ratio < MAX_MACS[arch], f"{arch}: MACs kept {ratio:.3f}"
    x = example_input(arch, batch=3).numpy()
    (out,) = ort_run(model, {"x": x}).values()
    assert out.shape[0] == 3 and np.isfinite(out).all()


@pytest.mark.parametrize(("dynamo", "opset"), EXPORTS)
def test_channel_shuffle_is_refused_with_a_reason(dynamo: bool, opset: int | None) -> None:
    analysis = analyze_channels(to_ir(zoo_onnx("shufflenet", dynamo=dynamo, opset=opset)))
    blocked = [str(b) for g in analysis.unprunable() for b in g.blockers]
    assert any("channel shuffle" in b or "grouped Conv" in b for b in blocked), blocked
    model = to_ir(zoo_onnx("shufflenet", dynamo=dynamo, opset=opset))
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, verify=True))(model)
    assert result.report.skipped  # every group left alone says why
    assert all(s["reason"] for s in result.report.skipped)


@pytest.mark.parametrize(("dynamo", "opset"), EXPORTS)
def test_efficientnet_b0_like_thin(dynamo: bool, opset: int | None) -> None:
    model = to_ir(zoo_onnx("efficientnet_b0_like", dynamo=dynamo, opset=opset, image=32, width=0.25))
    before = _macs(model)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, verify=True))(model)
    assert result.report.summary["verify_max_rel_diff"] < 1e-5
    assert _macs(model) / before < 0.45


@pytest.mark.parametrize(("dynamo", "bias"), [(False, 0.0), (True, 0.1)], ids=["torchscript-identity", "dynamo-shared"])
def test_tied_tensors_get_their_own_copy(dynamo: bool, bias: float) -> None:
    """Exporters tie equal biases across unrelated convs; slicing one must not touch the others."""
    import torch

    module = tied_zero_bias_module(bias=bias)
    x = torch.randn(2, 3, 16, 16)
    proto = torch_export(module, (x,), dynamo=dynamo, opset=None if dynamo else 13)
    if dynamo:
        biases = [n.input[2] for n in proto.graph.node if n.op_type == "Conv"]
        assert len(biases) == 4 and len(set(biases)) == 1  # one initializer read by four convs
    else:
        assert sum(n.op_type == "Identity" for n in proto.graph.node) == 3  # three aliases of one bias
    model = to_ir(proto)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, verify=True))(model)
    assert result.report.summary["verify_max_rel_diff"] < 1e-5
    (out,) = ort_run(model, {"x": x.numpy()}).values()
    assert np.isfinite(out).all()
