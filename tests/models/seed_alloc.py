"""Tiny models for the seed allocators (PCA width, SiPP, PQI, K-FAC): built in code, known structure."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["low_rank_mlp", "two_gemm_mlp"]


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], x: list, y: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "seed_alloc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def low_rank_mlp(rank: int = 3, hidden: int = 6, seed: int = 0) -> onnx.ModelProto:
    """x[N,8] (inputs ≥ 0) -> Gemm(8->hidden) -> Relu -> Gemm(hidden->4) -> y.

    The first layer's weights and biases are positive and its last ``hidden - rank`` neurons are positive
    combinations of the first ``rank``: on non-negative inputs the ReLU is the identity and the hidden
    activations span exactly ``rank`` dimensions.
    """
    rng = np.random.default_rng(seed)
    base_w = rng.uniform(0.2, 1.0, (rank, 8))
    base_b = rng.uniform(0.1, 0.5, rank)
    mix = rng.uniform(0.2, 1.0, (hidden - rank, rank))
    w1 = np.concatenate([base_w, mix @ base_w])
    b1 = np.concatenate([base_b, mix @ base_b])
    inits = {"w1": w1, "b1": b1, "w2": rng.standard_normal((4, hidden)), "b2": rng.standard_normal(4)}
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    return _model(nodes, inits, ["N", 8], ["N", 4])


def two_gemm_mlp(seed: int = 0, inputs: int = 12, hidden: int = 10, outputs: int = 5) -> onnx.ModelProto:
    """x[N,inputs] -> Gemm(hidden, bias) -> Relu -> Gemm(outputs, bias) -> y (Gaussian weights)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.standard_normal((hidden, inputs)) / np.sqrt(inputs),
        "b1": 0.1 * rng.standard_normal(hidden),
        "w2": rng.standard_normal((outputs, hidden)) / np.sqrt(hidden),
        "b2": 0.1 * rng.standard_normal(outputs),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    return _model(nodes, inits, ["N", inputs], ["N", outputs])
