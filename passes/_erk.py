"""Erdős–Rényi-Kernel (ERK) layer densities (RigL, Evci et al. 2020; also FreeTickets).

A tensor of shape (d_1, ..., d_k) gets density ε·(Σ d_i / Π d_i)^power: small tensors stay denser
than large ones. ε is solved so that the kept weights total ``(1 - sparsity)`` of all weights;
a tensor whose density would exceed 1 is made dense (the one with the largest raw ratio first) and ε
is solved again, as ``rigl/sparse_utils.py`` does. Plain numbers in, plain numbers out (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["erk_densities"]


def erk_densities(shapes: Mapping[str, Sequence[int]], sparsity: float, power: float = 1.0) -> dict[str, float]:
    """Per-tensor densities (kept fraction, in (0, 1]) whose size-weighted mean is ``1 - sparsity``.

    Args:
        shapes: Tensor name -> shape (Conv ``[C_out, C_in, k_h, k_w]``, a matrix in either layout).
        sparsity: The overall fraction of weights to remove, in [0, 1).
        power: Exponent on Σ dims / Π dims (1: ERK; 0: uniform densities).
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: (sum(shape) / math.prod(shape)) ** power for name, shape in shapes.items() if sizes[name]}
    keep = (1 - sparsity) * sum(sizes.values())
    dense: set[str] = set()
    eps = 0.0
    while True:
        free = [name for name in raw if name not in dense]
        if not free:
            break
        eps = (keep - sum(sizes[name] for name in dense)) / sum(raw[name] * sizes[name] for name in free)
        top = max(raw[name] for name in free)
        if eps * top <= 1:
            break
        dense.update(name for name in free if raw[name] == top)
    return {name: 1.0 if name in dense or not sizes[name] else min(1.0, eps * raw[name]) for name in shapes}
