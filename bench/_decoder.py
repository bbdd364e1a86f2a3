"""A Llama-like decoder ONNX model, random init, with every weight in one external-data file.

Token embedding (``Gather``), ``layers`` blocks of RMSNorm → Q/K/V projections with grouped-query
attention (``kv_heads`` key/value heads repeated to ``heads``) → rotary embedding (cos/sin tables,
rotate-half) → causal-masked softmax attention → output projection → residual; RMSNorm → SwiGLU MLP
(gate/up/down) → residual; final RMSNorm and LM head. Input ``input_ids`` int64 ``[batch, seq]``,
output ``logits`` float32 ``[batch, seq, vocab]``.

The graph is built with onnx_ir, and each weight is drawn, appended to the data file and dropped
before the next one is drawn: building holds one tensor at a time, whatever the model's size.
Only numpy and onnx_ir are imported (tests and the model zoo use it too).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx_ir as ir

__all__ = [
    "DecoderConfig",
    "build_decoder",
    "calibration_ids",
    "nm_violations",
    "projection_names",
    "weight_bytes",
]

OPSET = 17


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Shape of the decoder.

    Attributes:
        hidden: Model width (``heads * head_dim``).
        layers: Decoder blocks.
        heads: Query heads.
        kv_heads: Key/value heads (grouped-query attention; ``heads`` must be a multiple).
        ffn: SwiGLU intermediate width.
        vocab: Vocabulary (embedding rows, LM head columns).
        seq: Sequence length of the input (fixed: the RoPE tables and the mask are that long).
        seed: Seed of the random weights.
    """

    hidden: int = 2048
    layers: int = 4
    heads: int = 16
    kv_heads: int = 4
    ffn: int = 5632
    vocab: int = 32000
    seq: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"hidden {self.hidden}, heads {self.heads}, kv_heads {self.kv_heads} do not fit")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden // self.heads


def weight_bytes(config: DecoderConfig) -> int:
    """Bytes of the float32 weights (embedding, projections, norms, LM head)."""
    kv = config.kv_heads * config.head_dim
    per_layer = 2 * config.hidden * config.hidden + 2 * config.hidden * kv + 3 * config.hidden * config.ffn
    per_layer += 2 * config.hidden
    return 4 * (config.layers * per_layer + 2 * config.vocab * config.hidden + config.hidden)


class _Writer:
    """Graph under construction; weights go straight to the external-data file."""

    def __init__(self, data: Path, rng: np.random.Generator) -> None:
        self.data, self.rng = data, rng
        self.file = open(data, "wb")  # noqa: SIM115 - closed by build_decoder
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []

    def weight(
        self, name: str, shape: tuple[int, ...], std: float | None = None, fill: float | None = None
    ) -> ir.Value:
        """A float32 initializer written to the data file (Gaussian with ``std``, or constant ``fill``)."""
        if fill is not None:
            array = np.full(shape, fill, np.float32)
        else:
            array = self.rng.standard_normal(shape, dtype=np.float32)
            array *= np.float32(std)
        offset = self.file.tell()
        self.file.write(array.tobytes())
        tensor = ir.ExternalTensor(
            self.data.name,
            offset,
            array.nbytes,
            ir.DataType.FLOAT,
            shape=ir.Shape(shape),
            name=name,
            base_dir=self.data.parent,
        )
        del array
        return self._init(name, tensor)

    def const(self, name: str, array: np.ndarray) -> ir.Value:
        """A small initializer kept in the graph."""
        return self._init(name, ir.tensor(array, name=name))

    def _init(self, name: str, tensor: ir.TensorProtocol) -> ir.Value:
        value = ir.Value(name=name, const_value=tensor, shape=tensor.shape, type=ir.TensorType(tensor.dtype))
        self.initializers.append(value)
        return value

    def op(self, op_type: str, inputs: list[ir.Value], name: str, outputs: int = 1, **attrs: object) -> ir.Value:
        """Append one node; returns its first output."""
        node = ir.node(op_type, inputs, attrs or None, name=name, num_outputs=outputs)
        for i, out in enumerate(node.outputs):
            out.name = f"{name}/out{i}" if outputs > 1 else f"{name}/out"
        self.nodes.append(node)
        return node.outputs[0]


