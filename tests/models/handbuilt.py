"""Hand-built ONNX graphs (``onnx.helper``; no torch needed).

Every builder returns a model checked with ``onnx.checker.check_model(full_check=True)``
that runs in onnxruntime, has a symbolic batch dim ``"N"`` and uses the minimal IR
version for its opset.  Weights come from ``numpy.random.default_rng(seed)``, so every
call returns byte-identical models.  :data:`HELPER_BUILDERS` lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "HELPER_BUILDERS",
    "conv_model",
    "gru_model",
    "if_loop_model",
    "lstm_model",
    "mlp_model",
    "opset18_model",
    "qdq_model",
    "shared_weight_model",
]

FLOAT = TensorProto.FLOAT
PRODUCER = "onnxprune-tests"


# --------------------------------------------------------------------------- #
# helpers for hand-built graphs
# --------------------------------------------------------------------------- #


def _w(rng: np.random.Generator, *shape: int, fan_in: int | None = None) -> np.ndarray:
    """Gaussian float32 weight scaled by 1/sqrt(fan_in) (fan_in defaults to shape[-1])."""
    fan = fan_in if fan_in is not None else shape[-1]
    return (rng.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)


def _init(name: str, value: Any, dtype: Any = None) -> TensorProto:
    """Initializer TensorProto from an array-like."""
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _vi(name: str, elem_type: int, shape: Sequence[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _finish(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """Wrap *graph* into a model at *opset* (minimal IR version) and fully check it."""
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        # IR >= 4 so initializers need not be graph inputs, even for old opsets
        ir_version=max(4, helper.find_min_ir_version_for(opsets)),
        producer_name=PRODUCER,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- #
# hand-built models
# --------------------------------------------------------------------------- #


def mlp_model(opset: int = 13, *, seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> MatMul(W1[16,32]) -> Add(b1) -> Relu -> Gemm(W2[10,32], transB=1, b2) -> y[N,10]."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("W1", _w(rng, 16, 32, fan_in=16)),
        _init("b1", _w(rng, 32, fan_in=32)),
        _init("W2", _w(rng, 10, 32, fan_in=32)),
        _init("b2", _w(rng, 10, fan_in=10)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h_mm"], name="fc1_matmul"),
        helper.make_node("Add", ["h_mm", "b1"], ["h_add"], name="fc1_add"),
        helper.make_node("Relu", ["h_add"], ["h_relu"], name="relu"),
        helper.make_node("Gemm", ["h_relu", "W2", "b2"], ["y"], name="fc2_gemm", transB=1),
    ]
    graph = helper.make_graph(nodes, "mlp", [_vi("x", FLOAT, ["N", 16])], [_vi("y", FLOAT, ["N", 10])], inits)
    return _finish(graph, opset)


def conv_model(opset: int = 13, *, seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(3->8,3x3,pad1,bias) -> Relu -> Conv(8->16,3x3,bias) -> GAP -> Flatten -> Gemm -> y[N,10].

    The Gemm uses ``transB=0`` with a ``[16, 10]`` weight (the MLP model covers transB=1).
    """
    rng = np.random.default_rng(seed)
    inits = [
        _init("conv1_w", _w(rng, 8, 3, 3, 3, fan_in=27)),
        _init("conv1_b", _w(rng, 8, fan_in=8)),
        _init("conv2_w", _w(rng, 16, 8, 3, 3, fan_in=72)),
        _init("conv2_b", _w(rng, 16, fan_in=16)),
        _init("fc_w", _w(rng, 16, 10, fan_in=16)),
        _init("fc_b", _w(rng, 10, fan_in=10)),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "conv1_w", "conv1_b"],
            ["c1"],
            name="conv1",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2_w", "conv2_b"], ["c2"], name="conv2", kernel_shape=[3, 3]),
        helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(nodes, "conv", [_vi("x", FLOAT, ["N", 3, 8, 8])], [_vi("y", FLOAT, ["N", 10])], inits)
    return _finish(graph, opset)


