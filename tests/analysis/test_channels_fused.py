"""Channel rules for onnxruntime's fused transformer ops (com.microsoft), checked in onnxruntime.

The encoder is a tiny HF BERT fused by ``onnxruntime.transformers.optimizer`` (see
:mod:`tests.models.ort_fused`); the other ops are checked on small hand-built graphs.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.channels import ChannelAnalysis, analyze_channels, mask, record, shrink
from onnxprune.analysis.flops import count_model, node_macs
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.cli import cli
from onnxprune.context import PassContext
from onnxprune.inspect import channel_groups
from onnxprune.passes import ChannelPruneConfig, ChannelPrunePass
from onnxprune.passes._reconstruct import plan_refits
from tests.conftest import ort_run, sha256, to_ir
from tests.models.ort_fused import BERT, bert_inputs, fused_bert

MS = "com.microsoft"
HEAD = BERT["hidden"] // BERT["heads"]
FEEDS = bert_inputs(3)
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def bert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(TorchScript export, its onnxruntime-fused version), built once for this module."""
    return fused_bert(tmp_path_factory.mktemp("ort_fused"))


def _load(path: Path) -> ir.Model:
    return to_ir(onnx.load(path))


def _hidden(model: ir.Model) -> np.ndarray:
    return ort_run(model, FEEDS)["last_hidden_state"]


def _by_op(analysis: ChannelAnalysis) -> dict[str, list]:
    """Groups by the op type of their first producer."""
    nodes = {n.name: n.op_type for n in analysis.model.graph}
    found: dict[str, list] = collections.defaultdict(list)
    for group in analysis.groups.roots():
        found[nodes[group.producers[0]]].append(group)
    return found


def _attention_heads(model: ir.Model) -> list[int]:
    return [n.attributes["num_heads"].as_int() for n in model.graph if n.op_type == "Attention"]


def _random_keep(analysis: ChannelAnalysis, fraction: float = 0.5) -> dict[int, np.ndarray]:
    """A random half (in whole blocks) of every prunable group's units."""
    keep = {}
    for group in analysis.prunable():
        blocks = group.units // group.block
        chosen = np.sort(RNG.choice(blocks, max(1, int(blocks * fraction)), replace=False))
        keep[group.id] = (chosen[:, None] * group.block + np.arange(group.block)).ravel()
    return keep


def test_optimizer_fuses_the_encoder_into_com_microsoft_ops(bert_files: tuple[Path, Path]) -> None:
    ops = collections.Counter((n.domain, n.op_type) for n in _load(bert_files[1]).graph)
    layers = BERT["layers"]
    assert ops[(MS, "Attention")] == layers and ops[(MS, "EmbedLayerNormalization")] == 1
    assert ops[(MS, "SkipLayerNormalization")] == 2 * layers and ops[(MS, "BiasGelu")] == layers


def test_heads_ffn_and_hidden_groups(bert_files: tuple[Path, Path]) -> None:
    analysis = analyze_channels(_load(bert_files[1]))
    found = _by_op(analysis)
    heads, ffn, (hidden,) = found["Attention"], found["MatMul"], found["EmbedLayerNormalization"]
    assert [(g.units, g.block, g.prunable) for g in heads] == [(BERT["hidden"], HEAD, True)] * BERT["layers"]
    assert [(g.units, g.block, g.prunable) for g in ffn] == [(BERT["intermediate"], 1, True)] * BERT["layers"]
    # the hidden channels: the embedding, every output projection and FFN output, coupled by the residual norms
    assert hidden.units == BERT["hidden"] and len(hidden.producers) == 1 + 2 * BERT["layers"]
    reasons = " | ".join(map(str, hidden.blockers))
    assert "SkipLayerNormalization normalizes over the pruned axis" in reasons
    assert "EmbedLayerNormalization normalizes over the pruned axis" in reasons
    assert "reaches graph output 'last_hidden_state'" in reasons
    inexact = analyze_channels(_load(bert_files[1]), allow_inexact=True)
    (hidden,) = _by_op(inexact)["EmbedLayerNormalization"]
    assert inexact.inexact(hidden)
    assert [b.reason for b in hidden.blockers] == ["reaches graph output 'last_hidden_state'"]


def test_zero_ratio_changes_nothing(bert_files: tuple[Path, Path]) -> None:
    model = _load(bert_files[1])
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.0), PassContext())(model)
    assert not result.modified and result.report.summary["prunable_groups"] == 2 * BERT["layers"]
    np.testing.assert_array_equal(_hidden(model), _hidden(_load(bert_files[1])))