def _rope_tables(config: DecoderConfig) -> tuple[np.ndarray, np.ndarray]:
    half = config.head_dim // 2
    inv = 1.0 / (10000.0 ** (np.arange(half, dtype=np.float64) / half))
    angles = np.outer(np.arange(config.seq, dtype=np.float64), inv)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _rms_norm(g: _Writer, x: ir.Value, prefix: str, hidden: int, eps: ir.Value) -> ir.Value:
    gain = g.weight(f"{prefix}.weight", (hidden,), fill=1.0)
    sq = g.op("Mul", [x, x], f"{prefix}/sq")
    mean = g.op("ReduceMean", [sq], f"{prefix}/mean", axes=[-1], keepdims=1)
    rms = g.op("Sqrt", [g.op("Add", [mean, eps], f"{prefix}/eps")], f"{prefix}/sqrt")
    return g.op("Mul", [g.op("Div", [x, rms], f"{prefix}/div"), gain], f"{prefix}/scale")


def _heads(g: _Writer, x: ir.Value, shape: ir.Value, name: str) -> ir.Value:
    """``[B, S, n*hd]`` → ``[B, n, S, hd]``."""
    return g.op("Transpose", [g.op("Reshape", [x, shape], f"{name}/reshape")], f"{name}/transpose", perm=[0, 2, 1, 3])


def _rope(g: _Writer, x: ir.Value, cos: ir.Value, sin: ir.Value, halves: ir.Value, name: str) -> ir.Value:
    first = g.op("Split", [x, halves], f"{name}/split", outputs=2, axis=-1)
    second = first.producer().outputs[1]  # type: ignore[union-attr]
    rotated = g.op("Concat", [g.op("Neg", [second], f"{name}/neg"), first], f"{name}/rotate", axis=-1)
    return g.op(
        "Add",
        [g.op("Mul", [x, cos], f"{name}/cos"), g.op("Mul", [rotated, sin], f"{name}/sin")],
        f"{name}/add",
    )


def _layer(g: _Writer, x: ir.Value, i: int, config: DecoderConfig, c: dict[str, ir.Value]) -> ir.Value:
    p, h, kv = f"layers.{i}", config.hidden, config.kv_heads * config.head_dim
    std = 0.02
    normed = _rms_norm(g, x, f"{p}.input_layernorm", h, c["eps"])
    q = g.op("MatMul", [normed, g.weight(f"{p}.self_attn.q_proj.weight", (h, h), std)], f"{p}/q_proj")
    k = g.op("MatMul", [normed, g.weight(f"{p}.self_attn.k_proj.weight", (h, kv), std)], f"{p}/k_proj")
    v = g.op("MatMul", [normed, g.weight(f"{p}.self_attn.v_proj.weight", (h, kv), std)], f"{p}/v_proj")
    q = _rope(g, _heads(g, q, c["q_shape"], f"{p}/q"), c["cos"], c["sin"], c["halves"], f"{p}/q_rope")
    k = _rope(g, _heads(g, k, c["kv_shape"], f"{p}/k"), c["cos"], c["sin"], c["halves"], f"{p}/k_rope")
    v = _heads(g, v, c["kv_shape"], f"{p}/v")
    repeated = []
    for name, t in (("k", k), ("v", v)):  # repeat_kv: [B, kv, S, hd] -> [B, heads, S, hd]
        wide = g.op("Expand", [g.op("Unsqueeze", [t, c["axis2"]], f"{p}/{name}_unsq"), c["rep"]], f"{p}/{name}_rep")
        repeated.append(g.op("Reshape", [wide, c["rep_shape"]], f"{p}/{name}_heads"))
    kt = g.op("Transpose", [repeated[0]], f"{p}/k_t", perm=[0, 1, 3, 2])
    scores = g.op("Mul", [g.op("MatMul", [q, kt], f"{p}/qk"), c["scale"]], f"{p}/scaled")
    probs = g.op("Softmax", [g.op("Add", [scores, c["mask"]], f"{p}/masked")], f"{p}/softmax", axis=-1)
    attn = g.op("Transpose", [g.op("MatMul", [probs, repeated[1]], f"{p}/pv")], f"{p}/attn_t", perm=[0, 2, 1, 3])
    attn = g.op("Reshape", [attn, c["merge"]], f"{p}/merge")
    out = g.op("MatMul", [attn, g.weight(f"{p}.self_attn.o_proj.weight", (h, h), std)], f"{p}/o_proj")
    x = g.op("Add", [x, out], f"{p}/attn_residual")
    normed = _rms_norm(g, x, f"{p}.post_attention_layernorm", h, c["eps"])
    gate = g.op("MatMul", [normed, g.weight(f"{p}.mlp.gate_proj.weight", (h, config.ffn), std)], f"{p}/gate_proj")
    up = g.op("MatMul", [normed, g.weight(f"{p}.mlp.up_proj.weight", (h, config.ffn), std)], f"{p}/up_proj")
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{p}/sigmoid")], f"{p}/silu")
    act = g.op("Mul", [silu, up], f"{p}/swiglu")
    down = g.op("MatMul", [act, g.weight(f"{p}.mlp.down_proj.weight", (config.ffn, h), std)], f"{p}/down_proj")
    return g.op("Add", [x, down], f"{p}/mlp_residual")


