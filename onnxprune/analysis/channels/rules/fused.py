"""onnxruntime's fused transformer ops (``com.microsoft``), as ``optimize_model(..., model_type="bert")`` emits them.

* ``Attention`` (packed QKV weight): consumer of the hidden channels, producer of a new group of
  ``num_heads * head_size`` channels removed in whole heads. The packed weight's columns (and the
  bias) carry the heads three times, Q|K|V: the rule gives the weight value that layout, so the
  ordinary record/mask/shrink executors slice the same heads out of the three column blocks.
* ``MultiHeadAttention``: couples the Q, K and V inputs head by head; the output carries V's layout.
* ``GroupQueryAttention``: blocked (removing a KV head takes its whole group of query heads).
* ``SkipLayerNormalization``/``SkipSimplifiedLayerNormalization``: a residual add (input + skip)
  followed by a norm over the channels (inexact); ``EmbedLayerNormalization``: a producer of the
  hidden channels (the embedding tables' columns), then a norm (inexact).
* ``BiasGelu``/``FastGelu``/``BiasAdd``: broadcasting ops with a bias; ``Gelu``/``QuickGelu``: unary;
  ``FusedMatMul`` without transposes: a MatMul; ``SimplifiedLayerNormalization`` (RMSNorm, ONNX
  domain in onnxruntime): a LayerNormalization without bias.

Every other ``com.microsoft`` op is blocked by the graph walk ("no channel rule").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxprune.analysis.channels.layout import Layout
from onnxprune.analysis.channels.rules._common import attr_int, attr_ints, keep_axis
from onnxprune.analysis.channels.rules._registry import ONNX_DOMAIN, RULES, rule
from onnxprune.analysis.channels.rules.elementwise import binary, binary_slice, unary
from onnxprune.analysis.channels.rules.norms import layer_norm, layer_norm_slice, normalized_over

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis

__all__ = ["MS_DOMAIN", "attention_sizes", "gqa_geometry"]

MS_DOMAIN = "com.microsoft"


def _given(node: ir.Node, index: int, outputs: bool = False) -> bool:
    """Whether the optional input (or output) ``index`` of ``node`` is present."""
    values = node.outputs if outputs else node.inputs
    return index < len(values) and values[index] is not None and bool(values[index].name)


def _read(value: ir.Value | None) -> bool:
    """Whether an output is used (by a node or as a graph output)."""
    return value is not None and (value.is_graph_output() or bool(value.uses()))


def _state_refusal(node: ir.Node, inputs: dict[int, str], outputs: dict[int, str]) -> str | None:
    """Why the heads cannot be removed: an input or output that indexes heads and is not sliced."""
    for index, what in inputs.items():
        if _given(node, index):
            return f"{node.op_type} with a {what} input (it indexes heads)"
    for index, what in outputs.items():
        if _given(node, index, outputs=True):
            return f"{node.op_type} with a {what} output (it indexes heads)"
    return None


# -- Attention: packed QKV projection + multi-head attention -------------------------------------------
_ATTENTION_STATE = {4: "past", 5: "attention_bias", 6: "past_sequence_length"}


def attention_sizes(node: ir.Node, a: ChannelAnalysis) -> tuple[int, int] | str:
    """(num_heads, head size) of a packed-QKV ``Attention``, or why its heads cannot be followed.

    Q, K and V must have the same width (``qkv_hidden_sizes`` equal or absent), so that column ``c``
    of each block of the packed weight is channel ``c`` of the output.
    """
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    shape = a.shape(weight)
    heads = attr_int(node, "num_heads", 0)
    if weight is None or shape is None or len(shape) != 2 or a.const(weight) is None:
        return "Attention needs a constant 2-D packed QKV weight"
    sizes = attr_ints(node, "qkv_hidden_sizes") or [shape[1] // 3] * 3
    if len(set(sizes)) != 1 or sum(sizes) != shape[1] or heads <= 0 or sizes[2] % heads:
        return f"Attention with Q/K/V widths {sizes} and {heads} heads (only equal widths are followed)"
    if _given(node, 2) and a.const(node.inputs[2]) is None:
        return "Attention bias is not a constant"
    if len(weight.uses()) > 1:
        return "Attention's packed QKV weight is shared with other nodes"
    refusal = _state_refusal(node, _ATTENTION_STATE, {1: "present"})
    return refusal if refusal is not None else (heads, sizes[2] // heads)


def _attention_slice(node: ir.Node, ex: Executor) -> None:
    x, weight, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if ex.analysis.layout(y) is not None and ex.analysis.layout(weight) is not None:
        ex.param(node, 1, 1, weight, role="out")
        ex.param(node, 2, 0, weight, role="bias")
        if ex.changed(y):
            head = ex.width(y) // attr_int(node, "num_heads", 1)
            kept = len(ex.kept(y)) // head  # type: ignore[arg-type]
            ex.set_attr(node, ir.AttrInt64("num_heads", kept))
            if attr_ints(node, "qkv_hidden_sizes") is not None:
                ex.set_attr(node, ir.AttrInt64s("qkv_hidden_sizes", [kept * head] * 3))
    lx = ex.analysis.layout(x)
    if lx is not None and lx.axis == lx.rank - 1:
        ex.param(node, 1, 0, x, role="in")


@rule("Attention", domain=MS_DOMAIN, slice=_attention_slice)
def attention(node: ir.Node, a: ChannelAnalysis) -> None:
    """Consumer of the hidden channels (weight rows), producer of a group removed in whole heads."""
    x, y = node.inputs[0], node.outputs[0]
    lx = a.layout(x)
    others = [a.layout(v) for v in node.inputs[1:]]
    if any(others):
        a.block(node, others, "channels reach Attention's weight, bias, mask or state")
    sizes = attention_sizes(node, a)
    if isinstance(sizes, str):
        a.block(node, [lx], sizes)
        return
    if lx is not None and lx.axis != lx.rank - 1:
        a.block(node, [lx], "channels are not on Attention's hidden axis")
    heads, head = sizes
    a.new_group(node, y, -1, heads * head)
    ly = a.layout(y)
    if ly is not None:
        a.coarsen(node, ly, head, f"Attention removes whole heads of {head} channels")
        a.set(node.inputs[1], Layout(1, 2, ly.segments * 3))  # the packed Q|K|V columns


def _qkv_layouts(node: ir.Node, a: ChannelAnalysis, rest: str) -> list[Layout | None] | None:
    """The layouts of the Q, K, V inputs (None when none carries channels); channels elsewhere block."""
    layouts = [a.layout(node.inputs[i]) if i < len(node.inputs) else None for i in range(3)]
    others = [a.layout(v) for v in node.inputs[3:]]
    if any(others):
        a.block(node, others, f"channels reach {node.op_type}'s {rest}")
    return layouts if any(layouts) else None


# -- MultiHeadAttention: Q, K, V given separately --------------------------------------------------------
_MHA_STATE = {5: "attention_bias", 6: "past_key", 7: "past_value", 8: "past_sequence_length", 9: "cache_indirection"}


def _mha_refusal(node: ir.Node, a: ChannelAnalysis, layouts: list[Layout | None]) -> str | None:
    """Why the heads of a MultiHeadAttention cannot be followed (``None``: they can)."""
    if not _given(node, 1) or not _given(node, 2):
        return "MultiHeadAttention with a packed QKV or KV input"
    if any(lay is None for lay in layouts):
        return "MultiHeadAttention removes a head from Q, K and V together, and not all three carry prunable channels"
    if any(lay.axis != 2 or lay.rank != 3 for lay in layouts):  # type: ignore[union-attr]
        return "MultiHeadAttention with packed or 4-D Q/K/V inputs"
    if len({lay.width for lay in layouts}) != 1:  # type: ignore[union-attr]
        return "MultiHeadAttention with Q/K and V of different widths"
    heads = attr_int(node, "num_heads", 0)
    if heads <= 0 or layouts[2].width % heads:  # type: ignore[union-attr]
        return f"MultiHeadAttention with {heads} heads over {layouts[2].width} channels"  # type: ignore[union-attr]
    if _given(node, 3) and a.const(node.inputs[3]) is None:
        return "MultiHeadAttention bias is not a constant"
    return _state_refusal(node, _MHA_STATE, {1: "present_key", 2: "present_value", 3: "qk"})


def _mha_slice(node: ir.Node, ex: Executor) -> None:
    value, y = node.inputs[2], node.outputs[0]
    if ex.analysis.layout(y) is None:
        return
    if _given(node, 3):
        ex.param(node, 3, 0, node.inputs[3], role="bias")
    if ex.changed(y):
        head = ex.width(value) // attr_int(node, "num_heads", 1)
        ex.set_attr(node, ir.AttrInt64("num_heads", len(ex.kept(y)) // head))  # type: ignore[arg-type]


@rule("MultiHeadAttention", domain=MS_DOMAIN, slice=_mha_slice)
def multi_head_attention(node: ir.Node, a: ChannelAnalysis) -> None:
    """Couple Q, K and V head by head; the output carries V's layout."""
    layouts = _qkv_layouts(node, a, "bias, mask or state")
    if layouts is None:
        return
    refusal = _mha_refusal(node, a, layouts)
    if refusal is not None:
        a.block(node, layouts, refusal)
        return
    lq, lk, lv = layouts
    head = lv.width // attr_int(node, "num_heads", 1)  # type: ignore[union-attr]
    coupled = a.couple(node, [lq, lk, lv], "MultiHeadAttention pairs Q/K/V heads with")  # type: ignore[list-item]
    a.coarsen(node, coupled, head, f"MultiHeadAttention removes whole heads of {head} channels")
    keep_axis(node, a, lv)  # type: ignore[arg-type]
    if _given(node, 3):
        segments = lq.segments + lk.segments + lv.segments  # type: ignore[union-attr]
        a.set(node.inputs[3], Layout(0, 1, segments))  # the packed Q|K|V bias


