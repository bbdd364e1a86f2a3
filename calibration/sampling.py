"""Which samples of a data set are used: all of them, or a seeded shuffle's first N (kept in file order)."""

from __future__ import annotations

import numpy as np

__all__ = ["pick_samples"]


def pick_samples(count: int, samples: int | None, seed: int) -> list[int]:
    """Indices of the samples used: all ``count``, or ``samples`` of them picked by a seeded shuffle, in order.

    The same ``seed`` picks the same samples on every run; a shuffle (not the first N) keeps a folder
    sorted by class from giving one class only.
    """
    if samples is None or samples >= count:
        return list(range(count))
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(count)[:samples])