def test_removing_zeroed_heads_changes_nothing(bert_files: tuple[Path, Path]) -> None:
    """Heads 1 and 3 of the first layer get zero Q/K/V columns, bias and output-projection rows; removing them
    leaves the outputs as they were, and the Attention keeps 2 heads with a [hidden, 3·2·head] weight."""
    model = _load(bert_files[1])
    node = next(n for n in model.graph if n.op_type == "Attention")
    dead = np.r_[HEAD : 2 * HEAD, 3 * HEAD : 4 * HEAD]
    columns = np.concatenate([dead + block * BERT["hidden"] for block in range(3)])
    projection = next(use.node for use in node.outputs[0].uses())
    for target, index, axis, removed in ((node, 1, 1, columns), (node, 2, 0, columns), (projection, 1, 0, dead)):
        value = target.inputs[index]
        array = value.const_value.numpy().copy()
        array[(slice(None),) * axis + (removed,)] = 0
        value.const_value = ir.Tensor(array, name=value.name)
    before = _hidden(model)
    analysis = analyze_channels(model)
    (gid,) = [g.id for g in analysis.prunable() if node.name in g.producers]
    shrink(analysis, {gid: np.setdiff1d(np.arange(BERT["hidden"]), dead)})
    np.testing.assert_allclose(_hidden(model), before, rtol=1e-5, atol=1e-5)
    assert _attention_heads(model) == [2, BERT["heads"]]
    assert node.inputs[1].const_value.shape == (BERT["hidden"], 3 * 2 * HEAD)
    assert node.inputs[2].const_value.shape == (3 * 2 * HEAD,) and projection.inputs[1].const_value.shape[0] == 2 * HEAD


def test_masked_equals_shrunk_and_the_shrunk_model_runs(bert_files: tuple[Path, Path]) -> None:
    shrunk, masked = _load(bert_files[1]), _load(bert_files[1])
    analysis = analyze_channels(shrunk)
    keep = _random_keep(analysis)
    mask(analyze_channels(masked), keep)
    shrink(analysis, keep)
    np.testing.assert_allclose(_hidden(shrunk), _hidden(masked), rtol=1e-5, atol=1e-5)
    assert _attention_heads(shrunk) == [BERT["heads"] // 2] * BERT["layers"]
    onnx.checker.check_model(ir.to_proto(shrunk))


def test_pass_with_verify_and_flops_target(bert_files: tuple[Path, Path]) -> None:
    model = _load(bert_files[1])
    before = count_model(model, complete_shapes(model)).macs
    config = ChannelPruneConfig(target_flops=0.7, verify=True)
    summary = ChannelPrunePass(config, PassContext())(model).report.summary
    assert summary["pruned_groups"] > 0 and summary["verify_max_rel_diff"] < 1e-5
    assert abs(count_model(model, complete_shapes(model)).macs / before - 0.7) <= 0.02


def test_refit_puts_the_intercept_into_the_fused_bias(bert_files: tuple[Path, Path]) -> None:
    """Output projections and FFN outputs feed SkipLayerNormalization, whose bias input is their intercept."""
    model = _load(bert_files[1])
    calib = ArraySource(bert_inputs(16, seed=1), input_specs(model), "test arrays")
    result = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, verify=True), PassContext(calibration=calib))(model)
    summary = result.report.summary
    assert summary["refitted"] == 2 * BERT["layers"] and summary["verify_max_rel_diff"] < 1e-5
    assert summary["refit_error_after"] < summary["refit_error_before"]
    analysis = analyze_channels(_load(bert_files[1]))
    plans, _ = plan_refits(analysis, record(analysis), _random_keep(analysis), 8192)
    assert len(plans) == 2 * BERT["layers"] and {p.bias[0].op_type for p in plans} == {"SkipLayerNormalization"}


def test_flops_of_fused_and_decomposed_graphs_agree(bert_files: tuple[Path, Path]) -> None:
    plain, fused = _load(bert_files[0]), _load(bert_files[1])
    counts = [count_model(m, complete_shapes(m)) for m in (plain, fused)]
    assert counts[0].macs == counts[1].macs and not counts[1].unknown
    node = next(n for n in fused.graph if n.op_type == "Attention")
    seq, hidden = BERT["seq"], BERT["hidden"]
    assert node_macs(node, complete_shapes(fused)) == seq * hidden * 3 * hidden + seq * seq * 2 * hidden


