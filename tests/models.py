"""Small, deterministic ONNX model builders for the onnxprune test-suite and benchmarks.

Two families of builders live here:

* Hand-built graphs (``onnx.helper``; no torch needed): :func:`mlp_model`,
  :func:`conv_model`, :func:`shared_weight_model`, :func:`lstm_model`,
  :func:`gru_model`, :func:`if_loop_model`, :func:`qdq_model`,
  :func:`opset18_model` (all listed in :data:`HELPER_BUILDERS`).  Every one is
  checked with ``onnx.checker.check_model(full_check=True)``, runs in
  onnxruntime, has a symbolic batch dim ``"N"`` and uses the minimal IR version
  for its opset.  Weights come from ``numpy.random.default_rng(seed)``, so
  every call returns byte-identical models.

* Models exported from plain torch modules: :class:`TinyCNN`,
  :class:`ResNet18Like`, :class:`MobileNetV2Like`, :class:`BertLikeEncoder`
  (real ``nn.Module`` subclasses, created lazily through a module
  ``__getattr__`` so that importing this file does not import torch), the
  generic :func:`torch_export` helper and the convenience builders
  :func:`tiny_cnn_onnx`, :func:`resnet18_like_onnx`,
  :func:`mobilenetv2_like_onnx`, :func:`bert_like_onnx`.

:func:`random_inputs` builds feeds for any of these from the graph input specs.

Exporter facts (measured with torch 2.13.0 / onnxscript 0.7.2 / onnx 1.23):

* ``dynamo=True`` with ``opset_version=None`` emits **opset 20** (IR 10);
  ``opset_version=18`` works.  Below 18 the exporter builds at 18 and
  down-converts with the onnx C API; when that fails (TinyCNN: ReduceMean with
  an axes input, Relu 14->13) it only logs and returns opset 18, so
  :func:`torch_export` raises instead.  ``dynamo=False`` honours 13..18+.
* Both exporters fold eval-mode BatchNorm into the preceding Conv.  The
  TorchScript exporter names the folded tensors ``onnx::Conv_<n>``; dynamo
  keeps the torch parameter name (``features.0.weight``) for the *folded*
  values and adds ``<name>_bias`` — names do not imply torch values.
* ``nn.Linear`` on 2-D input -> ``Gemm(transB=1)`` with the ``[out, in]``
  parameter; on 3-D input (BERT) both exporters emit ``MatMul`` with a
  constant-folded, pre-transposed ``[in, out]`` initializer (``onnx::MatMul_*``
  / ``val_*``) followed by ``Add(bias)``.  A bias-free Linear also becomes such
  a MatMul in the TorchScript exporter, even for tied weights (no sharing).
* De-duplication: the TorchScript exporter de-dups initializers **by value**
  (e.g. equal all-zero biases, all-one LayerNorm gammas) and re-creates the
  duplicates as ``Identity(first)`` nodes whose output has the duplicate's
  name.  Dynamo de-dups by value too, but makes all consumers read the same
  initializer name (no Identity), and all-zero Linear biases disappear (Gemm
  with 2 inputs).  To keep exported models trained-looking, the torch modules
  here randomise BatchNorm/LayerNorm stats and keep non-zero biases
  (``random_norm_stats=True``); with that no Identity nodes appear.
* Constants: the TorchScript exporter emits ``Constant`` *nodes* for scalars
  and shape pieces (ReLU6 -> ``Clip(x, Constant 0, Constant 6)`` per Clip,
  reshape/shape arithmetic in BERT); weights are always initializers.  Dynamo
  emits no Constant nodes: small constants are shared initializers (``val_*``,
  ``min_val_cast``/``max_val_cast`` shared by all 35 Clips of MobileNetV2).
* Op differences: TorchScript@13 decomposes LayerNorm (ReduceMean/Sub/Pow/
  Sqrt/Div/Mul/Add with gamma/beta as Mul/Add initializers) and GELU (Erf) and
  uses GlobalAveragePool+Flatten; dynamo@20 emits LayerNormalization, Gelu,
  ReduceMean(axes input)+Reshape, and Reshape with ``allowzero=1``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "HELPER_BUILDERS",
    "BertLikeEncoder",
    "MobileNetV2Like",
    "ResNet18Like",
    "TinyCNN",
    "bert_like_onnx",
    "conv_model",
    "gru_model",
    "if_loop_model",
    "lstm_model",
    "mlp_model",
    "mobilenetv2_like_onnx",
    "opset18_model",
    "qdq_model",
    "random_inputs",
    "resnet18_like_onnx",
    "seeded",
    "shared_weight_model",
    "tiny_cnn_onnx",
    "torch_export",
]

if TYPE_CHECKING:  # real nn.Module subclasses, built lazily by the module __getattr__ below
    TinyCNN: type
    ResNet18Like: type
    MobileNetV2Like: type
    BertLikeEncoder: type

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


# --------------------------------------------------------------------------- #
# random inputs
# --------------------------------------------------------------------------- #


def _infer_vocab(model: onnx.ModelProto, name: str) -> int | None:
    """Smallest first dim of an initializer that a top-level Gather indexes with *name*."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    sizes = [
        shapes[n.input[0]][0]
        for n in model.graph.node
        if n.op_type == "Gather"
        and len(n.input) > 1
        and n.input[1] == name
        and n.input[0] in shapes
        and shapes[n.input[0]]
    ]
    return min(sizes) if sizes else None


