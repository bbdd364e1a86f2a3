"""Unstructured and N:M pruning, checked numerically with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.calibration.sources import ArraySource, input_specs
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes import NMPruneConfig, NMPrunePass, UnstructuredPruneConfig, UnstructuredPrunePass
from onnxprune.passes import _select as select_module
from onnxprune.passes._scores import to_rows
from onnxprune.pipeline import Pipeline
from tests import models
from tests.conftest import ort_run, to_ir

HELPER_MODELS = {
    "mlp": models.mlp_model,
    "conv": models.conv_model,
    "shared": models.shared_weight_model,
    "lstm": models.lstm_model,
    "gru": models.gru_model,
    "if_loop": models.if_loop_model,
    "qdq": models.qdq_model,
    "opset18": models.opset18_model,
}


def _context(model: ir.Model, n: int = 16, seed: int = 0) -> PassContext:
    proto = ir.to_proto(model)
    batches = [models.random_inputs(proto, batch=1, seed=seed + i) for i in range(n)]
    arrays = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    return PassContext(calibration=ArraySource(arrays, input_specs(model), "test data"))


def _sparsities(model: ir.Model) -> dict[str, float]:
    return {w.name: float(np.mean(read_weight(w) == 0)) for w in find_weights(model)}


@pytest.mark.parametrize("name", sorted(HELPER_MODELS))
@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_sparsity_zero_is_bit_identical(name: str, importance: str, scope: str) -> None:
    proto = HELPER_MODELS[name]()
    model = to_ir(proto)
    feeds = models.random_inputs(proto, seed=1)
    before = ort_run(proto, feeds)
    config = UnstructuredPruneConfig(sparsity=0.0, importance=importance, scope=scope)
    result = UnstructuredPrunePass(config, _context(model))(model)
    assert not result.modified
    after = ort_run(model, feeds)
    for key in before:
        assert np.array_equal(before[key], after[key])


@pytest.mark.parametrize("name", sorted(HELPER_MODELS))
@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
def test_layer_scope_hits_requested_sparsity_per_tensor(name: str, importance: str) -> None:
    proto = HELPER_MODELS[name]()
    model = to_ir(proto)
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, importance=importance), _context(model))(model)
    pruned = {e["tensor"] for e in result.report.changed}
    for entry in result.report.changed:
        assert entry["zeros"] == round(0.5 * entry["numel"]), entry
    sparsities = _sparsities(model)
    for tensor in pruned:
        assert abs(sparsities[tensor] - 0.5) <= 0.5 / min(e["numel"] for e in result.report.changed) + 1e-9
    ort_run(model, models.random_inputs(proto))  # still runs


@pytest.mark.parametrize("normalize", ["none", "mean", "l2", "max"])
@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
def test_global_scope_hits_overall_sparsity(normalize: str, importance: str) -> None:
    proto = models.conv_model()
    model = to_ir(proto)
    config = UnstructuredPruneConfig(sparsity=0.7, importance=importance, scope="global", normalize=normalize)
    result = UnstructuredPrunePass(config, _context(model))(model)
    total = sum(e["numel"] for e in result.report.changed)
    zeros = sum(e["zeros"] for e in result.report.changed)
    assert zeros == round(0.7 * total)
    assert sum(int(np.sum(read_weight(w) == 0)) for w in find_weights(model)) == zeros
    per_tensor = {e["tensor"]: e["sparsity"] for e in result.report.changed}
    assert len(set(np.round(list(per_tensor.values()), 3))) > 1  # global, not uniform


def test_global_scope_breaks_ties_exactly() -> None:
    w = np.ones((8, 8), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "ties",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w, "W")],
    )
    model = to_ir(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.3, scope="global"))(model)
    assert int(np.sum(model.graph.initializers["W"].const_value.numpy() == 0)) == round(0.3 * 64)


def _scaled_feature_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """MatMul whose input feature 0 is huge while its weights are small: Wanda must keep them."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, size=(4, 6)).astype(np.float32)
    w[0] *= 0.1  # feature 0: small weights ...
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "wanda",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = rng.standard_normal((64, 1, 4)).astype(np.float32)
    x[:, :, 0] *= 100.0  # ... but a huge activation
    return proto, {"x": x}


