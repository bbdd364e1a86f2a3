"""What a pass may need beyond the model: shared analyses and calibration data."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from onnxprune._scratch import Scratch
from onnxprune.analysis.manager import AnalysisManager
from onnxprune.calibration.collect import ProgressFn, StatRequest, collect_stats
from onnxprune.calibration.sequential import BlockFn, SequentialOptions, Step, run_blocks
from onnxprune.calibration.sources import CalibrationSource, input_specs
from onnxprune.calibration.stats import ChannelStats
from onnxprune.errors import CalibrationError

__all__ = ["PassContext"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PassContext:
    """Shared by the passes of one pipeline run.

    Attributes:
        analyses: The analysis cache; passes invalidate it when they change the graph.
        calibration: Where activation statistics come from (``None``: data-driven passes refuse); an
            onnxruntime ``CalibrationDataReader`` is read once when a :class:`Pipeline` runs.
        batch_size: Samples per onnxruntime call during calibration.
        threads: onnxruntime intra-op threads (``None``: onnxruntime's default).
        progress: Called with (done, total) samples while statistics are collected.
        reference: The model before any pass ran (the default teacher of ``finetune``).
        train_progress: Called with (step, steps, loss) while fine-tuning.
        sequential: Layer-sequential or one-shot statistics for data-fitted passes, and their memory budget.
        scratch: The run's scratch folder (weights spilled to disk live there until the model is saved);
            created on first use, removed by the run that owns it (see :func:`onnxprune.recipe.run_recipe`).
        sensitivity: The measured sensitivity curves the running pass allocated by (kind -> unit ->
            ``{"ratios", "errors"}``); the pipeline moves them into that pass's report (``details.sensitivity``).
        float_model: The model as it was just before ``quantize`` ran (set by that pass): the float
            model the INT8 result is validated against besides the original.
        extra_outputs: Models a pass made besides the output (FreeTickets' members), by file-name suffix:
            saved next to the output (``OUT`` stem + suffix) after it, atomically.
    """

    analyses: AnalysisManager = dataclasses.field(default_factory=AnalysisManager)
    calibration: CalibrationSource | None = None
    batch_size: int = 32
    threads: int | None = None
    progress: ProgressFn | None = None
    reference: ir.Model | None = None
    train_progress: Callable[[int, int, float], None] | None = None
    sequential: SequentialOptions = dataclasses.field(default_factory=SequentialOptions)
    scratch: Scratch = dataclasses.field(default_factory=Scratch)
    sensitivity: dict[str, dict[str, dict[str, list[float]]]] = dataclasses.field(default_factory=dict)
    float_model: ir.Model | None = None
    extra_outputs: dict[str, ir.Model] = dataclasses.field(default_factory=dict)

    def is_sequential(self, preferred: bool = True) -> bool:
        """Whether data-fitted work runs layer-sequentially (``preferred``: the pass's own choice)."""
        return bool(self.sequential.resolve(preferred).sequential)

    def data_shapes(self, model: ir.Model) -> dict[str, tuple[int, ...]]:
        """Input shapes of one calibration sample where the model has dynamic dims besides the batch.

        Shapes and MACs are then those of the data (an OCR model's H and W), not of every dynamic dim set to 1.
        """
        specs = input_specs(model)
        if self.calibration is None or all(sum(d is None for d in s.shape) <= 1 for s in specs):
            return {}
        sample = next(iter(self.calibration.batches(1)), {})
        return {s.name: tuple(int(d) for d in np.shape(sample[s.name])) for s in specs if s.name in sample}

    def stats(self, model: ir.Model, requests: Sequence[StatRequest], *, needed_by: str) -> dict[str, ChannelStats]:
        """Return activation statistics for ``requests``, collected once per model and request set."""
        if self.calibration is None:
            raise CalibrationError(f"{needed_by} needs calibration data (--calib PATH, or random inputs)")
        key = tuple(sorted(set(requests), key=repr))
        return self.analyses.get(_collect, model, self, key, key=("stats", key))

    def run_blocks(
        self,
        model: ir.Model,
        steps: Sequence[Step],
        process: BlockFn,
        *,
        needed_by: str,
        reference: ir.Model | None = None,
        sequential: bool = True,
        changes_model: bool = True,
    ) -> int:
        """Calibrate and process ``steps`` block by block (see :mod:`onnxprune.calibration.sequential`).

        ``sequential`` is the pass's preference, used unless the context's options decide.
        ``reference`` defaults to a clone of ``model`` taken now (it shares the tensors). Returns the
        number of blocks. Steps that only read (``changes_model=False``, e.g. spectra before a budget
        is allocated) are always one-shot on ``model`` itself: nothing upstream changes between blocks.
        """
        options = self.sequential.resolve(sequential)
        if not changes_model:
            options, reference = dataclasses.replace(options, sequential=False), model
        if self.calibration is None:
            raise CalibrationError(f"{needed_by} needs calibration data (--calib PATH, or random inputs)")
        paired = any(r.paired for step in steps for r in step.requests)
        if reference is None and (paired or not options.sequential):
            reference = model.clone()
        return run_blocks(
            model,
            self.calibration,
            steps,
            process,
            options=options,
            batch_size=self.batch_size,
            threads=self.threads,
            progress=self.progress,
            reference=reference,
        )


def _collect(model: ir.Model, context: PassContext, requests: tuple[StatRequest, ...]) -> dict[str, ChannelStats]:
    assert context.calibration is not None
    return collect_stats(
        model,
        context.calibration,
        requests,
        batch_size=context.batch_size,
        threads=context.threads,
        progress=context.progress,
    )
