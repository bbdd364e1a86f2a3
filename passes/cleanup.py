"""Remove dead nodes, initializers and opsets, reusing onnx-ir's own passes."""

from __future__ import annotations

import dataclasses
import time

import onnx_ir as ir
from onnx_ir.passes import common

from onnxprune._fields import check_fields
from onnxprune.passes._base import OnnxPrunePass, PruneResult

__all__ = ["CleanupConfig", "CleanupPass"]


@dataclasses.dataclass(frozen=True)
class CleanupConfig:
    """Which clean-ups to run. Identity elimination is off by default: it renames values.

    Attributes:
        remove_unused: Remove dead nodes, unused initializers and unused opset imports.
        remove_identities: Also remove Identity nodes (renames the values they produced).
    """

    remove_unused: bool = True
    remove_identities: bool = False

    def __post_init__(self) -> None:
        check_fields(self)


class CleanupPass(OnnxPrunePass):
    """Dead-node, unused-initializer and unused-opset removal (onnx-ir common passes)."""

    name = "cleanup"
    config_class = CleanupConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        report = self.new_report()
        nodes_before = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
        inits_before = sum(len(g.initializers) for g in model.graphs())
        steps: list[ir.passes.PassBase] = []
        if self.config.remove_identities:
            steps.append(common.IdentityEliminationPass())
        if self.config.remove_unused:
            steps += [
                common.RemoveUnusedNodesPass(),
                common.RemoveUnusedFunctionsPass(),
                common.RemoveUnusedOpsetsPass(),
            ]
        modified = bool(steps) and ir.passes.Sequential(*steps)(model).modified
        nodes_after = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
        inits_after = sum(len(g.initializers) for g in model.graphs())
        report.summary = {
            "removed_nodes": nodes_before - nodes_after,
            "removed_initializers": inits_before - inits_after,
        }
        if modified:
            self.context.analyses.invalidate()
        report.seconds = time.perf_counter() - start
        return PruneResult(model, modified, report)
