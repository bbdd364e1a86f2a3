"""Randomized SiPP (M6): the error-bound budget program, the draw counts and the reweighted samples.

Plain numpy functions over *sides*: one row per (neuron, sign) with the sensitivities of the weights
of that sign (zero elsewhere). Each follows a torchprune function (``lucaslie/torchprune``,
``src/torchprune/torchprune/method/...``):

* :func:`error_bound` / :func:`allocate_sizes`: ``sipp/sipp_allocator.py`` ``SiPPRandAllocator``
  (``_get_f_error``, ``_allocate_method``): minimise ``Σ_i l_i f(x_i; α_i)`` over ``0 ≤ x_i ≤ nnz_i``,
  ``Σ x_i ≤ budget``. The reference hands it to cvxpy; it is separable and convex with one coupling
  constraint, so a Lagrange multiplier found by bisection, each ``x_i`` by a scalar bisection, is exact.
* :func:`draws_for`: ``base/base_util.py`` ``adapt_sample_size`` (the smallest draw count whose
  expected number of unique samples, rounded up, reaches the size; sizes 0 and 1 are their own count).
* :func:`sampled_gains`: ``base/base_sparsifier.py`` ``RandFeatureSparsifier`` (multinomial counts,
  ``ŵ = w·c/(m·p)``; a side whose sample is not smaller than its nonzeros is left as it was).
* :func:`pruned_error`: ``SiPPAllocator._get_error_theoretical`` (``C·Σ`` of the sensitivities not kept).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EPS",
    "SIDE_K",
    "allocate_sizes",
    "draws_for",
    "error_bound",
    "expected_unique",
    "log_term",
    "probabilities",
    "pruned_error",
    "sampled_gains",
    "top_gains",
]

#: float32 machine epsilon: the reference's threshold for a zero sensitivity sum or probability
EPS = float(np.finfo(np.float32).eps)
#: the constant ``k`` of the error bound (``k_constant = 3`` in the reference)
SIDE_K = 3.0


def log_term(c: float, delta: float, patches: int, kernel: int) -> float:
    """``α / Σ_j s_ij = 2·C·log(8·(patches+1)·kernel / δ)``."""
    return 2.0 * c * math.log(8.0 * (patches + 1) * kernel / delta)


def error_bound(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The error bound ``½(‖[α/(3x), √(6α/(3x))]‖ + α/(3x))`` of ``x`` samples (``∞`` at ``x ≤ 0``; 0 at ``α = 0``)."""
    x = np.asarray(x, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    u = np.divide(alpha, SIDE_K * x, out=np.full(np.broadcast(x, alpha).shape, np.inf), where=x > 0)
    u = np.where(alpha <= 0, 0.0, u)
    return 0.5 * (np.sqrt(u * u + 2.0 * SIDE_K * u) + u)


def _slope(x: np.ndarray, alpha: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """``-l·f'(x)`` (positive, decreasing in ``x``)."""
    u = alpha / (SIDE_K * x)
    root = np.sqrt(u * u + 2.0 * SIDE_K * u)
    return lead * 0.5 * (1.0 + (u + SIDE_K) / np.maximum(root, 1e-300)) * u * u * SIDE_K / np.maximum(alpha, 1e-300)


def _sizes_at(lam: float, alpha: np.ndarray, lead: np.ndarray, nnz: np.ndarray) -> np.ndarray:
    """The minimiser of ``l_i f_i(x) + λx`` on ``[0, nnz_i]`` for every side (bisection in ``log x``)."""
    lo = np.full(alpha.shape, -60.0)
    hi = np.log(np.maximum(nnz, 1e-300))
    at_top = _slope(nnz, alpha, lead) >= lam  # still worth more than λ at nnz: take them all
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        above = _slope(np.exp(mid), alpha, lead) > lam
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(at_top, nnz, np.exp(0.5 * (lo + hi)))


def allocate_sizes(alpha: np.ndarray, lead: np.ndarray, nnz: np.ndarray, budget: float) -> np.ndarray:
    """Real sample sizes minimising ``Σ l_i f(x_i; α_i)`` with ``0 ≤ x_i ≤ nnz_i`` and ``Σ x_i ≤ budget``.

    Sides with ``α_i = 0`` or ``nnz_i = 0`` get nothing. When the budget binds, ``Σ x_i = budget``.
    """
    alpha, lead, nnz = (np.asarray(a, dtype=np.float64) for a in (alpha, lead, nnz))
    out = np.zeros_like(alpha)
    live = (alpha > 0) & (nnz > 0) & (lead > 0)
    if not live.any() or budget <= 0:
        return out
    a, l_, n = alpha[live], lead[live], nnz[live]
    if n.sum() <= budget:
        out[live] = n
        return out
    lo, hi = 0.0, float(_slope(np.full_like(a, max(budget, 1e-300) / a.size * 1e-6), a, l_).max())
    for _ in range(200):  # Σ x(λ) falls as λ rises
        mid = 0.5 * (lo + hi) if hi / max(lo, 1e-300) < 4 else math.sqrt(max(lo, 1e-300) * hi)
        lo, hi = (mid, hi) if _sizes_at(mid, a, l_, n).sum() > budget else (lo, mid)
        if hi - lo <= 1e-12 * hi:
            break
    x = _sizes_at(hi, a, l_, n)
    short = budget - x.sum()  # the last bit of budget to the sides below their cap, in proportion
    room = n - x
    if short > 0 and room.sum() > 0:
        x = x + room * min(1.0, short / room.sum())
    out[live] = x
    return out


def probabilities(sides: np.ndarray) -> np.ndarray:
    """``p_ij = s_ij / Σ_j s_ij`` per side; a side with sum ``≤ EPS`` and entries ``≤ EPS`` are zero."""
    total = sides.sum(axis=1, keepdims=True)
    p = np.divide(sides, total, out=np.zeros_like(sides, dtype=np.float64), where=total > EPS)
    return np.where(p <= EPS, 0.0, p)


def expected_unique(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Expected number of distinct entries of ``m`` multinomial draws, ``Σ_j 1 − (1 − p_ij)^{m_i}`` per row."""
    return (1.0 - (1.0 - p) ** np.asarray(m, dtype=np.float64)[:, None]).sum(axis=1)


def draws_for(p: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per row, the fewest draws whose expected distinct count, rounded up, reaches ``sizes`` (at most nonzeros − 1)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    support = np.count_nonzero(p, axis=1)
    target = np.minimum(sizes, support - 1)
    m = np.where(sizes <= 1, sizes, np.where(support <= 1, support, 0)).astype(np.int64)
    todo = (sizes > 1) & (support > 1)
    if todo.any():
        q, t = p[todo], target[todo]
        lo = np.zeros(t.shape, dtype=np.int64)  # E(lo) < t
        hi = np.maximum(t, 1).astype(np.int64)
        while True:
            short = np.ceil(expected_unique(q, hi) - 1e-9) < t
            if not short.any():
                break
            lo, hi = np.where(short, hi, lo), np.where(short, hi * 2, hi)
        while (hi - lo > 1).any():
            mid = (lo + hi) // 2
            enough = np.ceil(expected_unique(q, mid) - 1e-9) >= t
            lo, hi = np.where(enough, lo, mid), np.where(enough, mid, hi)
        m[todo] = hi
    return m


def sampled_gains(p: np.ndarray, m: np.ndarray, nonzero: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multipliers ``c_ij / (m_i p_ij)`` of one multinomial draw of ``m_i`` per row (unbiased: ``E = 1``).

    A row with no draws is pruned whole; one whose distinct draws are not fewer than its ``nonzero``
    weights stays as it was (multipliers 1).
    """
    gains = np.zeros(p.shape, dtype=np.float64)
    for i in np.flatnonzero(m > 0):
        counts = rng.multinomial(int(m[i]), p[i] / p[i].sum())
        if np.count_nonzero(counts) >= nonzero[i]:
            gains[i] = 1.0
        else:
            gains[i] = np.divide(counts, m[i] * p[i], out=np.zeros(p.shape[1]), where=p[i] > 0)
    return gains


def top_gains(sides: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """0/1 multipliers keeping the ``sizes[i]`` most sensitive entries of each row (ties: the lower index)."""
    order = np.argsort(-sides, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(sides.shape[1])[None, :].repeat(sides.shape[0], axis=0), axis=1)
    return (ranks < np.asarray(sizes)[:, None]).astype(np.float64)


def pruned_error(sides: np.ndarray, sizes: np.ndarray, c: float) -> np.ndarray:
    """Deterministic SiPP's theoretical error per row: ``C·Σ`` of the sensitivities outside the top ``sizes``."""
    return c * (sides * (1.0 - top_gains(sides, sizes))).sum(axis=1)
