"""Small helpers shared by the rule modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.channels.layout import Layout

if TYPE_CHECKING:
    from onnxprune.analysis.channels.graph import ChannelAnalysis

__all__ = ["attr_int", "attr_ints", "axes_input", "keep_axis", "nchw_input"]


def attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.as_int())


def attr_ints(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return None if attr is None else [int(v) for v in attr.as_ints()]


def axes_input(node: ir.Node, a: ChannelAnalysis, index: int, attr: str = "axes") -> list[int] | None | bool:
    """Axes from the attribute or (newer opsets) a constant input: list, None (absent), False (not constant)."""
    axes = attr_ints(node, attr)
    if axes is not None:
        return axes
    if index < len(node.inputs) and node.inputs[index] is not None:
        const = a.const(node.inputs[index])
        if const is None:
            return False
        return [int(v) for v in np.asarray(const).ravel()]
    return None


def keep_axis(node: ir.Node, a: ChannelAnalysis, layout: Layout, axis: int | None = None) -> None:
    """Output 0 carries the input's layout on the same (or the given) axis."""
    out = node.outputs[0]
    rank = a.rank(out)
    target = layout.axis if axis is None else axis
    a.set(out, layout.moved(target, rank if rank is not None else layout.rank))


def nchw_input(node: ir.Node, a: ChannelAnalysis, refusal: str) -> Layout | None:
    """The layout of input 0 if its channels sit on axis 1 (NCHW ops); otherwise block with ``refusal``."""
    lx = a.layout(node.inputs[0])
    if lx is not None and lx.axis != 1:
        a.block(node, [lx], refusal)
        return None
    return lx