def random_inputs(
    model: onnx.ModelProto, batch: int = 2, seed: int = 0, *, vocab: int | None = None
) -> dict[str, np.ndarray]:
    """Random feeds for every real graph input of *model*.

    Symbolic/unknown dims become *batch*; floats are standard normal; bools are
    ``True``; integer inputs are uniform in ``[0, vocab)``, where *vocab* defaults
    to the row count of the embedding table the input indexes (via ``Gather``),
    else 1000.
    """
    rng = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in init_names:  # keep_initializers_as_inputs
            continue
        ttype = inp.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        shape = tuple(d.dim_value if d.HasField("dim_value") else batch for d in ttype.shape.dim)
        if dtype == np.bool_:
            feeds[inp.name] = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(dtype, np.integer):
            high = min(vocab or _infer_vocab(model, inp.name) or 1000, int(np.iinfo(dtype).max) + 1)
            feeds[inp.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


# --------------------------------------------------------------------------- #
# torch export
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence exporter deprecation warnings and the 'torchvision is not installed' log spam."""
    logger = logging.getLogger("torch.onnx")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old)


def torch_export(
    module: Any,
    example_inputs: Sequence[Any],
    *,
    dynamo: bool,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Export *module* with ``torch.onnx.export`` and return the loaded ModelProto.

    * ``dynamo=False``: TorchScript exporter at *opset* (default 13); with
      *dynamic_batch* every input and output gets ``dynamic_axes={0: "N"}``.
    * ``dynamo=True``: torch.export-based exporter at *opset* (``None`` = the
      exporter default, opset 20 with torch 2.13); with *dynamic_batch* every
      input gets ``dynamic_shapes={0: Dim("N")}`` (use an example batch >= 2,
      torch.export specialises 0/1).  Saved with ``external_data=False``.

    The model is written to a temporary file and read back with ``onnx.load``
    (external data, if any, is loaded too), so all weights are initializers.
    Input names default to ``x`` / ``x0, x1, ...``, output names to ``y`` /
    ``y0, y1, ...``.
    """
    import torch

    module = module.eval()
    args = tuple(example_inputs)
    if input_names is None:
        input_names = ["x"] if len(args) == 1 else [f"x{i}" for i in range(len(args))]
    if output_names is None:
        with torch.no_grad():
            out = module(*args)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        output_names = ["y"] if n_out == 1 else [f"y{i}" for i in range(n_out)]
    input_names, output_names = list(input_names), list(output_names)

    with tempfile.TemporaryDirectory(prefix="onnxprune_export_") as tmp, _quiet_export():
        path = os.path.join(tmp, "model.onnx")
        if dynamo:
            dynamic_shapes = None
            if dynamic_batch:
                batch_dim = torch.export.Dim("N")
                dynamic_shapes = tuple({0: batch_dim} for _ in args)
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
            program.save(path, external_data=False)
        else:
            dynamic_axes = {name: {0: "N"} for name in input_names + output_names} if dynamic_batch else None
            torch.onnx.export(
                module,
                args,
                path,
                dynamo=False,
                opset_version=13 if opset is None else opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        model = onnx.load(path, load_external_data=True)
    if dynamo and opset is not None:
        got = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if got != opset:
            # The dynamo exporter builds at >= 18 and down-converts with the onnx C API;
            # when that fails it only logs and returns opset 18 (happens e.g. for
            # ReduceMean with an axes input -> 13/17, or Relu 14 -> 13).
            raise RuntimeError(
                f"dynamo exporter produced opset {got}, not the requested {opset}; "
                "use opset=None (exporter default, 20) or an opset >= 18 with dynamo=True"
            )
    return model


# --------------------------------------------------------------------------- #
# plain torch modules (torch imported lazily so the module imports without torch)
# --------------------------------------------------------------------------- #


def _torch_nn() -> Any:
    import torch.nn as nn

    return nn


def _randomize_norms(module: Any) -> None:
    """Give BatchNorm/LayerNorm 'trained-looking' non-trivial stats/affine params (in place)."""
    import torch

    nn = _torch_nn()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.05)
                m.bias.normal_(0.0, 0.05)


def _build_tiny_cnn(torch: Any, nn: Any) -> type:
    class TinyCNN(nn.Module):
        """Conv(3->8)+BN+ReLU, Conv(8->16,s2)+BN+ReLU, avgpool, Linear(16->32)+ReLU, Linear(32->classes).

        Input [N,3,H,W] (16x16 in the builders).  Constructed in eval mode.
        """

        def __init__(self, num_classes: int = 10, random_norm_stats: bool = True) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False),
                nn.BatchNorm2d(8),
                nn.ReLU(inplace=True),
                nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(16),
                nn.ReLU(inplace=True),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, num_classes)
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, x: Any) -> Any:
            x = torch.flatten(self.pool(self.features(x)), 1)
            return self.fc2(torch.relu(self.fc1(x)))

    return TinyCNN


