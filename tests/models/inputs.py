"""Random feeds for any test model, built from its graph input specs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

__all__ = ["random_inputs"]


def _infer_vocab(model: onnx.ModelProto, name: str) -> int | None:
    """Smallest first dim of an initializer that a top-level Gather indexes with *name*."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    sizes = [
        shapes[n.input[0]][0]
        for n in model.graph.node
        if n.op_type == "Gather"
        and len(n.input) > 1
        and n.input[1] == name
        and n.input[0] in shapes
        and shapes[n.input[0]]
    ]
    return min(sizes) if sizes else None


def random_inputs(
    model: onnx.ModelProto, batch: int = 2, seed: int = 0, *, vocab: int | None = None
) -> dict[str, np.ndarray]:
    """Random feeds for every real graph input of *model*.

    Symbolic/unknown dims become *batch*; floats are standard normal; bools are
    ``True``; integer inputs are uniform in ``[0, vocab)``, where *vocab* defaults
    to the row count of the embedding table the input indexes (via ``Gather``),
    else 1000.
    """
    rng = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for inp in model.graph.input:
        if inp.name in init_names:  # keep_initializers_as_inputs
            continue
        ttype = inp.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        shape = tuple(d.dim_value if d.HasField("dim_value") else batch for d in ttype.shape.dim)
        if dtype == np.bool_:
            feeds[inp.name] = np.ones(shape, dtype=np.bool_)
        elif np.issubdtype(dtype, np.integer):
            high = min(vocab or _infer_vocab(model, inp.name) or 1000, int(np.iinfo(dtype).max) + 1)
            feeds[inp.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
