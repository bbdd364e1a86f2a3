"""Keep the highest scores: one threshold over several tensors (global) or one tensor (per layer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["keep_largest"]


def keep_largest(scores: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Boolean masks dropping the ``fraction`` lowest of all ``scores`` together (ties: the earlier entry goes).

    The count dropped is ``round(fraction * total)``; ``-inf`` scores (already pruned) go first.
    """
    import torch

    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    count = min(int(round(fraction * flat.numel())), flat.numel())
    if count > 0:
        keep[torch.argsort(flat, stable=True)[:count]] = False
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = keep[offset : offset + s.numel()].reshape(s.shape)
        offset += s.numel()
    return out
