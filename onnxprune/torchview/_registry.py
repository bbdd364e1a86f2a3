"""The op table of the torch view: one entry per ONNX op and version, each a small torch function.

An entry is registered with ``@op("Name", since=V)``; a model at opset ``N`` uses the entry with the
highest ``since <= N`` (as the ONNX spec versions operators). An entry takes the node's inputs
(``torch.Tensor`` or ``None`` for omitted optional inputs) and its attributes as Python values, and
returns a tensor or a tuple of tensors (one per output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["OPS", "OpFn", "lookup", "op"]

#: (inputs, attributes) -> output tensor(s)
OpFn = Callable[[list[Any], dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class _Entry:
    since: int
    fn: OpFn


OPS: dict[str, list[_Entry]] = {}


def op(*names: str, since: int = 1) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` for the ONNX ops ``names`` from opset ``since`` on."""

    def register(fn: OpFn) -> OpFn:
        for name in names:
            entries = OPS.setdefault(name, [])
            entries.append(_Entry(since, fn))
            entries.sort(key=lambda e: e.since)
        return fn

    return register


def lookup(name: str, opset: int) -> OpFn | None:
    """The entry for ``name`` at ``opset`` (``None``: not in the table)."""
    chosen = None
    for entry in OPS.get(name, ()):
        if entry.since <= opset:
            chosen = entry.fn
    return chosen
