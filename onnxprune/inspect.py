"""``onnxprune inspect``: a structural summary of a model."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune._integrity import nonfinite_weights
from onnxprune.analysis.channels import analyze_channels, record
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import assumed_dims, complete_shapes
from onnxprune.analysis.shrinkbench import ShrinkBenchCounts
from onnxprune.analysis.weights import find_weights, read_weight

__all__ = ["channel_groups", "inspect_model"]


def inspect_model(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Ops, params, FLOPs and prunable weights (with the reasons for the others).

    ``assumed_dims`` lists the dynamic input dims the MACs were counted at 1 for (see
    :func:`onnxprune.analysis.shapes.assumed_dims`); give ``input_shapes`` to count real ones.
    ``nonfinite`` lists the weights holding NaN/inf values (commands that transform refuse them).
    ``shrinkbench`` holds ShrinkBench's compression ratios and theoretical speedup (see
    :mod:`onnxprune.analysis.shrinkbench`).
    """
    counts = count_model(model, complete_shapes(model, input_shapes))
    ops = Counter(node.op_type for node in ir.traversal.RecursiveGraphIterator(model.graph))
    found = find_weights(model)
    prunable = []
    total = nonzero = 0
    for w in found:
        values = read_weight(w)
        total, nonzero = total + values.size, nonzero + int(np.count_nonzero(values))
        prunable.append(
            {
                "tensor": w.name,
                "op": w.op_type,
                "shape": list(w.shape),
                "nodes": list(w.node_names),
                "sparsity": float(np.count_nonzero(values == 0) / max(values.size, 1)),
            }
        )
    return {
        "opset": model.opset_imports.get("", None),
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "inputs": [{"name": v.name, "shape": str(v.shape), "dtype": str(v.dtype)} for v in model.graph.inputs],
        "outputs": [{"name": v.name, "shape": str(v.shape), "dtype": str(v.dtype)} for v in model.graph.outputs],
        **counts.as_dict(),
        "assumed_dims": list(assumed_dims(model, input_shapes)),
        "node_macs": [
            {"node": c.node, "op": c.op_type, "macs": c.macs, "sparse_macs": c.sparse_macs} for c in counts.nodes
        ],
        "prunable": prunable,
        "skipped": [{"tensor": s.name, "node": s.node, "op": s.op_type, "reason": s.reason} for s in found.skipped],
        "nonfinite": [dataclasses.asdict(bad) for bad in nonfinite_weights(model)],
        "shrinkbench": ShrinkBenchCounts(
            counts.params, counts.nonzero_params, total, nonzero, counts.macs, counts.sparse_macs
        ).as_dict(),
    }


def channel_groups(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> list[dict[str, Any]]:
    """The coupled channel groups: size, members, parameters, and why a group cannot be pruned."""
    analysis = analyze_channels(model, complete_shapes(model, input_shapes))
    params: dict[int, list[dict[str, Any]]] = {}
    for use in record(analysis):
        layout = analysis.layout(use.by)
        for gid in set(analysis.groups.find(g) for g in (layout.groups() if layout else ())):
            params.setdefault(gid, []).append(
                {"node": use.node.name, "op": use.node.op_type, "input": use.index, "axis": use.axis, "role": use.role}
            )
    groups = []
    for group in analysis.groups.roots():
        values = analysis.values_of(group)
        groups.append(
            {
                "id": group.id,
                "producers": list(group.producers),
                "channels": group.units,
                "block": group.block,
                "units": group.describe(),
                "prunable": group.prunable,
                "inexact": analysis.inexact(group),
                "reasons": [str(b) for b in group.blockers],
                "values": [{"value": v.name, "axis": lay.axis, "width": lay.width} for v, lay in values],
                "params": params.get(group.id, []),
            }
        )
    return groups