# -- GroupQueryAttention -------------------------------------------------------------------------------
def gqa_geometry(node: ir.Node, a: ChannelAnalysis) -> tuple[int, int, int] | str:
    """(query heads, KV heads, head size) of a ``GroupQueryAttention`` with separate Q, K, V inputs.

    A string says why the geometry cannot be read (packed QKV input, widths that do not divide).
    """
    heads, kv_heads = attr_int(node, "num_heads", 0), attr_int(node, "kv_num_heads", 0)
    widths = [a.shape(node.inputs[i])[-1] if _given(node, i) and a.shape(node.inputs[i]) else None for i in range(3)]
    if widths[1] is None or widths[2] is None:
        return "GroupQueryAttention with a packed QKV input"
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads or widths[0] is None or widths[0] % heads:
        return f"GroupQueryAttention with {heads} query heads over {widths[0]} channels and {kv_heads} KV heads"
    head = widths[0] // heads
    if widths[1] != kv_heads * head or widths[2] != kv_heads * head:
        return f"GroupQueryAttention with K/V widths {widths[1:]} for {kv_heads} KV heads of {head} channels"
    return heads, kv_heads, head


_GQA_STATE = {3: "past_key", 4: "past_value"}


def _gqa_slice(node: ir.Node, ex: Executor) -> None:
    query, key, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if ex.analysis.layout(y) is None or not ex.changed(y):
        return
    head = ex.width(key) // attr_int(node, "kv_num_heads", 1)
    ex.set_attr(node, ir.AttrInt64("num_heads", len(ex.kept(query)) // head))  # type: ignore[arg-type]
    ex.set_attr(node, ir.AttrInt64("kv_num_heads", len(ex.kept(key)) // head))  # type: ignore[arg-type]


@rule("GroupQueryAttention", domain=MS_DOMAIN, slice=_gqa_slice)
def group_query_attention(node: ir.Node, a: ChannelAnalysis) -> None:
    """A KV head goes with the query heads it serves: the query group is rebased onto the KV group."""
    layouts = _qkv_layouts(node, a, "cache, lengths or rotary tables")
    if layouts is None:
        return
    geometry = gqa_geometry(node, a)
    refusal = geometry if isinstance(geometry, str) else _state_refusal(node, _GQA_STATE, {})
    if refusal is None and any(lay is None or lay.axis != lay.rank - 1 for lay in layouts):
        refusal = "GroupQueryAttention removes a KV head from Q, K and V together; not all three carry channels"
    if refusal is None and any(_read(node.outputs[i]) for i in (1, 2) if i < len(node.outputs)):
        refusal = "GroupQueryAttention's present key/value outputs index the KV heads (a cache's signature)"
    if refusal is not None:
        a.block(node, layouts, refusal)
        return
    heads, kv_heads, head = geometry  # type: ignore[misc]
    lq, lk, lv = layouts
    reason = f"GroupQueryAttention removes whole heads of {head} channels"
    if not all(a.coarsen(node, lay, head, reason, unit="head") for lay in (lq, lk, lv)):  # type: ignore[arg-type]
        return
    kv = a.couple(node, [lk, lv], "GroupQueryAttention pairs K and V heads with")  # type: ignore[list-item]
    repeated: list = []
    for j in range(kv_heads):  # K's heads as they meet the query heads: each repeated for its group
        repeated += list(kv.cut(j * head, (j + 1) * head) or ()) * (heads // kv_heads)
    query = a.couple(node, [lq, Layout(lq.axis, lq.rank, tuple(repeated))], "GroupQueryAttention's query heads follow")  # type: ignore[union-attr]
    keep_axis(node, a, query)


# -- residual + norm, embeddings + norm ---------------------------------------------------------------
#: constant inputs that follow the channels: input index -> role
_SKIP_NORM_PARAMS = {
    "SkipLayerNormalization": {2: "scale", 3: "norm", 4: "const"},
    "SkipSimplifiedLayerNormalization": {2: "scale", 3: "const"},
}
_SKIP_NORM_SUM = 3  # output index of input_skip_bias_sum


def _skip_norm_slice(node: ir.Node, ex: Executor) -> None:
    y = node.outputs[0]
    if ex.analysis.layout(y) is None:
        return
    for index, role in _SKIP_NORM_PARAMS[node.op_type].items():
        ex.param(node, index, 0, y, role=role)


@rule(*_SKIP_NORM_PARAMS, domain=MS_DOMAIN, slice=_skip_norm_slice)
def skip_norm(node: ir.Node, a: ChannelAnalysis) -> None:
    """Input + skip (+ bias) couple like a residual Add; the norm over the channels is inexact."""
    binary(node, a)
    layout = a.layout(node.outputs[0])
    if layout is None:
        return
    if layout.axis != layout.rank - 1:
        a.block(node, [layout], f"channels are not on {node.op_type}'s normalized axis")
        return
    normalized_over(node, a, layout)
    if _given(node, _SKIP_NORM_SUM, outputs=True):
        a.set(node.outputs[_SKIP_NORM_SUM], layout)


_EMBED_TABLES = (2, 3, 4)  # word, position, segment embedding tables [rows, hidden]
_EMBED_NORM = {5: "scale", 6: "norm"}
_EMBED_SUM = 2  # output index of embedding_sum


def _embed_norm_slice(node: ir.Node, ex: Executor) -> None:
    y = node.outputs[0]
    if ex.analysis.layout(y) is None:
        return
    for index in _EMBED_TABLES:
        ex.param(node, index, 1, y, role="out")
    for index, role in _EMBED_NORM.items():
        ex.param(node, index, 0, y, role=role)


@rule("EmbedLayerNormalization", domain=MS_DOMAIN, slice=_embed_norm_slice)
def embed_norm(node: ir.Node, a: ChannelAnalysis) -> None:
    """A producer of the hidden channels (the tables' columns), normalized over them (inexact)."""
    carried = [a.layout(v) for v in node.inputs]
    if any(carried):
        a.block(node, carried, "channels reach EmbedLayerNormalization's ids, tables or mask")
    tables = [node.inputs[i] for i in _EMBED_TABLES if _given(node, i)]
    shapes = [a.shape(t) for t in tables]
    if any(a.const(t) is None for t in tables) or any(s is None or len(s) != 2 for s in shapes):
        return  # computed tables: the hidden channels stay fixed
    y = node.outputs[0]
    a.new_group(node, y, -1, shapes[0][1])  # type: ignore[index]
    layout = a.layout(y)
    if layout is None:
        return
    normalized_over(node, a, layout)
    if _given(node, _EMBED_SUM, outputs=True):
        a.set(node.outputs[_EMBED_SUM], layout)


# -- elementwise ops with a bias, activations, FusedMatMul, RMSNorm ---------------------------------------
rule("BiasGelu", "FastGelu", "BiasAdd", domain=MS_DOMAIN, slice=binary_slice)(binary)
rule("Gelu", "QuickGelu", domain=MS_DOMAIN)(unary)
rule("SimplifiedLayerNormalization", slice=layer_norm_slice)(layer_norm)

_TRANSPOSES = ("transA", "transB", "transBatchA", "transBatchB")


def _fused_matmul_slice(node: ir.Node, ex: Executor) -> None:
    if not any(attr_int(node, name, 0) for name in _TRANSPOSES):
        RULES[(ONNX_DOMAIN, "MatMul")].slice(node, ex)  # type: ignore[misc]


@rule("FusedMatMul", domain=MS_DOMAIN, slice=_fused_matmul_slice)
def fused_matmul(node: ir.Node, a: ChannelAnalysis) -> None:
    """Without transposes a (scaled) MatMul; with them, blocked."""
    transposed = [name for name in _TRANSPOSES if attr_int(node, name, 0)]
    if transposed:
        a.block_inputs(node, f"FusedMatMul with {'/'.join(transposed)} is not followed")
        return
    RULES[(ONNX_DOMAIN, "MatMul")].propagate(node, a)
