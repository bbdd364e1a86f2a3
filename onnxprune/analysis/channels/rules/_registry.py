"""The rule table and the decorator that fills it; rules are keyed by (domain, op type)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxprune.analysis.channels.apply import Executor
    from onnxprune.analysis.channels.graph import ChannelAnalysis

__all__ = ["ONNX_DOMAIN", "RULES", "Rule", "find_rule", "rule"]

Propagate = Callable[[ir.Node, "ChannelAnalysis"], None]
Slice = Callable[[ir.Node, "Executor"], None]

#: the default ONNX domain ("ai.onnx" is the same domain spelled out)
ONNX_DOMAIN = ""


@dataclasses.dataclass(frozen=True)
class Rule:
    """How channels pass through one op type, and what of the op follows them."""

    op: str
    propagate: Propagate
    slice: Slice | None = None
    domain: str = ONNX_DOMAIN


RULES: dict[tuple[str, str], Rule] = {}


def _no_slice(node: ir.Node, executor: Executor) -> None:
    del node, executor


def _domain(domain: str) -> str:
    return ONNX_DOMAIN if domain == "ai.onnx" else domain


def rule(*ops: str, domain: str = ONNX_DOMAIN, slice: Slice | None = None) -> Callable[[Propagate], Propagate]:
    """Register ``propagate`` (the decorated function) and ``slice`` for each op type in ``ops`` of ``domain``."""

    def register(propagate: Propagate) -> Propagate:
        for op in ops:
            key = (_domain(domain), op)
            if key in RULES:
                raise ValueError(f"two channel rules for {domain + '::' if domain else ''}{op}")
            RULES[key] = Rule(op, propagate, slice or _no_slice, key[0])
        return propagate

    return register


def find_rule(node: ir.Node) -> Rule | None:
    """The rule registered for ``node``'s domain and op type (``None``: none)."""
    return RULES.get((_domain(node.domain), node.op_type))
