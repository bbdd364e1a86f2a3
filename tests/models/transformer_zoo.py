"""Small plain-torch transformers (no downloads) for head/GQA/hidden/FFN pruning tests, both exporters.

:data:`TRANSFORMERS` names four models written the way their reference code writes them, so the
exported graphs carry the same patterns as real exports:

* ``bert`` -- HF BERT: token+position+segment embeddings, post-LN, Q/K/V Linear with bias, the
  ``x.size()[:-1] + (heads, head_dim)`` view -> transpose, QK^T/sqrt(D) + additive mask from
  ``attention_mask``, softmax, AV -> transpose -> reshape -> O proj, GELU FFN.
  Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [B,S]) -> ``last_hidden_state``.
* ``vit`` -- timm ViT: Conv patch embedding -> flatten/transpose -> cls token concat -> position
  embedding -> pre-LN blocks with a fused qkv Linear reshaped to [B,N,3,H,D] and permuted,
  GELU MLP, head on the cls token.  Input ``pixel_values`` [B,3,16,16] -> ``logits`` [B,10].
* ``llama`` -- HF Llama: RMSNorm written out (pow/mean/rsqrt/mul), bias-free Q/K/V, GQA with 4
  query heads and 2 KV heads (``repeat_kv`` via expand+reshape), RoPE with ``rotate_half`` (cos/sin
  computed from positions), causal mask, SwiGLU MLP, final norm + LM head.
  Input ``input_ids`` -> ``logits``.
* ``llama_kv`` -- the same decoder with a KV cache: inputs ``input_ids`` and ``past_key_values.<i>.key``
  / ``.value`` ([B, kv_heads, P, D] per layer); outputs ``logits`` and ``present.<i>.key`` / ``.value``
  (past concatenated with the new keys/values).

Sizes: hidden 32, 2 layers, 4 heads (head_dim 8), FFN 64, vocab 100, sequence 8 (past 5).  Every
module is seeded; norms get trained-looking weights (:func:`tests.models.torch_modules._randomize_norms`
plus RMSNorm gains), Linear biases are non-zero.  torch is imported only inside functions.

* :func:`build_transformer` -- the eval-mode module; :func:`transformer_inputs` -- seeded inputs by name.
* :func:`transformer_onnx` -- the export (TorchScript at opset 17 or dynamo at its default opset),
  with dynamic batch and sequence/past axes (``dynamic=False``: all static), cached per process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import onnx

from tests.models.export import torch_export
from tests.models.exported import _cached_export, seeded
from tests.models.torch_modules import _randomize_norms

__all__ = [
    "TRANSFORMERS",
    "ZooConfig",
    "build_transformer",
    "dynamic_axes",
    "input_names",
    "output_names",
    "transformer_inputs",
    "transformer_onnx",
]

#: the TorchScript exporter's opset for this zoo (dynamo uses its default)
TORCHSCRIPT_OPSET = 17


@dataclasses.dataclass(frozen=True)
class ZooConfig:
    """Sizes shared by the four models."""

    vocab: int = 100
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 64
    max_positions: int = 16
    type_vocab: int = 2
    image: int = 16
    patch: int = 4
    num_classes: int = 10
    seq: int = 8
    past: int = 5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


CONFIG = ZooConfig()


def _bert(torch: Any, nn: Any, cfg: ZooConfig) -> Any:
    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_attention_heads, self.attention_head_size = cfg.heads, cfg.head_dim
            self.query = nn.Linear(cfg.hidden, cfg.hidden)
            self.key = nn.Linear(cfg.hidden, cfg.hidden)
            self.value = nn.Linear(cfg.hidden, cfg.hidden)

        def transpose_for_scores(self, x: Any) -> Any:
            new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
            return x.view(new_x_shape).permute(0, 2, 1, 3)

        def forward(self, hidden: Any, mask: Any) -> Any:
            q = self.transpose_for_scores(self.query(hidden))
            k = self.transpose_for_scores(self.key(hidden))
            v = self.transpose_for_scores(self.value(hidden))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
            probs = torch.softmax(scores + mask, dim=-1)
            context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            new_shape = context.size()[:-2] + (cfg.hidden,)
            return context.view(new_shape)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = SelfAttention()
            self.attention_output = nn.Linear(cfg.hidden, cfg.hidden)
            self.attention_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
            self.intermediate = nn.Linear(cfg.hidden, cfg.intermediate)
            self.output = nn.Linear(cfg.intermediate, cfg.hidden)
            self.output_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)

        def forward(self, x: Any, mask: Any) -> Any:
            x = self.attention_norm(x + self.attention_output(self.attention(x, mask)))
            ffn = self.output(nn.functional.gelu(self.intermediate(x)))
            return self.output_norm(x + ffn)

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(cfg.vocab, cfg.hidden)
            self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab, cfg.hidden)
            self.embeddings_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(cfg.max_positions).unsqueeze(0), persistent=False)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.layers))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            seq_length = input_ids.size()[1]
            position_ids = self.position_ids[:, :seq_length]
            x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
            x = self.embeddings_norm(x + self.position_embeddings(position_ids))
            extended = attention_mask[:, None, None, :].to(x.dtype)
            mask = (1.0 - extended) * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, mask)
            return x

    return Bert()


def _vit(torch: Any, nn: Any, cfg: ZooConfig) -> Any:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads, self.head_dim = cfg.heads, cfg.head_dim
            self.scale = self.head_dim**-0.5
            self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
            self.proj = nn.Linear(cfg.hidden, cfg.hidden)

        def forward(self, x: Any) -> Any:
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(cfg.hidden, eps=1e-6)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(cfg.hidden, eps=1e-6)
            self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
            self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            tokens = (cfg.image // cfg.patch) ** 2 + 1
            self.patch_embed = nn.Conv2d(3, cfg.hidden, cfg.patch, cfg.patch)
            self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.hidden) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, tokens, cfg.hidden) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.layers))
            self.norm = nn.LayerNorm(cfg.hidden, eps=1e-6)
            self.head = nn.Linear(cfg.hidden, cfg.num_classes)

        def forward(self, pixel_values: Any) -> Any:
            x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    return ViT()


def _llama(torch: Any, nn: Any, cfg: ZooConfig, kv_cache: bool) -> Any:
    n_rep = cfg.heads // cfg.kv_heads

    class RMSNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(1.0 + 0.05 * torch.randn(cfg.hidden))
            self.variance_epsilon = 1e-6

        def forward(self, x: Any) -> Any:
            variance = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    def rotate_half(x: Any) -> Any:
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    def repeat_kv(x: Any) -> Any:
        b, kv, s, d = x.shape
        return x[:, :, None, :, :].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = cfg.head_dim
            self.q_proj = nn.Linear(cfg.hidden, cfg.heads * d, bias=False)
            self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
            self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * d, bias=False)
            self.o_proj = nn.Linear(cfg.heads * d, cfg.hidden, bias=False)

        def forward(self, x: Any, cos: Any, sin: Any, mask: Any, past: tuple[Any, Any] | None) -> Any:
            b, s, _ = x.shape
            d = cfg.head_dim
            q = self.q_proj(x).view(b, s, -1, d).transpose(1, 2)
            k = self.k_proj(x).view(b, s, -1, d).transpose(1, 2)
            v = self.v_proj(x).view(b, s, -1, d).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            if past is not None:
                k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
            scores = torch.matmul(q, repeat_kv(k).transpose(2, 3)) / math.sqrt(d) + mask
            out = torch.matmul(torch.softmax(scores, dim=-1), repeat_kv(v)).transpose(1, 2).reshape(b, s, -1)
            return self.o_proj(out), (k, v)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = RMSNorm()
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm()
            self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
            self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
            self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

        def forward(self, x: Any, cos: Any, sin: Any, mask: Any, past: Any) -> Any:
            attn, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
            x = x + attn
            h = self.post_attention_layernorm(x)
            return x + self.down_proj(nn.functional.silu(self.gate_proj(h)) * self.up_proj(h)), present

    class Llama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.layers))
            self.norm = RMSNorm()
            self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
            inv_freq = 1.0 / (10000.0 ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

        def run(self, input_ids: Any, past: list[tuple[Any, Any]] | None) -> tuple[Any, list[Any]]:
            s = input_ids.shape[1]
            p = 0 if past is None else past[0][0].shape[2]
            positions = torch.arange(p, p + s, dtype=torch.float32)
            freqs = torch.outer(positions, self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos()[None, None], emb.sin()[None, None]
            x = self.embed_tokens(input_ids)
            mask = torch.full((s, p + s), torch.finfo(x.dtype).min).triu(p + 1)[None, None]
            presents = []
            for i, layer in enumerate(self.layers):
                x, present = layer(x, cos, sin, mask, None if past is None else past[i])
                presents += list(present)
            return self.lm_head(self.norm(x)), presents

        def forward(self, input_ids: Any) -> Any:
            return self.run(input_ids, None)[0]

    class LlamaKV(Llama):
        def forward(self, input_ids: Any, *past_flat: Any) -> Any:
            past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(cfg.layers)]
            logits, presents = self.run(input_ids, past)
            return (logits, *presents)

    return LlamaKV() if kv_cache else Llama()


_BUILDERS: dict[str, Callable[[Any, Any, ZooConfig], Any]] = {
    "bert": _bert,
    "vit": _vit,
    "llama": lambda torch, nn, cfg: _llama(torch, nn, cfg, kv_cache=False),
    "llama_kv": lambda torch, nn, cfg: _llama(torch, nn, cfg, kv_cache=True),
}

#: model names, in a fixed order
TRANSFORMERS: tuple[str, ...] = tuple(_BUILDERS)


def _check(name: str) -> None:
    if name not in _BUILDERS:
        raise KeyError(f"unknown transformer {name!r}; expected one of {TRANSFORMERS}")


def build_transformer(name: str, *, seed: int = 0, config: ZooConfig = CONFIG) -> Any:
    """The eval-mode module *name* (one of :data:`TRANSFORMERS`), deterministic per *seed*."""
    _check(name)
    import torch

    def make() -> Any:
        module = _BUILDERS[name](torch, torch.nn, config)
        _randomize_norms(module)
        return module.eval()

    return seeded(seed, make)


def transformer_inputs(
    name: str,
    *,
    batch: int = 2,
    seq: int | None = None,
    past: int | None = None,
    seed: int = 1,
    config: ZooConfig = CONFIG,
) -> dict[str, Any]:
    """Seeded example inputs of *name*, by graph input name, in the module's argument order.

    ``bert``'s attention mask pads the last two tokens of the first sequence; ``llama_kv``'s past
    keys/values are random ([batch, kv_heads, past, head_dim]).
    """
    _check(name)
    import torch

    seq = config.seq if seq is None else seq
    past = config.past if past is None else past

    def make() -> dict[str, Any]:
        if name == "vit":
            return {"pixel_values": torch.randn(batch, 3, config.image, config.image)}
        feeds = {"input_ids": torch.randint(0, config.vocab, (batch, seq), dtype=torch.int64)}
        if name == "bert":
            mask = torch.ones(batch, seq, dtype=torch.int64)
            mask[0, -2:] = 0
            feeds["attention_mask"] = mask
            feeds["token_type_ids"] = (torch.arange(seq) >= seq // 2).to(torch.int64).expand(batch, seq).contiguous()
        if name == "llama_kv":
            for i in range(config.layers):
                for kind in ("key", "value"):
                    feeds[f"past_key_values.{i}.{kind}"] = torch.randn(batch, config.kv_heads, past, config.head_dim)
        return feeds

    return seeded(seed, make)


def input_names(name: str, config: ZooConfig = CONFIG) -> list[str]:
    """Graph input names of *name* (the keys of :func:`transformer_inputs`)."""
    _check(name)
    if name == "vit":
        return ["pixel_values"]
    if name == "bert":
        return ["input_ids", "attention_mask", "token_type_ids"]
    past = [f"past_key_values.{i}.{kind}" for i in range(config.layers) for kind in ("key", "value")]
    return ["input_ids", *past] if name == "llama_kv" else ["input_ids"]


def output_names(name: str, config: ZooConfig = CONFIG) -> list[str]:
    """Graph output names of *name*."""
    _check(name)
    if name == "bert":
        return ["last_hidden_state"]
    if name == "llama_kv":
        return ["logits"] + [f"present.{i}.{kind}" for i in range(config.layers) for kind in ("key", "value")]
    return ["logits"]


def dynamic_axes(name: str, config: ZooConfig = CONFIG) -> dict[str, dict[int, str]]:
    """Dynamic axes by input/output name: batch everywhere, plus sequence (and past) for text models."""
    inputs = input_names(name, config)
    outputs = output_names(name, config)
    if name == "vit":
        return {n: {0: "batch"} for n in (*inputs, *outputs)}
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in inputs if not n.startswith("past")}
    axes["logits" if name != "bert" else "last_hidden_state"] = {0: "batch", 1: "sequence"}
    for n in inputs + outputs:
        if n.startswith("past"):
            axes[n] = {0: "batch", 2: "past_sequence"}
        elif n.startswith("present"):
            axes[n] = {0: "batch", 2: "total_sequence"}
    return axes


@_cached_export
def _export(name: str, dynamo: bool, dynamic: bool, seed: int) -> onnx.ModelProto:
    module = build_transformer(name, seed=seed)
    feeds = transformer_inputs(name, seed=seed + 1)
    return torch_export(
        module,
        tuple(feeds.values()),
        dynamo=dynamo,
        opset=None if dynamo else TORCHSCRIPT_OPSET,
        input_names=input_names(name),
        output_names=output_names(name),
        dynamic_batch=False,
        dynamic_axes=dynamic_axes(name) if dynamic else None,
        dim_max={"sequence": CONFIG.max_positions},
    )


def transformer_onnx(name: str, *, dynamo: bool, dynamic: bool = True, seed: int = 0) -> onnx.ModelProto:
    """Exported *name*, cached per process (every call returns an independent copy).

    TorchScript at opset 17 (``dynamo=False``) or dynamo at its default opset; with *dynamic* the
    axes of :func:`dynamic_axes` are symbolic, else every shape is that of :func:`transformer_inputs`.
    The module is ``build_transformer(name, seed=seed)``, exported on ``transformer_inputs(seed=seed + 1)``.
    """
    _check(name)
    return _export(name, dynamo, dynamic, seed)
