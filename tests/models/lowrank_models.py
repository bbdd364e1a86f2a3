"""One-layer ONNX graphs for the low-rank pass (``onnx.helper``; no torch needed).

Every builder returns a checked model with a symbolic batch ``"N"``, input ``"x"`` and output
``"y"``. :func:`correlated_inputs` draws strongly anisotropic inputs (the case where whitening
with the data's Gram matters).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["conv_layer", "correlated_inputs", "gemm_layer", "matmul_layer", "shared_matmul", "LAYERS"]

F = TensorProto.FLOAT


def _finish(nodes: list, inputs: list, inits: list, opset: int = 17) -> onnx.ModelProto:
    rank = len(inputs[0].type.tensor_type.shape.dim)
    output = helper.make_tensor_value_info("y", F, ["N", *(f"d{i}" for i in range(1, rank))])
    graph = helper.make_graph(nodes, "lowrank", inputs, [output], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _weight(rng: np.random.Generator, *shape: int, fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def matmul_layer(n: int = 48, m: int = 40, *, seq: int = 5, seed: int = 0) -> onnx.ModelProto:
    """``y = x[N, seq, n] · W[n, m] + b`` (the transformer Linear pattern)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["y"])]
    inits = [_init("W", _weight(rng, n, m, fan_in=n)), _init("b", rng.standard_normal(m))]
    return _finish(nodes, [helper.make_tensor_value_info("x", F, ["N", seq, n])], inits)


def gemm_layer(
    n: int = 48,
    m: int = 40,
    *,
    trans_a: int = 0,
    trans_b: int = 1,
    alpha: float = 1.0,
    beta: float = 1.0,
    seed: int = 0,
) -> onnx.ModelProto:
    """``y = Gemm(x, W, c)`` with any ``transA``/``transB``/``alpha``/``beta`` (transA: x is ``[n, N]``)."""
    rng = np.random.default_rng(seed)
    w = _weight(rng, m, n, fan_in=n) if trans_b else _weight(rng, n, m, fan_in=n)
    node = helper.make_node(
        "Gemm", ["x", "W", "c"], ["y"], name="gemm", transA=trans_a, transB=trans_b, alpha=alpha, beta=beta
    )
    shape = [n, "N"] if trans_a else ["N", n]
    inits = [_init("W", w), _init("c", rng.standard_normal(m))]
    return _finish([node], [helper.make_tensor_value_info("x", F, shape)], inits)


def conv_layer(
    cin: int = 12,
    cout: int = 24,
    *,
    kernel: tuple[int, ...] = (3, 3),
    image: int = 9,
    batchnorm: bool = False,
    seed: int = 0,
    **attrs: object,
) -> onnx.ModelProto:
    """A Conv (any dims/attributes, bias), optionally followed by a BatchNormalization with spread scales."""
    rng = np.random.default_rng(seed)
    fan = cin * int(np.prod(kernel)) // int(attrs.get("group", 1))  # type: ignore[call-overload]
    w = _weight(rng, cout, cin // int(attrs.get("group", 1)), *kernel, fan_in=fan)  # type: ignore[call-overload]
    inits = [_init("W", w), _init("bias", 0.1 * rng.standard_normal(cout))]
    nodes = [helper.make_node("Conv", ["x", "W", "bias"], ["c" if batchnorm else "y"], name="conv", **attrs)]
    if batchnorm:
        gamma = np.exp(rng.uniform(-3, 3, cout))
        inits += [
            _init("gamma", gamma),
            _init("beta", rng.standard_normal(cout)),
            _init("mean", 0.1 * rng.standard_normal(cout)),
            _init("var", rng.uniform(0.5, 2.0, cout)),
        ]
        nodes.append(helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="bn"))
    spatial = [image] * len(kernel)
    return _finish(nodes, [helper.make_tensor_value_info("x", F, ["N", cin, *spatial])], inits)


def shared_matmul(n: int = 32, m: int = 32, *, seed: int = 0) -> onnx.ModelProto:
    """One weight read by two MatMuls, the second through an ``Identity`` alias (TorchScript de-dup)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["r"]),
        helper.make_node("Identity", ["W"], ["W_alias"]),
        helper.make_node("MatMul", ["r", "W_alias"], ["y"], name="mm2"),
    ]
    return _finish(nodes, [helper.make_tensor_value_info("x", F, ["N", n])], [_init("W", _weight(rng, n, m, fan_in=n))])


#: name → builder of every one-layer case that factorizes (used by the full-rank exactness test).
LAYERS = {
    "matmul_3d": lambda: matmul_layer(),
    "gemm_transB": lambda: gemm_layer(trans_b=1, alpha=0.7, beta=1.3),
    "gemm_noTransB": lambda: gemm_layer(trans_b=0),
    "gemm_transA": lambda: gemm_layer(trans_a=1, trans_b=0),
    "conv_3x3_pad_stride": lambda: conv_layer(pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2]),
    "conv_same_upper": lambda: conv_layer(auto_pad="SAME_UPPER", strides=[2, 2]),
    "conv_1x1": lambda: conv_layer(kernel=(1, 1)),
    "conv_1d": lambda: conv_layer(kernel=(5,), pads=[2, 2], image=16),
    "conv_bn": lambda: conv_layer(batchnorm=True, pads=[1, 1, 1, 1]),
    "shared": lambda: shared_matmul(),
}


def correlated_inputs(
    samples: int, shape: tuple[int, ...], *, axis: int = -1, decay: float = 0.85, seed: int = 0
) -> np.ndarray:
    """Inputs whose ``axis`` (of ``shape``) has a fast-decaying spectrum in a fixed random basis, plus an offset."""
    rng = np.random.default_rng(seed)
    features = shape[axis]
    basis = np.linalg.qr(np.random.default_rng(1234).standard_normal((features, features)))[0]
    z = np.moveaxis(rng.standard_normal((samples, *shape)), axis if axis < 0 else axis + 1, -1)
    mixed = (z * decay ** np.arange(features)) @ basis.T + 0.3
    return np.moveaxis(mixed, -1, axis if axis < 0 else axis + 1).astype(np.float32)