def test_activations_change_wandas_choice() -> None:
    proto, arrays = _scaled_feature_model()
    chosen = {}
    errors = {}
    feed = {"x": arrays["x"][:, 0]}
    reference = ort_run(proto, feed)["y"]
    for importance in ("magnitude", "wanda"):
        model = to_ir(proto)
        context = PassContext(calibration=ArraySource(arrays, input_specs(model), "test"))
        UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.25, importance=importance), context)(model)
        w = model.graph.initializers["W"].const_value.numpy()
        chosen[importance] = w[0] != 0
        errors[importance] = float(np.abs(ort_run(model, feed)["y"] - reference).mean())
    assert not chosen["magnitude"].any()  # magnitude drops the whole small-weight row
    assert chosen["wanda"].all()  # Wanda keeps it: ‖X_0‖ is 100x larger
    assert errors["wanda"] < errors["magnitude"] / 5


@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
@pytest.mark.parametrize("name", ["conv", "mlp", "opset18"])
def test_nm_groups_hold(name: str, importance: str) -> None:
    proto = HELPER_MODELS[name]()
    model = to_ir(proto)
    result = NMPrunePass(NMPruneConfig(n=2, m=4, importance=importance), _context(model))(model)
    assert result.report.changed
    by_name = {w.name: w for w in find_weights(model)}
    for entry in result.report.changed:
        weight = by_name[entry["tensor"]]
        rows = to_rows(weight, read_weight(weight))
        groups = rows.reshape(rows.shape[0], -1, 4)
        assert (np.count_nonzero(groups, axis=-1) <= 2).all()
        assert entry["zeros"] >= entry["numel"] // 2
    ort_run(model, models.random_inputs(proto))


@pytest.mark.parametrize("importance", ["magnitude", "wanda"])
@pytest.mark.parametrize("name", ["conv", "mlp"])
def test_nm_rows_in_chunks_prune_as_in_one_go(name: str, importance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proto = HELPER_MODELS[name]()
    whole, chunked = to_ir(proto), to_ir(proto)
    NMPrunePass(NMPruneConfig(n=2, m=4, importance=importance), _context(whole))(whole)
    monkeypatch.setattr(select_module, "ROW_CHUNK_BYTES", 1)  # one row at a time
    NMPrunePass(NMPruneConfig(n=2, m=4, importance=importance), _context(chunked))(chunked)
    for a, b in zip(find_weights(whole), find_weights(chunked), strict=True):
        np.testing.assert_array_equal(read_weight(a), read_weight(b))


def test_nm_runs_along_the_input_axis_of_each_layout() -> None:
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((2, 8, 3, 3)).astype(np.float32)
    mm_w = rng.standard_normal((8, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "CW"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Flatten", ["c"], ["f"], axis=2),
            helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
            helper.make_node("Slice", ["t", "st", "en", "ax"], ["s"]),
            helper.make_node("MatMul", ["s", "MW"], ["y"], name="mm"),
        ],
        "layouts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(conv_w, "CW"),
            numpy_helper.from_array(mm_w, "MW"),
            numpy_helper.from_array(np.array([0], np.int64), "st"),
            numpy_helper.from_array(np.array([8], np.int64), "en"),
            numpy_helper.from_array(np.array([2], np.int64), "ax"),
        ],
    )
    model = to_ir(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    NMPrunePass(NMPruneConfig(n=2, m=4))(model)
    cw = model.graph.initializers["CW"].const_value.numpy()
    for o in range(2):
        for i in range(3):
            for j in range(3):
                for g in range(2):
                    group = cw[o, 4 * g : 4 * g + 4, i, j]
                    assert np.count_nonzero(group) == 2
                    kept = np.sort(np.abs(conv_w[o, 4 * g : 4 * g + 4, i, j]))[-2:]
                    assert np.allclose(np.sort(np.abs(group[group != 0])), kept)
    mw = model.graph.initializers["MW"].const_value.numpy()
    for o in range(3):
        assert all(np.count_nonzero(mw[4 * g : 4 * g + 4, o]) == 2 for g in range(2))


def test_nm_skips_indivisible_input_dim_with_reason() -> None:
    proto = models.conv_model()  # first conv has 3 input channels
    model = to_ir(proto)
    result = NMPrunePass(NMPruneConfig(n=2, m=4))(model)
    reasons = [s["reason"] for s in result.report.skipped]
    assert any("not a multiple of M=4" in r for r in reasons)


def test_shared_and_disguised_weights_are_found_once_and_pruned_one_way() -> None:
    proto = models.shared_weight_model()
    model = to_ir(proto)
    found = find_weights(model)
    names = [w.name for w in found]
    assert len(names) == len(set(names))
    shared = [w for w in found if len(w.uses) > 1]
    assert shared, "the shared initializer must be one weight with several uses"
    holders = {type(w.holder).__name__ for w in found}
    assert "Node" in holders  # the Constant-node weight
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, importance="wanda"), _context(model))(model)
    assert len(result.report.changed) == len(found)
    for w in found:
        assert np.mean(read_weight(w) == 0) == pytest.approx(0.5, abs=0.02)
    ort_run(model, models.random_inputs(proto))


