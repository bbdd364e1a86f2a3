"""Rethinking's baseline (M3): the pruned architecture re-initialised and trained from scratch.

Liu et al. (ICLR 2019) found that for structured pruning, training the pruned architecture from a random
initialisation matches or beats fine-tuning the inherited weights, given the same epochs (Scratch-E)
or the same compute (Scratch-B: epochs x FLOPs(full) / FLOPs(pruned)). The pass redraws every weight,
bias and norm parameter (:mod:`onnxprune.passes._reinit`, torch's defaults, seeded), then trains like
``finetune`` -- on labels (cross-entropy, the paper's objective) when the calibration data or ``labels``
hold them, plus distillation from the teacher weighted by ``distill_weight`` (0: labels only; without
labels: distillation only). FLOPs are counted by :mod:`onnxprune.analysis.flops` on the calibration
shapes; the full model is the teacher (the original model).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import onnx_ir as ir

from onnxprune import _io
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.errors import RecipeError
from onnxprune.passes._base import OnnxPrunePass, PruneResult, check_choice
from onnxprune.passes._reinit import reinitialize
from onnxprune.passes.finetune import FinetuneConfig, FinetunePass

__all__ = ["BUDGETS", "ScratchConfig", "ScratchPass", "scratch_steps"]

logger = logging.getLogger(__name__)

#: ``E``: the same steps; ``B``: the steps scaled by FLOPs(full) / FLOPs(pruned).
BUDGETS = ("E", "B")


@dataclasses.dataclass(frozen=True)
class ScratchConfig(FinetuneConfig):
    """Train the (pruned) model from a fresh initialisation; the other fields are ``finetune``'s.

    Attributes:
        budget: ``E`` (Scratch-E: ``steps``/``epochs`` as given) or ``B`` (Scratch-B: multiplied by
            FLOPs(teacher) / FLOPs(model), rounded down, as the paper's epochs).
        init_seed: Seed of the re-initialisation (default: ``seed``).
        keep_zeros: Zero weight entries stay zero (an unstructured mask is part of the architecture);
            false: every entry is redrawn.
    """

    budget: str = "E"
    init_seed: int | None = None
    keep_zeros: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("budget", self.budget, BUDGETS)
        if self.init_seed is not None and self.init_seed < 0:
            raise RecipeError(f"init_seed must be >= 0, got {self.init_seed}")


def scratch_steps(steps: float, full_flops: int, pruned_flops: int) -> int:
    """Scratch-B's budget: ``floor(steps * full / pruned)`` (at least 1)."""
    if pruned_flops <= 0:
        raise RecipeError("Scratch-B needs the pruned model's FLOPs (no Conv/Gemm/MatMul with known shapes)")
    return max(1, math.floor(steps * full_flops / pruned_flops))


class ScratchPass(OnnxPrunePass):
    """Re-initialise the model's weights (torch defaults) and train it from scratch (Scratch-E/Scratch-B)."""

    name = "scratch"
    config_class = ScratchConfig

    def call(self, model: ir.Model) -> PruneResult:
        """Redraw the tensors, scale the budget, then train as ``finetune`` does."""
        config: ScratchConfig = self.config
        teacher = _io.load(config.teacher) if config.teacher else self.context.reference
        if teacher is None:
            raise RecipeError("scratch needs the original model: --teacher ORIGINAL.onnx (or run it in a pipeline)")
        counts = reinitialize(
            model, config.seed if config.init_seed is None else config.init_seed, keep_zeros=config.keep_zeros
        )
        full = count_model(teacher, complete_shapes(teacher, self.context.data_shapes(teacher))).flops
        pruned = count_model(model, complete_shapes(model, self.context.data_shapes(model))).flops
        finetune = {f.name: getattr(config, f.name) for f in dataclasses.fields(FinetuneConfig)}
        if config.budget == "B" and config.epochs is not None:
            finetune["epochs"] = config.epochs * full / pruned
        elif config.budget == "B":
            finetune["steps"] = scratch_steps(config.steps, full, pruned)
        result = FinetunePass(FinetuneConfig(**finetune), self.context)(model)
        report = self.new_report()
        report.changed = result.report.changed
        report.details = result.report.details
        report.summary = {
            **result.report.summary,
            "budget": config.budget,
            "flops_full": full,
            "flops_pruned": pruned,
            "flops_ratio": full / pruned if pruned else None,
            "steps_reference": config.steps if config.epochs is None else None,
            "epochs": finetune["epochs"],
            "reinitialized": counts,
            "objective": _objective(result.report.summary.get("labels", False), config.distill_weight),
        }
        report.seconds = result.report.seconds
        logger.info("scratch-%s: %s steps from a fresh initialisation", config.budget, report.summary["steps"])
        return PruneResult(model, True, report)


def _objective(labels: bool, distill_weight: float) -> str:
    if not labels:
        return "distillation from the teacher (no labels)"
    return "labels" if distill_weight == 0 else f"labels + {distill_weight:g} x distillation"