def test_inspect_groups_shows_whole_heads(bert_files: tuple[Path, Path]) -> None:
    groups = channel_groups(_load(bert_files[1]))
    heads = [g for g in groups if g["producers"][0].startswith("Attention")]
    assert [(g["channels"], g["block"], g["prunable"]) for g in heads] == [(BERT["hidden"], HEAD, True)] * 2
    roles = {(p["op"], p["input"], p["role"]) for p in heads[0]["params"]}
    assert roles == {("Attention", 1, "out"), ("Attention", 2, "bias"), ("MatMul", 1, "in")}
    assert 3 * BERT["hidden"] in [v["width"] for v in heads[0]["values"]]  # the packed QKV weight's columns


def test_cli_prunes_heads_and_ffn(tmp_path: Path, bert_files: tuple[Path, Path]) -> None:
    fused = bert_files[1]
    before = sha256(fused)
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        ["--quiet", "prune", str(fused), "-o", str(out), "--channels", "0.3", "--report", str(report)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert sha256(fused) == before
    summary = json.loads(report.read_text())["passes"][0]["summary"]
    assert summary["prunable_groups"] == summary["pruned_groups"] == 2 * BERT["layers"]
    pruned = _load(out)
    assert all(h < BERT["heads"] for h in _attention_heads(pruned))
    assert _hidden(pruned).shape == (3, BERT["seq"], BERT["hidden"])


def test_dynamo_export_is_fused_partly_and_its_ffn_prunes_exactly(tmp_path: Path) -> None:
    """The dynamo export keeps attention decomposed; SkipLayerNormalization and BiasGelu still fuse."""
    model = _load(fused_bert(tmp_path, dynamo=True)[1])
    ops = collections.Counter((n.domain, n.op_type) for n in model.graph)
    assert ops[(MS, "SkipLayerNormalization")] == 2 * BERT["layers"] and ops[(MS, "Attention")] == 0
    masked = model.clone()
    analysis = analyze_channels(model)
    ffn = [g for g in analysis.prunable() if g.units == BERT["intermediate"]]
    assert len(ffn) == BERT["layers"]
    keep = {g.id: np.arange(0, g.units, 2) for g in ffn}
    mask(analyze_channels(masked), keep)
    shrink(analysis, keep)
    np.testing.assert_allclose(_hidden(model), _hidden(masked), rtol=1e-5, atol=1e-5)


# -- hand-built graphs ------------------------------------------------------------------------------------------
S, C = 4, 16


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _graph_model(nodes: list, inits: list, out_width: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", S, C])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", S, out_width])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _matmul(name: str, x: str, width_in: int, width_out: int) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    return helper.make_node("MatMul", [x, f"{name}_w"], [name], name=name), _w(f"{name}_w", width_in, width_out)


def _masked_vs_shrunk(proto: onnx.ModelProto, allow_inexact: bool = False) -> tuple[ir.Model, dict]:
    x = {"x": RNG.standard_normal((2, S, C)).astype(np.float32)}
    shrunk, masked = to_ir(proto), to_ir(proto)
    analysis = analyze_channels(shrunk, allow_inexact=allow_inexact)
    keep = _random_keep(analysis)
    mask(analyze_channels(masked, allow_inexact=allow_inexact), keep)
    shrink(analysis, keep)
    np.testing.assert_allclose(ort_run(shrunk, x)["y"], ort_run(masked, x)["y"], rtol=1e-5, atol=1e-5)
    return shrunk, keep


def _mha_model(**attrs: int) -> onnx.ModelProto:
    nodes, inits = zip(*(_matmul(n, "x", C, C) for n in "qkv"), strict=True)
    mha = helper.make_node("MultiHeadAttention", ["q", "k", "v", "qkv_b"], ["o"], name="mha", domain=MS, **attrs)
    out, out_w = _matmul("y", "o", C, 8)
    return _graph_model([*nodes, mha, out], [*inits, _w("qkv_b", 3 * C), out_w], 8)


