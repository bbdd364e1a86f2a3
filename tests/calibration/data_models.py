"""Tiny models and data files for the image and text source tests (Pillow, tokenizers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["WORDS", "image_model", "text_model", "word_tokenizer", "write_image"]

#: The words of :func:`word_tokenizer` (ids 4.. in this order; 0-3 are [PAD], [UNK], [CLS], [SEP]).
WORDS = ("the", "cat", "sat", "on", "mat", "a", "dog", "ran")


def image_model(shape: list[int | str], *, dtype: int = TensorProto.FLOAT, classes: int = 4) -> onnx.ModelProto:
    """x (NCHW or NHWC by ``shape``) -> ReduceMean over H, W -> [N, C] -> MatMul -> y[N, classes]."""
    nhwc = shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4)
    channels = int(shape[3] if nhwc else shape[1])
    weight = np.random.default_rng(0).standard_normal((channels, classes)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)]
    nodes.append(helper.make_node("ReduceMean", ["xf"], ["m"], axes=[1, 2] if nhwc else [2, 3], keepdims=0))
    nodes.append(helper.make_node("MatMul", ["m", "w"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "image",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], classes])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def text_model(vocab: int = 12, seq: int | str = 6, *, extra_input: str | None = None) -> onnx.ModelProto:
    """input_ids/attention_mask/token_type_ids [N, seq] -> embeddings * mask -> MatMul -> Relu -> MatMul -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab, 8)).astype(np.float32), "word_emb"),
        numpy_helper.from_array(rng.standard_normal((2, 8)).astype(np.float32), "type_emb"),
        numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
    ]
    nodes = [
        helper.make_node("Gather", ["word_emb", "input_ids"], ["e"]),
        helper.make_node("Gather", ["type_emb", "token_type_ids"], ["t"]),
        helper.make_node("Add", ["e", "t"], ["h0"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "last"], ["mu"]),
        helper.make_node("Mul", ["h0", "mu"], ["h"]),
        helper.make_node("MatMul", ["h", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    names = ["input_ids", "attention_mask", "token_type_ids"] + ([extra_input] if extra_input else [])
    if extra_input:
        nodes.append(helper.make_node("Identity", [extra_input], ["extra_out"]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", seq]) for n in names]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", seq, 4])]
    if extra_input:
        outputs.append(helper.make_tensor_value_info("extra_out", TensorProto.INT64, ["N", seq]))
    graph = helper.make_graph(nodes, "text", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def word_tokenizer(path: Path, words: tuple[str, ...] = WORDS) -> Path:
    """A WordLevel ``tokenizer.json`` ([CLS] text [SEP], whitespace split) written to ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(path))
    return path


def write_image(path: Path, pixels: np.ndarray, **save: object) -> np.ndarray:
    """Save ``pixels`` (uint8 HxW or HxWxC) with Pillow (format from the suffix) and return them."""
    from PIL import Image

    Image.fromarray(pixels).save(path, **save)
    return pixels