def shared_weight_model(*, seed: int = 0) -> onnx.ModelProto:
    """Weight-aliasing patterns (opset 13), x[N,16] -> y[N,10].

    * ``W_shared`` [16,16] feeds two MatMuls: ``h1 = x@W`` and ``h2 = relu(h1)@W``.
    * A Conv whose weight is ``Identity(conv_w)`` (TorchScript de-dup pattern).
    * A MatMul whose weight [64,10] is the output of a ``Constant`` node.
    """
    rng = np.random.default_rng(seed)
    const_w = _w(rng, 64, 10, fan_in=64)
    inits = [
        _init("W_shared", _w(rng, 16, 16, fan_in=16)),
        _init("img_shape", [-1, 1, 4, 4], np.int64),
        _init("conv_w", _w(rng, 4, 1, 3, 3, fan_in=9)),
        _init("conv_b", _w(rng, 4, fan_in=4)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W_shared"], ["h1"], name="shared_mm1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "W_shared"], ["h2"], name="shared_mm2"),
        helper.make_node("Add", ["h1", "h2"], ["s"], name="add"),
        helper.make_node("Reshape", ["s", "img_shape"], ["img"], name="to_img"),
        helper.make_node("Identity", ["conv_w"], ["conv_w_alias"], name="conv_w_identity"),
        helper.make_node(
            "Conv",
            ["img", "conv_w_alias", "conv_b"],
            ["c"],
            name="conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c"], ["cr"], name="relu2"),
        helper.make_node("Flatten", ["cr"], ["f"], name="flatten", axis=1),
        helper.make_node(
            "Constant",
            [],
            ["W_const"],
            name="const_w",
            value=numpy_helper.from_array(const_w, "W_const_value"),
        ),
        helper.make_node("MatMul", ["f", "W_const"], ["y"], name="const_mm"),
    ]
    graph = helper.make_graph(
        nodes, "shared_weights", [_vi("x", FLOAT, ["N", 16])], [_vi("y", FLOAT, ["N", 10])], inits
    )
    return _finish(graph, 13)


def _rnn_model(kind: str, seed: int) -> onnx.ModelProto:
    """x[5,N,8] -> LSTM/GRU(hidden 16) -> Squeeze(Y, axis 1) -> MatMul(W_out[16,4]) -> y[5,N,4]."""
    rng = np.random.default_rng(seed)
    hidden, in_size, seq = 16, 8, 5
    gates = 4 if kind == "LSTM" else 3
    inits = [
        _init("W", _w(rng, 1, gates * hidden, in_size, fan_in=in_size)),
        _init("R", _w(rng, 1, gates * hidden, hidden, fan_in=hidden)),
        _init("B", _w(rng, 1, 2 * gates * hidden, fan_in=hidden)),
        _init("squeeze_axes", [1], np.int64),
        _init("W_out", _w(rng, hidden, 4, fan_in=hidden)),
    ]
    attrs: dict[str, Any] = {"hidden_size": hidden}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1  # what torch.nn.GRU corresponds to
    nodes = [
        helper.make_node(kind, ["x", "W", "R", "B"], ["Y"], name=kind.lower(), **attrs),
        helper.make_node("Squeeze", ["Y", "squeeze_axes"], ["Y_sq"], name="squeeze"),
        helper.make_node("MatMul", ["Y_sq", "W_out"], ["y"], name="head_mm"),
    ]
    graph = helper.make_graph(
        nodes,
        kind.lower(),
        [_vi("x", FLOAT, [seq, "N", in_size])],
        [_vi("y", FLOAT, [seq, "N", 4])],
        inits,
    )
    return _finish(graph, 13)


def lstm_model(*, seed: int = 0) -> onnx.ModelProto:
    """LSTM (W/R/B initializers, must stay untouched) followed by a prunable MatMul head."""
    return _rnn_model("LSTM", seed)


def gru_model(*, seed: int = 0) -> onnx.ModelProto:
    """GRU (W/R/B initializers, linear_before_reset=1) followed by a prunable MatMul head."""
    return _rnn_model("GRU", seed)


