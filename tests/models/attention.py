"""A tiny grouped-query attention block in plain torch (query heads share key/value heads)."""

from __future__ import annotations

from typing import Any


def gqa_block(hidden: int = 32, heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Any:
    """``y = up(x + o(attention(x)))`` with ``heads`` query heads over ``kv_heads`` key/value heads.

    Keys and values are repeated per query head as Llama's ``repeat_kv`` does (unsqueeze, expand,
    reshape), so exporters emit the Expand/Reshape pattern the channel analysis must follow.
    """
    import torch
    from torch import nn

    head_dim = hidden // heads

    class GQABlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(hidden, heads * head_dim, bias=False)
            self.k = nn.Linear(hidden, kv_heads * head_dim, bias=False)
            self.v = nn.Linear(hidden, kv_heads * head_dim, bias=False)
            self.o = nn.Linear(heads * head_dim, hidden, bias=False)
            self.up = nn.Linear(hidden, hidden)

        def _heads(self, t: Any, n: int) -> Any:
            b, s, _ = t.shape
            return t.view(b, s, n, head_dim).transpose(1, 2)

        def _repeat(self, t: Any) -> Any:
            b, _, s, _ = t.shape
            rep = heads // kv_heads
            return t[:, :, None, :, :].expand(b, kv_heads, rep, s, head_dim).reshape(b, heads, s, head_dim)

        def forward(self, x: Any) -> Any:
            b, s, _ = x.shape
            q = self._heads(self.q(x), heads)
            k = self._repeat(self._heads(self.k(x), kv_heads))
            v = self._repeat(self._heads(self.v(x), kv_heads))
            attn = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5, dim=-1) @ v
            return self.up(x + self.o(attn.transpose(1, 2).reshape(b, s, heads * head_dim)))

    torch.manual_seed(seed)
    return GQABlock().eval()
