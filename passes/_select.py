"""Exact selection of the lowest-scoring weights: global/per-tensor radix select, per-row, N:M.

Scores are non-negative float32, whose bit patterns sort like the values, so the n-th smallest score
over any number of tensors is found with four streaming 8-bit histogram passes (no concatenation,
memory independent of the model's size) and ties are broken in tensor order, giving exactly the
requested count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ROW_CHUNK_BYTES", "counts_mask", "nm_mask", "prune_lowest", "row_chunks", "row_mask", "split_count"]

ScoreFn = Callable[[], np.ndarray]


def _keys(scores: np.ndarray) -> np.ndarray:
    scores = np.ascontiguousarray(scores, dtype=np.float32).reshape(-1)
    scores = np.where(np.isnan(scores), np.float32(np.inf), np.maximum(scores, 0))
    return scores.view(np.uint32)


def _nth_key(score_fns: Sequence[ScoreFn], n: int) -> tuple[int, int]:
    """Return (key of the n-th smallest score (0-based), number of scores strictly below it)."""
    prefix, below = 0, 0
    for shift in (24, 16, 8, 0):
        high_mask = np.uint32(~((1 << (shift + 8)) - 1) & 0xFFFFFFFF)
        hist = np.zeros(256, dtype=np.int64)
        for fn in score_fns:
            keys = _keys(fn())
            keys = keys[(keys & high_mask) == prefix] if shift < 24 else keys
            hist += np.bincount((keys >> np.uint32(shift)) & np.uint32(0xFF), minlength=256)
        cumulative = np.cumsum(hist)
        digit = int(np.searchsorted(cumulative, n - below, side="right"))
        below += int(cumulative[digit - 1]) if digit > 0 else 0
        prefix |= digit << shift
    return prefix, below


def prune_lowest(score_fns: Sequence[ScoreFn], n: int) -> Callable[[int], np.ndarray]:
    """Choose exactly ``n`` lowest scores across tensors.

    Returns a function that, called with the index of a tensor (in order, once each), gives its
    boolean *keep* mask (flattened). Ties at the threshold are pruned in tensor order.
    """
    if n <= 0:
        return lambda i: np.ones(score_fns[i]().size, dtype=bool)
    key, below = _nth_key(score_fns, n - 1)
    ties_left = n - below

    def keep(i: int) -> np.ndarray:
        nonlocal ties_left
        keys = _keys(score_fns[i]())
        mask = keys > key
        equal = np.flatnonzero(keys == key)
        take = min(ties_left, equal.size)
        ties_left -= take
        mask[equal[take:]] = True
        return mask

    return keep


def split_count(total: int, parts: int) -> np.ndarray:
    """Split ``total`` into ``parts`` integers differing by at most one (larger ones first)."""
    counts = np.full(parts, total // parts, dtype=np.int64)
    counts[: total % parts] += 1
    return counts


def row_mask(scores: np.ndarray, n: int) -> np.ndarray:
    """Keep mask for ``scores [rows, cols]`` pruning ``n`` in total, spread evenly over rows."""
    return counts_mask(scores, split_count(n, scores.shape[0]))


def counts_mask(scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Keep mask for ``scores [rows, cols]`` pruning the ``counts[r]`` lowest scores of each row ``r``."""
    rows, cols = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(cols)[None, :].repeat(rows, axis=0), axis=1)
    return ranks >= np.asarray(counts)[:, None]


#: Bytes of the rows a large weight is worked on at once where its rows are independent (N:M):
#: the working copies of a language model's head stay this small.
ROW_CHUNK_BYTES = 64 << 20


def row_chunks(rows: int, row_bytes: int, chunk_bytes: int | None = None) -> list[slice]:
    """Slices of consecutive rows (``row_bytes`` each), about ``chunk_bytes`` (:data:`ROW_CHUNK_BYTES`) per slice."""
    step = max(1, (chunk_bytes or ROW_CHUNK_BYTES) // max(row_bytes, 1))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def nm_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep mask for ``scores [..., K]``: in every run of ``m`` along the last axis keep the ``n`` best."""
    groups = scores.reshape(*scores.shape[:-1], scores.shape[-1] // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(scores.shape)