def if_loop_model(*, cond_input: bool = True, seed: int = 0) -> onnx.ModelProto:
    """Control flow with weights in and around subgraphs (opset 13), x[N,8] -> y[N,8].

    * main graph: ``h0 = x @ W0``;
    * ``If`` on ``cond`` (a bool scalar graph input, or ``ReduceSum(x) > 0`` when
      *cond_input* is False): then-branch ``h0 @ W_then`` with ``W_then`` a
      *branch-local* initializer, else-branch ``h0 @ W_else`` with ``W_else`` an
      *outer-scope* (main graph) initializer;
    * ``Loop`` (trip count initializer ``M`` = 3, no loop condition) whose body
      computes ``h = tanh(h @ W_loop)`` with ``W_loop`` an outer-scope initializer.
    """
    rng = np.random.default_rng(seed)
    w_then = _w(rng, 8, 8, fan_in=8)
    inits = [
        _init("W0", _w(rng, 8, 8, fan_in=8)),
        _init("W_else", _w(rng, 8, 8, fan_in=8)),
        _init("W_loop", _w(rng, 8, 8, fan_in=8)),
        _init("M", np.int64(3)),
    ]
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["h0", "W_then"], ["then_out"], name="then_mm")],
        "then_branch",
        [],
        [_vi("then_out", FLOAT, ["N", 8])],
        [_init("W_then", w_then)],
    )
    else_graph = helper.make_graph(
        [helper.make_node("MatMul", ["h0", "W_else"], ["else_out"], name="else_mm")],
        "else_branch",
        [],
        [_vi("else_out", FLOAT, ["N", 8])],
    )
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W_loop"], ["body_mm"], name="loop_mm"),
            helper.make_node("Tanh", ["body_mm"], ["h_out"], name="loop_tanh"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
        ],
        "loop_body",
        [
            _vi("iter_num", TensorProto.INT64, []),
            _vi("cond_in", TensorProto.BOOL, []),
            _vi("h_in", FLOAT, ["N", 8]),
        ],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("h_out", FLOAT, ["N", 8])],
    )
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h0"], name="main_mm")]
    inputs = [_vi("x", FLOAT, ["N", 8])]
    if cond_input:
        inputs.append(_vi("cond", TensorProto.BOOL, []))
    else:
        inits.append(_init("zero", np.float32(0.0)))
        nodes += [
            helper.make_node("ReduceSum", ["x"], ["x_sum"], name="reduce_sum", keepdims=0),
            helper.make_node("Greater", ["x_sum", "zero"], ["cond"], name="greater"),
        ]
    nodes += [
        helper.make_node("If", ["cond"], ["if_out"], name="if", then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Loop", ["M", "", "if_out"], ["y"], name="loop", body=body),
    ]
    graph = helper.make_graph(nodes, "if_loop", inputs, [_vi("y", FLOAT, ["N", 8])], inits)
    return _finish(graph, 13)


def qdq_model(*, seed: int = 0) -> onnx.ModelProto:
    """QDQ-quantized conv plus dynamic-quant and float MatMuls (opset 13), x[N,3,8,8] -> y[N,16].

    * ``x -> QuantizeLinear -> DequantizeLinear -> Conv`` whose weight is
      ``DequantizeLinear(conv_w_q int8 [8,3,3,3], per-channel scale, zp, axis=0)``
      (the int8 weight must NOT be pruned as if it were float);
    * ``Relu -> Q -> DQ -> GlobalAveragePool -> Flatten -> f[N,8]``;
    * ``DynamicQuantizeLinear(f) -> MatMulInteger(fc_w_q int8 [8,16])`` rescaled to float;
    * ``MatMul(f, fc_w_float [8,16])`` — the one plain float weight that is safely prunable;
    * ``y = dynamic_branch + float_branch``.
    """
    rng = np.random.default_rng(seed)
    conv_w = _w(rng, 8, 3, 3, 3, fan_in=27)
    conv_scale = (np.abs(conv_w).reshape(8, -1).max(axis=1) / 127.0).astype(np.float32)
    conv_w_q = np.clip(np.round(conv_w / conv_scale[:, None, None, None]), -127, 127).astype(np.int8)
    fc_w = _w(rng, 8, 16, fan_in=8)
    fc_scale = np.float32(np.abs(fc_w).max() / 127.0)
    fc_w_q = np.clip(np.round(fc_w / fc_scale), -127, 127).astype(np.int8)
    inits = [
        _init("x_scale", np.float32(0.05)),
        _init("x_zp", np.uint8(128)),
        _init("conv_w_q", conv_w_q),
        _init("conv_w_scale", conv_scale),
        _init("conv_w_zp", np.zeros(8, np.int8)),
        _init("conv_b", _w(rng, 8, fan_in=8)),
        _init("act_scale", np.float32(0.02)),
        _init("act_zp", np.uint8(0)),
        _init("fc_w_q", fc_w_q),
        _init("fc_w_q_scale", fc_scale),
        _init("fc_w_q_zp", np.int8(0)),
        _init("fc_w_float", _w(rng, 8, 16, fan_in=8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_quant"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_dequant"),
        helper.make_node(
            "DequantizeLinear",
            ["conv_w_q", "conv_w_scale", "conv_w_zp"],
            ["conv_w_dq"],
            name="conv_w_dequant",
            axis=0,
        ),
        helper.make_node(
            "Conv",
            ["x_dq", "conv_w_dq", "conv_b"],
            ["c"],
            name="qconv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "act_scale", "act_zp"], ["r_q"], name="act_quant"),
        helper.make_node("DequantizeLinear", ["r_q", "act_scale", "act_zp"], ["r_dq"], name="act_dequant"),
        helper.make_node("GlobalAveragePool", ["r_dq"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten", axis=1),
        # dynamic-quantization branch
        helper.make_node("DynamicQuantizeLinear", ["f"], ["f_q", "f_scale", "f_zp"], name="dyn_quant"),
        helper.make_node("MatMulInteger", ["f_q", "fc_w_q", "f_zp", "fc_w_q_zp"], ["mm_int"], name="mm_integer"),
        helper.make_node("Cast", ["mm_int"], ["mm_int_f"], name="cast", to=FLOAT),
        helper.make_node("Mul", ["f_scale", "fc_w_q_scale"], ["mm_scale"], name="scale_mul"),
        helper.make_node("Mul", ["mm_int_f", "mm_scale"], ["dyn_out"], name="rescale"),
        # plain float branch (prunable)
        helper.make_node("MatMul", ["f", "fc_w_float"], ["float_out"], name="float_mm"),
        helper.make_node("Add", ["dyn_out", "float_out"], ["y"], name="sum"),
    ]
    graph = helper.make_graph(nodes, "qdq", [_vi("x", FLOAT, ["N", 3, 8, 8])], [_vi("y", FLOAT, ["N", 16])], inits)
    return _finish(graph, 13)


def opset18_model(*, seed: int = 0) -> onnx.ModelProto:
    """Opset-18 forms, x[N,3,8,8] -> y[N,3,4].

    Conv(3->8,3x3,pad1) -> Relu -> ReduceMean(axes as *input* [2,3], keepdims=0)
    -> MatMul(W[8,12]) -> Reshape(shape [-1,3,4], allowzero=1).
    """
    rng = np.random.default_rng(seed)
    inits = [
        _init("conv_w", _w(rng, 8, 3, 3, 3, fan_in=27)),
        _init("conv_b", _w(rng, 8, fan_in=8)),
        _init("reduce_axes", [2, 3], np.int64),
        _init("mm_w", _w(rng, 8, 12, fan_in=8)),
        _init("out_shape", [-1, 3, 4], np.int64),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "conv_w", "conv_b"],
            ["c"],
            name="conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r", "reduce_axes"], ["m"], name="reduce_mean", keepdims=0),
        helper.make_node("MatMul", ["m", "mm_w"], ["mm"], name="matmul"),
        helper.make_node("Reshape", ["mm", "out_shape"], ["y"], name="reshape", allowzero=1),
    ]
    graph = helper.make_graph(
        nodes, "opset18", [_vi("x", FLOAT, ["N", 3, 8, 8])], [_vi("y", FLOAT, ["N", 3, 4])], inits
    )
    return _finish(graph, 18)


#: name -> zero-argument builder, for parametrised tests and benchmarks.
HELPER_BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp_model,
    "conv": conv_model,
    "shared_weight": shared_weight_model,
    "lstm": lstm_model,
    "gru": gru_model,
    "if_loop": if_loop_model,
    "if_loop_computed_cond": lambda: if_loop_model(cond_input=False),
    "qdq": qdq_model,
    "opset18": opset18_model,
}
