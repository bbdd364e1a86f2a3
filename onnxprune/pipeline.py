"""A pipeline runs passes in order on one model, sharing their context, timing them, gathering reports."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import onnx_ir as ir

from onnxprune.calibration.readers import as_source
from onnxprune.context import PassContext
from onnxprune.passes._base import OnnxPrunePass, PassReport

__all__ = ["Pipeline", "PipelineResult"]

logger = logging.getLogger(__name__)


class PipelineResult(ir.passes.PassResult):
    """``PassResult`` with the report of every pass, in order."""

    def __init__(self, model: ir.Model, modified: bool, reports: list[PassReport]) -> None:
        super().__init__(model, modified)
        self.reports = reports


class Pipeline(ir.passes.InPlacePass):
    """Runs onnxprune passes in order; itself an in-place pass, so it nests in a ``PassManager``.

    All passes share one :class:`PassContext` (analysis cache and calibration data). Passes built
    without a context get the pipeline's. The context's calibration data may be an onnxruntime
    ``CalibrationDataReader``: it is read once, for the model the pipeline runs on.
    """

    def __init__(self, passes: Sequence[OnnxPrunePass], context: PassContext | None = None) -> None:
        super().__init__()
        self.context = context if context is not None else PassContext()
        self.passes = list(passes)
        for p in self.passes:
            if not p.context_given:
                p.context = self.context

    def call(self, model: ir.Model) -> PipelineResult:
        if self.context.calibration is not None:
            self.context.calibration = as_source(self.context.calibration, model)
        reports: list[PassReport] = []
        modified = False
        for index, p in enumerate(self.passes):
            start = time.perf_counter()
            logger.info("running pass %d/%d: %s", index + 1, len(self.passes), p.name)
            p.context.sensitivity.clear()
            result = p(model)
            modified |= result.modified
            report = getattr(result, "report", None) or p.new_report()
            report.seconds = time.perf_counter() - start
            if p.context.sensitivity:
                report.details["sensitivity"] = dict(p.context.sensitivity)
                p.context.sensitivity.clear()
            reports.append(report)
        return PipelineResult(model, modified, reports)
