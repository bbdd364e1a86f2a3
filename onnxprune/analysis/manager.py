"""A cache of analyses over one model, invalidated by the passes that change the graph (LLVM style)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import onnx_ir as ir

__all__ = ["AnalysisManager"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class AnalysisManager:
    """Computes analyses lazily and caches them per model until a pass invalidates them.

    An analysis is any callable ``fn(model, *args) -> result``; ``key`` distinguishes calls with
    different arguments. ``invalidate(preserved=...)`` drops every cached result except those of
    the listed analysis functions.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, Callable[..., Any], Hashable], Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, fn: Callable[..., T], model: ir.Model, *args: Any, key: Hashable = None) -> T:
        """Return the cached result of ``fn(model, *args)``, computing it on first use."""
        cache_key = (id(model), fn, key)
        if cache_key in self._cache:
            self.hits += 1
            return self._cache[cache_key]
        self.misses += 1
        result = fn(model, *args)
        self._cache[cache_key] = result
        return result

    def put(self, fn: Callable[..., T], model: ir.Model, result: T, *, key: Hashable = None) -> None:
        """Store a result computed elsewhere (for example, statistics loaded from a file)."""
        self._cache[(id(model), fn, key)] = result

    def invalidate(self, preserved: Iterable[Callable[..., Any]] = ()) -> None:
        """Drop cached results, except those of the ``preserved`` analysis functions."""
        keep = set(preserved)
        dropped = [k for k in self._cache if k[1] not in keep]
        for k in dropped:
            del self._cache[k]
        logger.debug("invalidated %d cached analyses", len(dropped))