@pytest.mark.parametrize("name", ["lstm", "gru", "qdq", "if_loop"])
def test_unsupported_parts_left_alone_with_reason_and_model_runs(name: str) -> None:
    proto = HELPER_MODELS[name]()
    model = to_ir(proto)
    original = {w.name: read_weight(w).copy() for w in find_weights(model)}
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, importance="wanda"), _context(model))(model)
    assert result.report.skipped, "something must be skipped, with a reason"
    assert all(s["reason"] for s in result.report.skipped)
    assert result.report.changed, "the safe weights are still pruned"
    ort_run(model, models.random_inputs(proto))
    skipped = {s["tensor"] for s in result.report.skipped}
    for w in find_weights(model):
        if w.name in skipped:
            assert np.array_equal(read_weight(w), original[w.name])
    if name in ("lstm", "gru"):
        assert any("recurrent" in s["reason"] for s in result.report.skipped)
    if name == "qdq":
        assert any("quantized" in s["reason"] or "not float" in s["reason"] for s in result.report.skipped)
    if name == "if_loop":
        assert any("subgraph" in s["reason"] for s in result.report.skipped)


def test_magnitude_prunes_weights_inside_subgraphs() -> None:
    proto = models.if_loop_model()
    model = to_ir(proto)
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5))(model)
    in_sub = [w for w in find_weights(model) if any(u.in_subgraph for u in w.uses)]
    assert in_sub
    assert {w.name for w in in_sub} <= {e["tensor"] for e in result.report.changed}
    ort_run(model, models.random_inputs(proto))


def test_include_exclude_keep_first_last() -> None:
    proto = models.conv_model()
    model = to_ir(proto)
    all_weights = [w.name for w in find_weights(model)]
    config = UnstructuredPruneConfig(sparsity=0.5, keep_first=True, keep_last=True)
    result = UnstructuredPrunePass(config)(model)
    assert [e["tensor"] for e in result.report.changed] == all_weights[1:-1]
    model = to_ir(proto)
    first_node = find_weights(model).weights[0].node_names[0]
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, exclude=(first_node,)))(model)
    assert first_node not in {n for e in result.report.changed for n in e["nodes"]}
    model = to_ir(proto)
    result = UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, include=(first_node,)))(model)
    assert [e["nodes"] for e in result.report.changed] == [[first_node]]


def test_data_driven_pass_without_calibration_is_a_clear_error() -> None:
    model = to_ir(models.mlp_model())
    with pytest.raises(CalibrationError, match="needs calibration data"):
        UnstructuredPrunePass(UnstructuredPruneConfig(importance="wanda"))(model)


@pytest.mark.parametrize(
    "kwargs", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"importance": "taylor"}, {"scope": "row"}, {"normalize": "x"}]
)
def test_bad_configs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(RecipeError):
        UnstructuredPruneConfig(**kwargs)


def test_pipeline_runs_inside_onnx_ir_pass_manager() -> None:
    proto = models.mlp_model()
    model = to_ir(proto)
    pipeline = Pipeline([UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5))])
    manager = ir.passes.PassManager([pipeline, ir.passes.common.RemoveUnusedNodesPass()])
    assert manager(model).modified
    assert all(np.mean(read_weight(w) == 0) == 0.5 for w in find_weights(model))


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_exports_at_opset_13_and_exporter_default(dynamo: bool, tmp_path) -> None:
    import onnxprune

    proto = models.tiny_cnn_onnx(dynamo=dynamo)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == (20 if dynamo else 13)
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    model = onnxprune.load(path)
    context = _context(model)
    Pipeline([UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5, importance="wanda"))], context)(model)
    onnxprune.save(model, tmp_path / "out.onnx")
    reloaded = onnxprune.load(tmp_path / "out.onnx")
    assert reloaded.opset_imports[""] == opset
    assert all(np.mean(read_weight(w) == 0) == pytest.approx(0.5, abs=1e-3) for w in find_weights(reloaded))
    ort_run(reloaded, models.random_inputs(proto))