def test_multi_head_attention_couples_q_k_v_by_whole_heads() -> None:
    proto = _mha_model(num_heads=4)
    analysis = analyze_channels(to_ir(proto))
    (group,) = analysis.prunable()
    assert sorted(group.producers) == ["k", "q", "v"] and (group.units, group.block) == (C, C // 4)
    model = to_ir(proto)
    (node,) = [n for n in model.graph if n.op_type == "MultiHeadAttention"]
    assert node_macs(node, complete_shapes(model)) == 2 * S * S * C  # Q·Kᵀ and the V sum, batch 1
    shrunk, _ = _masked_vs_shrunk(proto)
    (node,) = [n for n in shrunk.graph if n.op_type == "MultiHeadAttention"]
    assert node.attributes["num_heads"].as_int() == 2 and node.inputs[3].const_value.shape == (3 * C // 2,)


def _attention_model(sizes: list[int]) -> onnx.ModelProto:
    """x -> MatMul h (a group the Attention consumes) -> Attention -> MatMul y."""
    h, h_w = _matmul("h", "x", C, C)
    node = helper.make_node(
        "Attention", ["h", "qkv_w", "qkv_b"], ["o"], name="att", domain=MS, num_heads=4, qkv_hidden_sizes=sizes
    )
    out, out_w = _matmul("y", "o", sizes[2], 8)
    return _graph_model([h, node, out], [h_w, _w("qkv_w", C, sum(sizes)), _w("qkv_b", sum(sizes)), out_w], 8)


def test_attention_consumes_hidden_channels_and_rewrites_qkv_hidden_sizes() -> None:
    shrunk, keep = _masked_vs_shrunk(_attention_model([C, C, C]))
    (node,) = [n for n in shrunk.graph if n.op_type == "Attention"]
    assert [len(k) for k in keep.values()] == [C // 2, C // 2] and node.attributes["num_heads"].as_int() == 2
    assert list(node.attributes["qkv_hidden_sizes"].as_ints()) == [C // 2] * 3
    assert node.inputs[1].const_value.shape == (C // 2, 3 * C // 2)  # rows: the consumed h; columns: 2 heads


def test_attention_with_a_narrower_v_blocks() -> None:
    analysis = analyze_channels(to_ir(_attention_model([C, C, C // 2])), {"h": (1, S, C), "o": (1, S, C // 2)})
    assert [g.producers for g in analysis.groups.roots()] == [["h"], ["y"]]
    (h,) = analysis.groups.roots()[:1]
    assert [str(b) for b in h.blockers] == [
        "Attention 'att': Attention with Q/K/V widths [16, 16, 8] and 4 heads (only equal widths are followed)"
    ]


def _gqa_model(present: bool = False) -> onnx.ModelProto:
    head = 8  # onnxruntime's kernel wants a multiple of 8
    q, k, v = _matmul("q", "x", C, 4 * head), _matmul("k", "x", C, 2 * head), _matmul("v", "x", C, 2 * head)
    nodes, inits = zip(q, k, v, strict=True)
    outputs = ["o", "present_k", "present_v"] if present else ["o"]
    gqa = helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "", "", "seqlens", "total"],
        outputs,
        name="gqa",
        domain=MS,
        num_heads=4,
        kv_num_heads=2,
    )
    out, out_w = _matmul("y", "o", 4 * head, 8)
    proto = _graph_model([*nodes, gqa, out], [*inits, out_w], 8)
    if present:
        proto.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs[1:]])
    proto.graph.initializer.extend(
        [
            numpy_helper.from_array(np.full(2, S - 1, np.int32), "seqlens"),
            numpy_helper.from_array(np.array([S], np.int32), "total"),
        ]
    )
    return proto


def test_group_query_attention_removes_kv_groups_with_their_query_heads() -> None:
    analysis = analyze_channels(to_ir(_gqa_model()))
    (group,) = analysis.prunable()
    assert sorted(group.producers) == ["k", "q", "v"] and group.describe() == "2 KV groups × 8"
    shrunk, keep = _masked_vs_shrunk(_gqa_model())
    (node,) = [n for n in shrunk.graph if n.op_type == "GroupQueryAttention"]
    assert node.attributes["num_heads"].as_int() == 2 and node.attributes["kv_num_heads"].as_int() == 1
    assert [
        v.const_value.shape for v in (node.inputs[0].producer().inputs[1], node.inputs[1].producer().inputs[1])
    ] == [
        (C, 16),
        (C, 8),
    ]


def test_group_query_attention_with_a_cache_output_blocks() -> None:
    analysis = analyze_channels(to_ir(_gqa_model(present=True)))
    reasons = {str(b) for g in analysis.unprunable() for b in g.blockers if g.producers != ["y"]}
    assert reasons == {
        "GroupQueryAttention 'gqa': GroupQueryAttention's present key/value outputs index the KV heads "
        "(a cache's signature)"
    }


def test_gelu_family_and_trivial_fused_matmul_prune_exactly() -> None:
    up, up_w = _matmul("up", "x", C, 32)
    nodes = [
        up,
        helper.make_node("BiasGelu", ["up", "b1"], ["g1"], name="bias_gelu", domain=MS),
        helper.make_node("FastGelu", ["g1", "b2"], ["g2"], name="fast_gelu", domain=MS),
        helper.make_node("QuickGelu", ["g2"], ["g3"], name="quick_gelu", domain=MS, alpha=1.5),
        helper.make_node("Gelu", ["g3"], ["g4"], name="gelu", domain=MS),
        helper.make_node("FusedMatMul", ["g4", "down_w"], ["y"], name="down", domain=MS, alpha=0.5),
    ]
    proto = _graph_model(nodes, [up_w, _w("b1", 32), _w("b2", 32), _w("down_w", 32, C)], C)
    shrunk, keep = _masked_vs_shrunk(proto)
    assert [len(k) for k in keep.values()] == [16]
    assert shrunk.graph.initializers["down_w"].const_value.shape == (16, C)


def test_fused_matmul_with_a_transpose_blocks() -> None:
    up, up_w = _matmul("up", "x", C, 32)
    down = helper.make_node("FusedMatMul", ["up", "down_w"], ["y"], name="down", domain=MS, transB=1)
    analysis = analyze_channels(to_ir(_graph_model([up, down], [up_w, _w("down_w", C, 32)], C)))
    assert [str(b) for b in analysis.unprunable()[0].blockers] == [
        "FusedMatMul 'down': FusedMatMul with transB is not followed"
    ]


def test_skip_simplified_layer_norm_couples_input_and_skip_inexactly() -> None:
    a, a_w = _matmul("a", "x", C, C)
    b, b_w = _matmul("b", "x", C, C)
    nodes = [
        a,
        b,
        helper.make_node(
            "SkipSimplifiedLayerNormalization", ["a", "b", "gamma", "bias"], ["s", "", "", "sum"], name="ln", domain=MS
        ),
        helper.make_node("SimplifiedLayerNormalization", ["sum", "gamma2"], ["r"], name="rms", axis=-1),
        helper.make_node("Add", ["s", "r"], ["t"], name="add"),
        _matmul("y", "t", C, 8)[0],
    ]
    proto = _graph_model(nodes, [a_w, b_w, _w("gamma", C), _w("bias", C), _w("gamma2", C), _w("y_w", C, 8)], 8)
    (group,) = analyze_channels(to_ir(proto)).groups.roots()[:1]
    assert sorted(group.producers) == ["a", "b"] and not group.prunable
    assert {b.op for b in group.blockers} == {"SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization"}
    analysis = analyze_channels(to_ir(proto), allow_inexact=True)
    (group,) = analysis.prunable()
    assert analysis.inexact(group)
    model = to_ir(proto)
    shrink(analyze_channels(model, allow_inexact=True), {group.id: np.arange(0, C, 2)})
    assert model.graph.initializers["gamma"].const_value.shape == (C // 2,)
    assert ort_run(model, {"x": np.ones((1, S, C), np.float32)})["y"].shape == (1, S, 8)


def test_bias_add_couples_input_and_skip() -> None:
    a, a_w = _matmul("a", "x", C, C)
    b, b_w = _matmul("b", "x", C, C)
    bias_add = helper.make_node("BiasAdd", ["a", "bias", "b"], ["s"], name="bias_add", domain=MS)
    proto = _graph_model([a, b, bias_add, _matmul("y", "s", C, 8)[0]], [a_w, b_w, _w("bias", C), _w("y_w", C, 8)], 8)
    (group,) = analyze_channels(to_ir(proto), {"a": (1, S, C), "b": (1, S, C), "s": (1, S, C)}).prunable()
    assert sorted(group.producers) == ["a", "b"]


def test_other_com_microsoft_ops_block_with_their_name() -> None:
    up, up_w = _matmul("up", "x", C, C)
    softmax = helper.make_node("BiasSoftmax", ["up", "bias"], ["y"], name="bias_softmax", domain=MS, axis=-1)
    analysis = analyze_channels(to_ir(_graph_model([up, softmax], [up_w, _w("bias", C)], C)), {"up": (1, S, C)})
    assert str(analysis.unprunable()[0].blockers[0]) == (
        "BiasSoftmax 'bias_softmax': no channel rule for custom-domain op com.microsoft::BiasSoftmax"
    )
