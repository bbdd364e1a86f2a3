"""Static shapes of every value, by onnx shape inference on a weight-stripped copy of the graph.

Dynamic input dims are fixed (to the shapes given, else to 1) so that FLOPs are per sample;
:func:`assumed_dims` names the dims other than the batch axis that were fixed to 1 without being given.
Large initializers are turned into typed graph inputs before inference, so models over 2 GB work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune import _io

__all__ = ["assumed_dims", "complete_shapes", "infer_shapes"]

logger = logging.getLogger(__name__)


def assumed_dims(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[str, ...]:
    """Dynamic input dims that shape inference fixes to 1 although they are not the batch axis.

    The batch axis (an input's first dynamic dim) at 1 is what "per sample" means; any other dynamic
    dim at 1 (an image width, a sequence length) makes MACs wrong, so it is named: ``'width' (input
    'x', axis 3)``.
    """
    found = []
    for value in model.graph.inputs:
        if value.is_initializer() or value.shape is None or (value.name or "") in (input_shapes or {}):
            continue
        dynamic = [i for i, d in enumerate(value.shape) if not isinstance(d, int) or d < 0]
        for axis in dynamic[1:]:
            label = value.shape[axis].value if isinstance(value.shape[axis], ir.SymbolicDim) else None
            found.append(f"{repr(label) if label else 'a dim'} (input '{value.name}', axis {axis})")
    return tuple(found)


def infer_shapes(
    model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Return ``value name -> static shape`` for every value whose shape is fully known."""
    shapes, error = _io.inferred_shapes(model, input_shapes or {})
    if error is not None:  # inference is best-effort: FLOPs of unknown shapes are reported as unknown
        logger.warning(
            "shape inference failed (%s); FLOPs will be incomplete",
            (str(error).splitlines() or [type(error).__name__])[0],
        )
    for value in model.graph.initializers.values():
        if value.const_value is not None:
            shapes[value.name or ""] = tuple(int(d) for d in value.const_value.shape)
    return shapes


def complete_shapes(
    model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """:func:`infer_shapes`, then the shapes it missed read off one onnxruntime run.

    Shape inference loses track after a Reshape whose target is computed from ``Shape`` ops
    (common in TorchScript exports); running the model once on zeros (dynamic dims fixed as in
    :func:`infer_shapes`) gives the real shapes.
    """
    from onnxprune import _ort

    shapes = infer_shapes(model, input_shapes)
    missing = [out.name for node in model.graph for out in node.outputs if out.name and out.name not in shapes]
    if not missing:
        return shapes
    feeds = {}
    for value in model.graph.inputs:
        if value.is_initializer() or value.name is None:
            continue
        dims = (input_shapes or {}).get(value.name) or shapes.get(value.name)
        if dims is None or value.dtype is None:
            return shapes
        feeds[value.name] = np.zeros(dims, dtype=value.dtype.numpy())
    try:
        session = _ort.session(model, missing, what="model for shape discovery")
        results = session.run(missing, feeds)
    except Exception as e:  # best effort, as inference
        logger.warning("could not run the model to find shapes (%s)", str(e).splitlines()[0])
        return shapes
    shapes.update({name: tuple(int(d) for d in np.shape(r)) for name, r in zip(missing, results, strict=True)})
    return shapes