def _constants(g: _Writer, config: DecoderConfig) -> dict[str, ir.Value]:
    hd, s = config.head_dim, config.seq
    cos, sin = _rope_tables(config)
    mask = np.triu(np.full((s, s), -1e9, np.float32), k=1)
    ints = {
        "q_shape": [0, 0, config.heads, hd],
        "kv_shape": [0, 0, config.kv_heads, hd],
        "halves": [hd // 2, hd // 2],
        "axis2": [2],
        "rep": [1, 1, config.heads // config.kv_heads, 1, 1],
        "rep_shape": [0, config.heads, s, hd],
        "merge": [0, 0, config.hidden],
    }
    consts = {name: g.const(name, np.array(v, np.int64)) for name, v in ints.items()}
    floats = {"cos": cos, "sin": sin, "mask": mask, "eps": np.array(1e-6, np.float32)}
    floats["scale"] = np.array(1.0 / np.sqrt(hd), np.float32)
    consts.update({name: g.const(name, v) for name, v in floats.items()})
    return consts


def build_decoder(config: DecoderConfig, path: Path) -> Path:
    """Write the decoder to ``path`` with its weights in ``<path>.data``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g = _Writer(path.with_name(path.name + ".data"), np.random.default_rng(config.seed))
    try:
        ids = ir.val("input_ids", ir.DataType.INT64, ir.Shape(["batch", config.seq]))
        c = _constants(g, config)
        x = g.op("Gather", [g.weight("embed_tokens.weight", (config.vocab, config.hidden), 0.02), ids], "embed")
        for i in range(config.layers):
            x = _layer(g, x, i, config, c)
        x = _rms_norm(g, x, "norm", config.hidden, c["eps"])
        head = g.weight("lm_head.weight", (config.hidden, config.vocab), 0.02)
        logits = g.op("MatMul", [x, head], "lm_head")
    finally:
        g.file.close()
    logits.name = "logits"
    logits.type, logits.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape(["batch", config.seq, config.vocab])
    graph = ir.Graph(
        [ids], [logits], nodes=g.nodes, initializers=g.initializers, opset_imports={"": OPSET}, name="decoder"
    )
    ir.save(ir.Model(graph, ir_version=8, producer_name="onnxprune-bench"), path)
    return path


def calibration_ids(config: DecoderConfig, samples: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    """Random token ids ``{"input_ids": [samples, seq]}`` for calibration (save with ``np.savez``)."""
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, config.vocab, size=(samples, config.seq), dtype=np.int64)}


PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def projection_names(config: DecoderConfig) -> list[str]:
    """Names of the MatMul weights (``[in, out]``): every layer's projections and the LM head."""
    names = [f"layers.{i}.{p}.weight" for i in range(config.layers) for p in PROJECTIONS]
    return [*names, "lm_head.weight"]


def nm_violations(weights: dict[str, np.ndarray], n: int, m: int) -> dict[str, int]:
    """MatMul weights ``[in, out]`` with a run of ``m`` inputs holding more than ``n`` nonzeros: name -> the most."""
    bad = {}
    for name, w in weights.items():
        groups = np.count_nonzero(w.reshape(w.shape[0] // m, m, -1), axis=1)
        if groups.max(initial=0) > n:
            bad[name] = int(groups.max())
    return bad