def _build_resnet18(torch: Any, nn: Any) -> type:
    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18Like(nn.Module):
        """torchvision-style ResNet-18 ([2,2,2,2] BasicBlocks) with configurable base width.

        Stem conv7x7/2 + BN + ReLU + maxpool3x3/2; stages of width w,2w,4w,8w;
        1x1 conv+BN downsample; global avgpool; fc.  Constructed in eval mode.
        """

        def __init__(self, num_classes: int = 10, width: int = 64, random_norm_stats: bool = True) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            layers = []
            inplanes = width
            for i, blocks in enumerate([2, 2, 2, 2]):
                planes = width * 2**i
                stride = 1 if i == 0 else 2
                stage = [BasicBlock(inplanes, planes, stride)]
                stage += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
                layers.append(nn.Sequential(*stage))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18Like


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _build_mobilenetv2(torch: Any, nn: Any) -> type:
    def conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1) -> Any:
        return nn.Sequential(
            nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
            super().__init__()
            hidden = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == oup
            layers = []
            if expand_ratio != 1:
                layers.append(conv_bn_relu6(inp, hidden, 1))
            layers += [
                conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, oup, 1, bias=False),  # linear bottleneck
                nn.BatchNorm2d(oup),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2Like(nn.Module):
        """torchvision-style MobileNetV2 (standard t,c,n,s table, ReLU6, depthwise convs).

        Constructed in eval mode (Dropout inactive, BN uses running stats).
        """

        SETTINGS = [
            # t, c, n, s
            [1, 16, 1, 1],
            [6, 24, 2, 2],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]

        def __init__(self, num_classes: int = 10, width_mult: float = 1.0, random_norm_stats: bool = True) -> None:
            super().__init__()
            input_channel = _make_divisible(32 * width_mult)
            self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
            features = [conv_bn_relu6(3, input_channel, 3, stride=2)]
            for t, c, n, s in self.SETTINGS:
                output_channel = _make_divisible(c * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                    input_channel = output_channel
            features.append(conv_bn_relu6(input_channel, self.last_channel, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, x: Any) -> Any:
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2Like


def _build_bert(torch: Any, nn: Any) -> type:
    import math

    class SelfAttention(nn.Module):
        def __init__(self, hidden: int, heads: int) -> None:
            super().__init__()
            self.heads, self.head_dim = heads, hidden // heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.out = nn.Linear(hidden, hidden)

        def _split(self, t: Any) -> Any:
            n, s, _ = t.shape
            return t.reshape(n, s, self.heads, self.head_dim).transpose(1, 2)

        def forward(self, x: Any) -> Any:
            n, s, h = x.shape
            q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
            return self.out(ctx.transpose(1, 2).reshape(n, s, h))

    class EncoderLayer(nn.Module):
        def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
            super().__init__()
            self.attention = SelfAttention(hidden, heads)
            self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
            self.fc1 = nn.Linear(hidden, intermediate)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(intermediate, hidden)
            self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x: Any) -> Any:
            x = self.ln1(x + self.attention(x))
            return self.ln2(x + self.fc2(self.act(self.fc1(x))))

    class BertLikeEncoder(nn.Module):
        """BERT-style encoder: token+position embeddings, LayerNorm, N post-LN layers.

        Input int64 token ids [N, seq]; output hidden states [N, seq, hidden].
        Attention is written by hand (Linear q/k/v, matmul/softmax, output Linear).
        Constructed in eval mode.
        """

        def __init__(
            self,
            vocab: int = 1000,
            hidden: int = 256,
            layers: int = 4,
            heads: int = 4,
            intermediate: int = 1024,
            seq: int = 128,
            random_norm_stats: bool = True,
        ) -> None:
            super().__init__()
            self.seq = seq
            self.word_embeddings = nn.Embedding(vocab, hidden)
            self.position_embeddings = nn.Embedding(seq, hidden)
            self.emb_ln = nn.LayerNorm(hidden, eps=1e-12)
            self.layers = nn.ModuleList(EncoderLayer(hidden, heads, intermediate) for _ in range(layers))
            with torch.no_grad():
                self.word_embeddings.weight.normal_(0.0, 0.02)
                self.position_embeddings.weight.normal_(0.0, 0.02)
            if random_norm_stats:
                _randomize_norms(self)
            self.eval()

        def forward(self, input_ids: Any) -> Any:
            # the whole table: input length must equal ``seq`` (keeps the graph free of
            # Shape/Slice ops and the sequence dim static in both exporters)
            pos = self.position_embeddings.weight
            x = self.emb_ln(self.word_embeddings(input_ids) + pos)
            for layer in self.layers:
                x = layer(x)
            return x

    return BertLikeEncoder


_CLASS_FACTORIES: dict[str, Callable[[Any, Any], type]] = {
    "TinyCNN": _build_tiny_cnn,
    "ResNet18Like": _build_resnet18,
    "MobileNetV2Like": _build_mobilenetv2,
    "BertLikeEncoder": _build_bert,
}
_CLASS_CACHE: dict[str, type] = {}


def _module_class(name: str) -> type:
    """The (cached) nn.Module subclass *name*; imports torch on first use."""
    if name not in _CLASS_CACHE:
        import torch

        _CLASS_CACHE[name] = _CLASS_FACTORIES[name](torch, torch.nn)
    return _CLASS_CACHE[name]


def __getattr__(name: str) -> type:
    """PEP 562 hook: ``from tests.models import ResNet18Like`` builds the class lazily,
    so importing this module does not import torch."""
    if name in _CLASS_FACTORIES:
        return _module_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- #
# convenience builders for exported models
# --------------------------------------------------------------------------- #


def seeded(seed: int, make: Callable[[], Any]) -> Any:
    """Run *make* under ``torch.manual_seed(seed)`` without disturbing the global RNG.

    ``seeded(0, lambda: ResNet18Like(10, 64))`` re-creates exactly the module that
    ``resnet18_like_onnx(seed=0)`` exported (for comparisons against torch).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


_EXPORT_CACHE: dict[tuple[Any, ...], onnx.ModelProto] = {}


def _cached_export(builder: Callable[..., onnx.ModelProto]) -> Callable[..., onnx.ModelProto]:
    """Memoise an export builder per process; every call returns an independent copy."""
    sig = inspect.signature(builder)

    @functools.wraps(builder)
    def wrapper(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        key = (builder.__name__, *sorted(bound.arguments.items()))
        if key not in _EXPORT_CACHE:
            _EXPORT_CACHE[key] = builder(*bound.args, **bound.kwargs)
        model = onnx.ModelProto()
        model.CopyFrom(_EXPORT_CACHE[key])
        return model

    return wrapper


def _image_export(
    cls_name: str,
    ctor_args: tuple[Any, ...],
    dynamo: bool,
    opset: int | None,
    image: int,
    batch: int,
    seed: int,
    dynamic_batch: bool,
) -> onnx.ModelProto:
    import torch

    module = seeded(seed, lambda: _module_class(cls_name)(*ctor_args))
    x = seeded(seed + 1, lambda: torch.randn(batch, 3, image, image))
    return torch_export(module, (x,), dynamo=dynamo, opset=opset, dynamic_batch=dynamic_batch)


@_cached_export
def tiny_cnn_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    image: int = 16,
    *,
    num_classes: int = 10,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`TinyCNN`, input "x" [N,3,image,image] -> "y" [N,num_classes].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    return _image_export("TinyCNN", (num_classes,), dynamo, opset, image, batch, seed, dynamic_batch)


@_cached_export
def resnet18_like_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    image: int = 224,
    *,
    num_classes: int = 10,
    width: int = 64,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`ResNet18Like`, input "x" [N,3,image,image] -> "y" [N,num_classes].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    return _image_export("ResNet18Like", (num_classes, width), dynamo, opset, image, batch, seed, dynamic_batch)


@_cached_export
def mobilenetv2_like_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    image: int = 224,
    *,
    num_classes: int = 10,
    width_mult: float = 1.0,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`MobileNetV2Like`, input "x" [N,3,image,image] -> "y" [N,num_classes].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    return _image_export("MobileNetV2Like", (num_classes, width_mult), dynamo, opset, image, batch, seed, dynamic_batch)


@_cached_export
def bert_like_onnx(
    dynamo: bool = False,
    opset: int | None = None,
    *,
    vocab: int = 1000,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    intermediate: int = 1024,
    seq: int = 128,
    batch: int = 2,
    seed: int = 0,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Exported :class:`BertLikeEncoder`, input "input_ids" int64 [N,seq] -> "hidden" [N,seq,hidden].

    ``opset=None`` means 13 for the TorchScript exporter and the exporter's
    default (20) for dynamo.  Cached per process (each call returns a copy).
    """
    import torch

    module = seeded(seed, lambda: _module_class("BertLikeEncoder")(vocab, hidden, layers, heads, intermediate, seq))
    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen, dtype=torch.int64)
    return torch_export(
        module,
        (ids,),
        dynamo=dynamo,
        opset=opset,
        input_names=["input_ids"],
        output_names=["hidden"],
        dynamic_batch=dynamic_batch,
    )
