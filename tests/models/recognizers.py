"""Models for validation tests: outputs with a large shared offset, and a recognizer with a dynamic width.

Trained classifiers often carry a large logit offset shared by all classes (softmax ignores it). A
model that collapses to that offset keeps a cosine near 1 while every prediction changes: these
builders reproduce it deterministically (``collapsed=True`` zeroes the weights that carry the input).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.models.handbuilt import FLOAT, _finish, _init, _vi, _w

__all__ = ["OCR_CLASSES", "OCR_HEIGHT", "offset_classifier", "ocr_macs", "ocr_recognizer"]

OCR_HEIGHT = 16
OCR_CLASSES = 6


def offset_classifier(*, collapsed: bool = False, offset: float = 50.0, seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> Gemm(W[16,10], b) -> logits[N,10], with ``b`` = ``offset`` + small per-class terms."""
    rng = np.random.default_rng(seed)
    weight = _w(rng, 16, 10, fan_in=4)
    bias = (offset + 0.1 * rng.standard_normal(10)).astype(np.float32)
    if collapsed:
        weight = np.zeros_like(weight)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["logits"], name="fc")]
    graph = helper.make_graph(
        nodes,
        "offset_classifier",
        [_vi("x", FLOAT, ["batch", 16])],
        [_vi("logits", FLOAT, ["batch", 10])],
        [_init("W", weight), _init("b", bias)],
    )
    return _finish(graph, 13)


def ocr_recognizer(*, collapsed: bool = False, offset: float = 20.0, seed: int = 0) -> onnx.ModelProto:
    """A CTC-style text recognizer whose width is dynamic: image[batch,1,16,width] -> logits[batch,width/2,6].

    Conv(1->8,3x3,pad1) -> Relu -> MaxPool 2x2 -> Conv(8->16,3x3,pad1) -> Relu -> mean over height ->
    Transpose -> MatMul(16x6) -> Add(bias: ``offset`` for all classes, +1.8 for the blank class 0, so that
    about half the steps of an image read blank).
    """
    rng = np.random.default_rng(seed)
    conv1 = _w(rng, 8, 1, 3, 3, fan_in=9)
    conv2 = _w(rng, 16, 8, 3, 3, fan_in=72)
    head = 3 * _w(rng, 16, OCR_CLASSES, fan_in=16)
    if collapsed:
        conv2 = np.zeros_like(conv2)
    bias = np.full(OCR_CLASSES, offset, np.float32)
    bias[0] += 1.8
    nodes = [
        helper.make_node("Conv", ["image", "conv1_w"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2_w"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("ReduceMean", ["r2"], ["seq"], name="height_mean", axes=[2], keepdims=0),
        helper.make_node("Transpose", ["seq"], ["steps"], name="to_steps", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["steps", "head_w"], ["scores"], name="head"),
        helper.make_node("Add", ["scores", "head_b"], ["logits"], name="head_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "ocr_recognizer",
        [_vi("image", FLOAT, ["batch", 1, OCR_HEIGHT, "width"])],
        [_vi("logits", FLOAT, ["batch", "steps", OCR_CLASSES])],
        [_init("conv1_w", conv1), _init("conv2_w", conv2), _init("head_w", head), _init("head_b", bias)],
    )
    return _finish(graph, 13)


def ocr_macs(width: int) -> int:
    """Exact MACs of :func:`ocr_recognizer` for one image of this width (even)."""
    steps = width // 2
    conv1 = 8 * OCR_HEIGHT * width * 9
    conv2 = 16 * (OCR_HEIGHT // 2) * steps * 8 * 9
    return conv1 + conv2 + steps * OCR_CLASSES * 16
