"""The torch view equals onnxruntime on every test architecture, at opset 13 and at the dynamo default (20)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.torchview import TorchView, UnsupportedGraph, unsupported_nodes
from onnxprune.torchview._registry import lookup
from tests.conftest import ort_run, to_ir
from tests.models import handbuilt
from tests.models.lowrank_models import LAYERS

torch = pytest.importorskip("torch")

TOLERANCE = 1e-5


def _max_diff(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    view = TorchView(to_ir(proto))
    got = view.run_numpy(feeds)
    want = ort_run(proto, feeds)
    diffs = [float(np.max(np.abs(got[k] - want[k]))) / max(1.0, float(np.max(np.abs(want[k])))) for k in want]
    return max(diffs)


@pytest.mark.parametrize("dynamo", [False, True], ids=["opset13", "dynamo20"])
@pytest.mark.parametrize(
    "arch",
    [
        "resnet_basic",
        "resnet_bottleneck",
        "mobilenetv2_ir",
        "efficientnet_se",
        "vgg",
        "densenet",
        "inception",
        "unet",
        "shufflenet",
        "transformer_mlp",
        "efficientnet_b0_like",
    ],
)
def test_view_equals_onnxruntime_on_the_zoo(arch: str, dynamo: bool) -> None:
    from tests.models.structured_zoo import example_input, zoo_onnx

    proto = zoo_onnx(arch, dynamo=dynamo)
    diff = _max_diff(proto, {"x": example_input(arch, batch=2, seed=5).numpy()})
    assert diff <= TOLERANCE, f"{arch}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("dynamo", [False, True], ids=["opset13", "dynamo20"])
def test_view_equals_onnxruntime_on_a_bert_like_encoder(dynamo: bool) -> None:
    from tests.models.exported import bert_like_onnx

    proto = bert_like_onnx(dynamo=dynamo, hidden=64, layers=2, heads=4, intermediate=128, seq=16)
    ids = np.random.default_rng(0).integers(0, 1000, (2, 16)).astype(np.int64)
    assert _max_diff(proto, {"input_ids": ids}) <= TOLERANCE


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_view_equals_onnxruntime_on_layer_variants(case: str) -> None:
    proto = LAYERS[case]()
    dims = [d.dim_value or 3 for d in proto.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    assert _max_diff(proto, {"x": x}) <= TOLERANCE


def test_view_equals_onnxruntime_on_opset18_ops() -> None:
    proto = handbuilt.opset18_model()
    feeds = handbuilt_inputs(proto)
    assert _max_diff(proto, feeds) <= TOLERANCE


@pytest.mark.parametrize(
    ("batch_dims", "indices", "out_shape"),
    [
        (0, [[[0, -1], [1, 2]], [[1, 0], [-2, 2]]], [2, 2, 4]),  # k = 2 over x's [2, 3]
        (1, [[[0, -1], [2, 3]], [[1, 0], [-3, 2]]], [2, 2]),  # per batch row, k = 2 over x's [3, 4]
    ],
)
def test_view_equals_onnxruntime_on_gather_nd(batch_dims: int, indices: list, out_shape: list[int]) -> None:
    """GatherND (the dynamo export of a BERT encoder has one), negative indices and ``batch_dims`` included."""
    node = helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=batch_dims)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [onnx.numpy_helper.from_array(np.array(indices, dtype=np.int64), "i")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    assert _max_diff(proto, {"x": x}) == 0.0


def handbuilt_inputs(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    from tests.models.inputs import random_inputs

    return random_inputs(proto)


def test_op_table_is_versioned() -> None:
    assert lookup("Split", 11) is not lookup("Split", 13)
    assert lookup("ReduceMean", 17) is not lookup("ReduceMean", 18)
    assert lookup("Squeeze", 12) is not lookup("Squeeze", 13)
    assert lookup("LayerNormalization", 16) is None and lookup("LayerNormalization", 17) is not None
    for op in ("Conv", "Gemm", "MatMul", "Add", "Relu", "Reshape", "Concat", "Softmax", "Erf", "Gather", "Shape"):
        for opset in (7, 13, 17, 18, 20, 22):
            assert lookup(op, opset) is not None, (op, opset)


def test_unsupported_graphs_are_refused_with_the_node() -> None:
    node = helper.make_node("MyOp", ["x"], ["y"], name="custom_node", domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)], ir_version=8
    )
    assert unsupported_nodes(to_ir(proto)) == [("custom_node", "com.example::MyOp", "custom domain")]
    with pytest.raises(UnsupportedGraph, match="custom_node"):
        TorchView(to_ir(proto))
    with pytest.raises(UnsupportedGraph, match="subgraphs"):
        TorchView(to_ir(handbuilt.if_loop_model()))


def test_parameters_are_the_float_weights_and_bn_statistics_stay_frozen() -> None:
    from tests.models.lowrank_models import conv_layer

    view = TorchView(to_ir(conv_layer(batchnorm=True, pads=[1, 1, 1, 1])))
    assert sorted(view.named_tensors()) == ["W", "beta", "bias", "gamma"]
    assert all(p.requires_grad for p in view.parameters())
