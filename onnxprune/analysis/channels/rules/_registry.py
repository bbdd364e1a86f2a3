"""The rule table and the decorator that fills it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis

__all__ = ["RULES", "Rule", "rule"]

Propagate = Callable[[ir.Node, "ChannelAnalysis"], None]
Slice = Callable[[ir.Node, "Executor"], None]


@dataclasses.dataclass(frozen=True)
class Rule:
    """How channels pass through one op type, and what of the op follows them."""

    op: str
    propagate: Propagate
    slice: Slice | None = None


RULES: dict[str, Rule] = {}


def _no_slice(node: ir.Node, executor: Executor) -> None:
    del node, executor


def rule(*ops: str, slice: Slice | None = None) -> Callable[[Propagate], Propagate]:
    """Register ``propagate`` (the decorated function) and ``slice`` for each op type in ``ops``."""

    def register(propagate: Propagate) -> Propagate:
        for op in ops:
            if op in RULES:
                raise ValueError(f"two channel rules for {op}")
            RULES[op] = Rule(op, propagate, slice or _no_slice)
        return propagate

    return register
