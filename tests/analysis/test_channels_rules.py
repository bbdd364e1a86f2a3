"""Channel rules on small hand-built graphs: coupling, index offsets, shape rewrites, refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.channels import analyze_channels, mask, shrink
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass
from tests.conftest import ort_run, to_ir

RNG = np.random.default_rng(0)


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _model(
    nodes: list, inits: list, out_shape: list, opset: int = 17, in_shape: tuple = ("N", 4, 8, 8)
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(name: str, x: str, y: str, cin: int, cout: int, k: int = 3, group: int = 1) -> tuple:
    node = helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name, pads=[k // 2] * 4, group=group)
    return node, [_w(f"{name}_w", cout, cin // group, k, k), _w(f"{name}_b", cout)]


def _chain(*convs: tuple) -> tuple[list, list]:
    nodes, inits = [], []
    for node, weights in convs:
        nodes.append(node)
        inits += weights
    return nodes, inits


def _assert_masked_equals_shrunk(
    proto: onnx.ModelProto, ratio: float = 0.5, feeds: dict[str, np.ndarray] | None = None
) -> dict:
    """Keep a random ``1 - ratio`` of each prunable group's blocks; compare masked vs shrunk in ORT.

    ``feeds`` defaults to a random batch of 2 for the single input ``x``.
    """
    if feeds is None:
        dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
        feeds = {"x": RNG.standard_normal((2, *dims)).astype(np.float32)}
    shrunk, masked = to_ir(proto), to_ir(proto)
    analysis = analyze_channels(shrunk)
    keep = {}
    for g in analysis.prunable():
        blocks = g.units // g.block
        chosen = np.sort(RNG.choice(blocks, max(1, int(blocks * (1 - ratio))), replace=False))
        keep[g.id] = (chosen[:, None] * g.block + np.arange(g.block)).ravel()
    mask(analyze_channels(masked), keep)
    shrink(analysis, keep)
    a, b = ort_run(masked, feeds), ort_run(shrunk, feeds)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-5)
    return keep


def _reasons(proto: onnx.ModelProto) -> list[str]:
    return [str(b) for g in analyze_channels(to_ir(proto)).unprunable() for b in g.blockers]


def test_residual_add_couples_producers() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("b", "a", "b", 8, 8), _conv("c", "s", "y", 8, 3))
    nodes.insert(2, helper.make_node("Add", ["a", "b"], ["s"], name="add"))
    proto = _model(nodes, inits, ["N", 3, 8, 8])
    analysis = analyze_channels(to_ir(proto))
    groups = {tuple(sorted(g.producers)): g for g in analysis.groups.roots()}
    assert ("a", "b") in groups and groups[("a", "b")].prunable
    _assert_masked_equals_shrunk(proto)


def test_concat_offsets_and_split_sizes() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 6), _conv("b", "x", "b", 4, 10), _conv("c", "s1", "y", 9, 3))
    nodes[2:2] = [
        helper.make_node("Concat", ["a", "b"], ["cat"], name="cat", axis=1),
        helper.make_node("Split", ["cat", "sizes"], ["s0", "s1"], name="split", axis=1),
    ]
    inits.append(_i64("sizes", [7, 9]))
    nodes.append(helper.make_node("Relu", ["s0"], ["unused"], name="dead"))
    proto = _model(nodes, inits, ["N", 3, 8, 8])
    # the split cuts through group b (6 + 1 | 9): both halves stay prunable, sizes are rewritten
    keep = _assert_masked_equals_shrunk(proto)
    assert keep


def test_slice_on_channels_rewrites_bounds() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("c", "sl", "y", 4, 3))
    nodes.insert(1, helper.make_node("Slice", ["a", "st", "en", "ax"], ["sl"], name="slice"))
    inits += [_i64("st", [2]), _i64("en", [6]), _i64("ax", [1])]
    _assert_masked_equals_shrunk(_model(nodes, inits, ["N", 3, 8, 8]))


def test_depthwise_conv_couples_in_and_out() -> None:
    nodes, inits = _chain(
        _conv("a", "x", "a", 4, 8, k=1), _conv("dw", "a", "d", 8, 16, group=8), _conv("c", "d", "y", 16, 3)
    )
    proto = _model(nodes, inits, ["N", 3, 8, 8])
    analysis = analyze_channels(to_ir(proto))
    (group,) = [g for g in analysis.groups.roots() if "a" in g.producers]
    assert group.prunable and group.units == 8
    _assert_masked_equals_shrunk(proto)


def test_grouped_conv_removes_whole_conv_groups() -> None:
    nodes, inits = _chain(
        _conv("a", "x", "a", 4, 8, k=1), _conv("g", "a", "d", 8, 8, group=4), _conv("c", "d", "y", 8, 3)
    )
    proto = _model(nodes, inits, ["N", 3, 8, 8])
    (group,) = [g for g in analyze_channels(to_ir(proto)).groups.roots() if "a" in g.producers]
    assert group.block == 2  # 8 input channels in 4 conv groups
    _assert_masked_equals_shrunk(proto)


def test_flatten_into_gemm_slices_channel_blocks() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 6))
    nodes += [
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    inits += [_w("fc_w", 5, 6 * 64), _w("fc_b", 5)]
    proto = _model(nodes, inits, ["N", 5])
    _assert_masked_equals_shrunk(proto)


def test_reshape_with_constant_shape_into_matmul() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 6))
    nodes += [
        helper.make_node("Reshape", ["a", "shape"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "mm_w"], ["y"], name="mm"),
    ]
    inits += [_i64("shape", [-1, 6 * 64]), _w("mm_w", 6 * 64, 5)]
    _assert_masked_equals_shrunk(_model(nodes, inits, ["N", 5]))


def test_channel_shuffle_reshape_is_refused() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("c", "sh", "y", 8, 3))
    nodes[1:1] = [
        helper.make_node("Reshape", ["a", "s5"], ["r5"], name="split_groups"),
        helper.make_node("Transpose", ["r5"], ["t5"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "s4"], ["sh"], name="merge_groups"),
    ]
    inits += [_i64("s5", [-1, 2, 4, 8, 8]), _i64("s4", [-1, 8, 8, 8])]
    assert any("merge_groups" in r and "channel shuffle" in r for r in _reasons(_model(nodes, inits, ["N", 3, 8, 8])))


def test_op_without_rule_output_and_subgraph_are_refused() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("b", "x", "b", 4, 8), _conv("c", "x", "c", 4, 8))
    then = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    nodes += [
        helper.make_node("LpNormalization", ["a"], ["n"], name="lpnorm", axis=1),
        helper.make_node("If", ["cond"], ["i"], name="branch", then_branch=then, else_branch=then),
        helper.make_node("Add", ["n", "b"], ["s"], name="add"),
        helper.make_node("Add", ["s", "i"], ["y"], name="out"),
    ]
    inits.append(numpy_helper.from_array(np.array(True), "cond"))
    reasons = _reasons(_model(nodes, inits, ["N", 8, 8, 8]))
    assert any("no channel rule for LpNormalization" in r for r in reasons)
    assert any("subgraph" in r for r in reasons)
    assert any("combines with 'n'" in r for r in reasons)  # b meets channels that cannot be pruned
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("c", "a", "y", 8, 3))
    assert any("graph output 'y'" in r for r in _reasons(_model(nodes, inits, ["N", 3, 8, 8])))


def test_group_norm_prunes_whole_groups() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("c", "n", "y", 8, 3))
    nodes.insert(1, helper.make_node("GroupNormalization", ["a", "gs", "gb"], ["n"], name="gn", num_groups=4))
    inits += [_w("gs", 8), _w("gb", 8)]
    proto = _model(nodes, inits, ["N", 3, 8, 8], opset=21)
    (group,) = [g for g in analyze_channels(to_ir(proto)).groups.roots() if "a" in g.producers]
    assert group.block == 2
    _assert_masked_equals_shrunk(proto)


def test_layer_norm_over_channels_is_inexact() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("LayerNormalization", ["h", "ln_s", "ln_b"], ["n"], name="ln", axis=-1),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="fc2"),
    ]
    inits = [_w("w1", 8, 16), _w("ln_s", 16), _w("ln_b", 16), _w("w2", 16, 4)]
    proto = _model(nodes, inits, ["N", 4], in_shape=("N", 8))
    assert any("LayerNormalization normalizes over the pruned axis" in r for r in _reasons(proto))
    analysis = analyze_channels(to_ir(proto), allow_inexact=True)
    (group,) = [g for g in analysis.groups.roots() if "fc1" in g.producers]
    assert group.prunable and analysis.inexact(group)


@pytest.mark.parametrize("op", ["Mul", "Div", "Sub"])
def test_broadcast_constant_is_sliced(op: str) -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("c", "m", "y", 8, 3))
    nodes.insert(1, helper.make_node(op, ["a", "k"], ["m"], name="bcast"))
    inits.append(numpy_helper.from_array(RNG.uniform(0.5, 2, (1, 8, 1, 1)).astype(np.float32), "k"))
    _assert_masked_equals_shrunk(_model(nodes, inits, ["N", 3, 8, 8]))


def test_se_block_and_resize_and_pad() -> None:
    nodes, inits = _chain(
        _conv("a", "x", "a", 4, 8), _conv("r", "p", "rr", 8, 2, k=1), _conv("e", "rr", "ee", 2, 8, k=1)
    )
    nodes += [
        helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
        helper.make_node("Sigmoid", ["ee"], ["g"], name="gate"),
        helper.make_node("Mul", ["a", "g"], ["se"], name="scale"),
        helper.make_node("Resize", ["se", "", "scales"], ["up"], name="up", mode="nearest"),
        helper.make_node("Pad", ["up", "pads"], ["pd"], name="pad"),
    ]
    node, weights = _conv("c", "pd", "y", 8, 3)
    nodes.append(node)
    inits += weights + [
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        _i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
    ]
    # reorder so that producers come first
    order = ["a", "gap", "r", "e", "gate", "scale", "up", "pad", "c"]
    nodes.sort(key=lambda n: order.index(n.name))
    _assert_masked_equals_shrunk(_model(nodes, inits, ["N", 3, 18, 18]))


def test_zero_ratio_changes_nothing() -> None:
    nodes, inits = _chain(_conv("a", "x", "a", 4, 8), _conv("c", "a", "y", 8, 3))
    proto = _model(nodes, inits, ["N", 3, 8, 8])
    model = to_ir(proto)
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.0))(model)
    assert not result.modified
    x = RNG.standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])
