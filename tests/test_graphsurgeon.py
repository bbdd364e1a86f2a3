"""onnxprune passes run on onnx-graphsurgeon graphs through ``onnxprune.graphsurgeon``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import PassContext, Pipeline, PipelineResult
from onnxprune.calibration import ArraySource, InputSpec
from onnxprune.graphsurgeon import run_on_graphsurgeon, run_on_graphsurgeon_with_result
from onnxprune.passes import NMPruneConfig, NMPrunePass, PruneResult, UnstructuredPruneConfig, UnstructuredPrunePass

# weight name -> input (reduction) axis
WEIGHTS = {"conv_w": 1, "fc1_w": 0, "fc2_w": 1}


def _model(seed: int = 0) -> onnx.ModelProto:
    """x[N,4,8,8] -> Conv(4->8, 3x3) -> Relu -> Flatten -> MatMul[512,16] -> Add -> Relu -> Gemm(transB) -> y[N,10]."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r1"], name="relu1"),
        helper.make_node("Flatten", ["r1"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "fc1_w"], ["m"], name="fc1"),
        helper.make_node("Add", ["m", "fc1_b"], ["a"], name="fc1_bias"),
        helper.make_node("Relu", ["a"], ["r2"], name="relu2"),
        helper.make_node("Gemm", ["r2", "fc2_w", "fc2_b"], ["y"], name="fc2", transB=1),
    ]
    inits = [
        init("conv_w", 8, 4, 3, 3),
        init("conv_b", 8),
        init("fc1_w", 512, 16),
        init("fc1_b", 16),
        init("fc2_w", 10, 16),
        init("fc2_b", 10),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10, producer_name="onnxprune-tests"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def graph() -> gs.Graph:
    return gs.import_onnx(_model())


@pytest.fixture
def feed() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((5, 4, 8, 8)).astype(np.float32)}


def _run(graph: gs.Graph, feed: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(gs.export_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], feed)[0]


def _weights(graph: gs.Graph) -> dict[str, np.ndarray]:
    return {name: np.asarray(t.values) for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}


def _check_same_structure(before: gs.Graph, after: gs.Graph) -> None:
    assert [n.name for n in after.nodes] == [n.name for n in before.nodes]
    assert [n.op for n in after.nodes] == [n.op for n in before.nodes]
    assert (after.name, after.opset, after.ir_version, after.producer_name) == (
        before.name,
        before.opset,
        before.ir_version,
        before.producer_name,
    )
    assert [t.name for t in after.inputs] == [t.name for t in before.inputs]
    assert [t.name for t in after.outputs] == [t.name for t in before.outputs]


def test_unstructured_half_sparsity(graph: gs.Graph, feed: dict[str, np.ndarray]) -> None:
    pruned, result = run_on_graphsurgeon_with_result(
        UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.5)), graph
    )
    _check_same_structure(graph, pruned)
    assert isinstance(result, PruneResult) and result.modified
    assert result.report.summary["achieved_sparsity"] == pytest.approx(0.5)
    weights = _weights(pruned)
    for name in WEIGHTS:
        assert np.count_nonzero(weights[name] == 0) == weights[name].size // 2, name
    for bias in ("conv_b", "fc1_b", "fc2_b"):
        np.testing.assert_array_equal(weights[bias], _weights(graph)[bias])
    out = _run(pruned, feed)
    assert out.shape == (5, 10) and np.isfinite(out).all()
    assert not np.array_equal(out, _run(graph, feed))


def test_nm_two_of_four(graph: gs.Graph, feed: dict[str, np.ndarray]) -> None:
    pruned, result = run_on_graphsurgeon_with_result(NMPrunePass(NMPruneConfig()), graph)
    _check_same_structure(graph, pruned)
    assert result.report.summary["pattern"] == "2:4"
    assert result.report.summary["pruned_tensors"] == len(WEIGHTS)
    weights = _weights(pruned)
    for name, in_axis in WEIGHTS.items():
        rows = np.moveaxis(weights[name], in_axis, -1).reshape(-1, 4)
        assert (np.count_nonzero(rows, axis=1) == 2).all(), name
    assert np.isfinite(_run(pruned, feed)).all()


def test_sparsity_zero_is_bit_identical(graph: gs.Graph, feed: dict[str, np.ndarray]) -> None:
    pruned = run_on_graphsurgeon(UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.0)), graph)
    _check_same_structure(graph, pruned)
    before, after = _weights(graph), _weights(pruned)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].tobytes() == after[name].tobytes(), name
    assert _run(pruned, feed).tobytes() == _run(graph, feed).tobytes()


def test_input_graph_is_not_modified(graph: gs.Graph) -> None:
    before = {name: array.copy() for name, array in _weights(graph).items()}
    run_on_graphsurgeon(NMPrunePass(NMPruneConfig()), graph)
    for name, array in _weights(graph).items():
        np.testing.assert_array_equal(array, before[name])


def test_list_and_pipeline(graph: gs.Graph) -> None:
    passes = [UnstructuredPrunePass(UnstructuredPruneConfig(sparsity=0.25)), NMPrunePass(NMPruneConfig())]
    from_list, result = run_on_graphsurgeon_with_result(passes, graph)
    assert result.modified
    from_pipeline, piped = run_on_graphsurgeon_with_result(Pipeline(passes), graph)
    assert isinstance(piped, PipelineResult)
    assert [r.name for r in piped.reports] == ["unstructured", "nm"]
    for name, array in _weights(from_list).items():
        np.testing.assert_array_equal(array, _weights(from_pipeline)[name], err_msg=name)
    with pytest.raises(ValueError, match="at least one pass"):
        run_on_graphsurgeon([], graph)


def test_wanda_with_calibration(graph: gs.Graph, feed: dict[str, np.ndarray]) -> None:
    calib = np.random.default_rng(2).standard_normal((16, 4, 8, 8)).astype(np.float32)
    source = ArraySource({"x": calib}, [InputSpec("x", np.dtype(np.float32), (None, 4, 8, 8))], "test")
    config = UnstructuredPruneConfig(sparsity=0.5, importance="wanda")
    pruned, result = run_on_graphsurgeon_with_result(
        UnstructuredPrunePass(config, PassContext(calibration=source)), graph
    )
    assert result.report.summary["achieved_sparsity"] == pytest.approx(0.5)
    assert np.isfinite(_run(pruned, feed)).all()


def test_onnxprune_imports_without_graphsurgeon() -> None:
    code = "import sys; sys.modules['onnx_graphsurgeon'] = None; import onnxprune, onnxprune.graphsurgeon"
    subprocess.run([sys.executable, "-c", code], check=True)
