"""A cache of analyses over one model, invalidated by the passes that change the graph (LLVM style)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import onnx_ir as ir

__all__ = ["AnalysisManager"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_Key = tuple[Callable[..., Any], Hashable]


class AnalysisManager:
    """Computes analyses lazily and caches them on the model they describe until a pass invalidates them.

    An analysis is any callable ``fn(model, *args) -> result``; ``key`` distinguishes calls with
    different arguments. Results are held weakly by the model object itself, so a freed model takes its
    analyses with it and a new model never sees another's results (even at a reused address).
    ``invalidate(preserved=...)`` drops every cached result except those of the listed analysis functions.
    """

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[ir.Model, dict[_Key, Any]] = weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def get(self, fn: Callable[..., T], model: ir.Model, *args: Any, key: Hashable = None) -> T:
        """Return the cached result of ``fn(model, *args)``, computing it on first use."""
        entries = self._cache.setdefault(model, {})
        if (fn, key) in entries:
            self.hits += 1
            return entries[(fn, key)]
        self.misses += 1
        result = entries[(fn, key)] = fn(model, *args)
        return result

    def put(self, fn: Callable[..., T], model: ir.Model, result: T, *, key: Hashable = None) -> None:
        """Store a result computed elsewhere (for example, statistics loaded from a file)."""
        self._cache.setdefault(model, {})[(fn, key)] = result

    def invalidate(self, preserved: Iterable[Callable[..., Any]] = (), model: ir.Model | None = None) -> None:
        """Drop cached results (of ``model``, or of every model), except those of the ``preserved`` functions."""
        keep = set(preserved)
        models = [model] if model is not None else list(self._cache.keys())
        dropped = 0
        for m in models:
            entries = self._cache.get(m, {})
            for k in [k for k in entries if k[0] not in keep]:
                del entries[k]
                dropped += 1
        logger.debug("invalidated %d cached analyses", dropped)
