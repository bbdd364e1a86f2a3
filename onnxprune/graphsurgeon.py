"""Run onnxprune passes on onnx-graphsurgeon graphs.

The adapter is a thin round trip: ``gs.export_onnx`` → ``onnx_ir`` model → passes →
``ir.to_proto`` → ``gs.import_onnx``. The input graph is left untouched; a new graph is returned.
Opset imports, IR version, producer, graph name and node/tensor names survive the round trip.
onnx-graphsurgeon holds the whole model as protobuf, so this is meant for models under 2 GB.

``onnx_graphsurgeon`` is imported inside the functions, so ``import onnxprune`` works without it::

    from onnxprune.graphsurgeon import run_on_graphsurgeon
    from onnxprune.passes import NMPruneConfig, NMPrunePass

    pruned = run_on_graphsurgeon(NMPrunePass(NMPruneConfig(n=2, m=4)), graph)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

import onnx_ir as ir

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

__all__ = ["PassOrPasses", "run_on_graphsurgeon", "run_on_graphsurgeon_with_result"]

logger = logging.getLogger(__name__)

#: One pass (an onnxprune pass, a ``Pipeline`` or any ``onnx_ir`` pass) or a sequence run in order.
PassOrPasses: TypeAlias = ir.passes.PassBase | Sequence[ir.passes.PassBase]


def _graphsurgeon() -> ModuleType:
    try:
        import onnx_graphsurgeon
    except ImportError as e:
        raise ImportError("onnxprune.graphsurgeon needs onnx-graphsurgeon: pip install onnx-graphsurgeon") from e
    return onnx_graphsurgeon


def _as_pass(passes: PassOrPasses) -> ir.passes.PassBase:
    if isinstance(passes, ir.passes.PassBase):
        return passes
    passes = list(passes)
    if not passes:
        raise ValueError("run_on_graphsurgeon needs at least one pass")
    bad = [p for p in passes if not isinstance(p, ir.passes.PassBase)]
    if bad:
        raise TypeError(f"expected onnx_ir passes, got {type(bad[0]).__name__}")
    return passes[0] if len(passes) == 1 else ir.passes.Sequential(*passes)


def run_on_graphsurgeon_with_result(passes: PassOrPasses, graph: gs.Graph) -> tuple[gs.Graph, ir.passes.PassResult]:
    """Run passes on an onnx-graphsurgeon graph; return the new graph and the pass result.

    Args:
        passes: One pass, or a sequence of passes run in order with ``onnx_ir.passes.Sequential``.
            Pass a :class:`onnxprune.Pipeline` to get per-pass reports in the result.
        graph: The graph to transform; it is not modified.

    Returns:
        The transformed graph and the pass result (a ``PruneResult`` with ``report`` for one
        onnxprune pass, a ``PipelineResult`` with ``reports`` for a pipeline, else a ``PassResult``).
    """
    gs = _graphsurgeon()
    pass_ = _as_pass(passes)
    model = ir.serde.deserialize_model(gs.export_onnx(graph))
    logger.debug("running %s on graphsurgeon graph '%s' (%d nodes)", pass_, graph.name, len(graph.nodes))
    result = pass_(model)
    return gs.import_onnx(ir.serde.serialize_model(result.model)), result


def run_on_graphsurgeon(passes: PassOrPasses, graph: gs.Graph) -> gs.Graph:
    """Run passes on an onnx-graphsurgeon graph and return the new graph (see the ``_with_result`` form)."""
    return run_on_graphsurgeon_with_result(passes, graph)[0]
