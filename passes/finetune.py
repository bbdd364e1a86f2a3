"""Brief fine-tuning through a torch view of the graph, trained tensors written back by name.

The pass builds :class:`onnxprune.torchview.TorchView` over the model (its float initializers become
parameters), distills from a teacher (the original model, run in onnxruntime) on the calibration
inputs, optionally adds cross-entropy on labels, keeps pruned weights at zero, optionally prunes
further on a schedule, and writes the trained values into the same initializers. The graph's nodes,
names, opsets and tensor layouts are not touched. torch is imported only when the pass runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import _io, _ort
from onnxprune.analysis.weights import find_weights
from onnxprune.calibration.sources import CalibrationSource, input_specs
from onnxprune.errors import CalibrationError, OnnxPruneError, RecipeError
from onnxprune.passes._base import OnnxPrunePass, PruneResult, check_choice
from onnxprune.passes._schedules import LR_SCHEDULES

__all__ = ["FinetuneConfig", "FinetunePass", "require_torch"]

logger = logging.getLogger(__name__)


def require_torch() -> Any:
    """Import torch, or fail with the install hint."""
    try:
        import torch
    except ImportError as e:
        raise OnnxPruneError("fine-tuning needs torch: pip install onnxprune[torch]") from e
    return torch


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning by distillation from a teacher (the original model), masks held.

    Attributes:
        steps: Optimizer steps (ignored when ``epochs`` is set).
        epochs: Passes over the calibration samples instead of ``steps``.
        batch_size: Samples per step.
        lr: Learning rate (the base for ``silo``).
        optimizer: ``adam`` or ``sgd`` (momentum ``momentum``); ``weight_decay`` for both.
        schedule: ``constant``, ``cosine``, ``slr`` (warm-up + cosine, restarted every cycle) or ``silo``.
        teacher: Path of the teacher model (default: the pipeline's input model).
        labels: ``.npz`` holding one array of N integer labels (aligned with the calibration samples):
            adds cross-entropy on the first output; distillation is weighted by ``distill_weight``.
        distill: ``mse`` (relative squared error of every float output) or ``kl`` (on 2-D logits,
            ``temperature``).
        features: Intermediate values (same name and shape in both models) also distilled.
        seed: Makes batches, dropout-free training and stochastic pruning deterministic.
        threads: torch and onnxruntime threads.
        final_sparsity: Prune further during fine-tuning to this unstructured sparsity of the
            Conv/Gemm/MatMul weights (magnitude): a cubic schedule (Zhu & Gupta) every
            ``prune_every`` steps until ``prune_end`` of the run, or with ``cycles`` > 1 iterative
            prune-retrain cycles (IMP, a geometric share per cycle), optionally ``rewind`` to the
            weights at the start; ``drop_out``/``drop_in`` make each pruning step stochastic (Drop Pruning).
            ``prune_scope``: ``global`` (one magnitude threshold over all tensors) or ``layer``.
        silo_alpha/silo_beta: SILO's S-curve of the peak learning rate over the pruned fraction.
    """

    steps: int = 200
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    teacher: str | None = None
    labels: str | None = None
    distill: str = "mse"
    temperature: float = 1.0
    distill_weight: float = 1.0
    features: tuple[str, ...] = ()
    seed: int = 0
    threads: int | None = None
    final_sparsity: float | None = None
    prune_every: int = 10
    prune_end: float = 0.75
    cycles: int = 1
    rewind: bool = False
    drop_out: float = 0.0
    drop_in: float = 0.0
    prune_scope: str = "global"
    silo_alpha: float = 0.04
    silo_beta: float = 5.0

    def __post_init__(self) -> None:
        if self.steps < 1 and self.epochs is None:
            raise RecipeError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise RecipeError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0:
            raise RecipeError("batch_size must be >= 1 and lr > 0")
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_choice("schedule", self.schedule, LR_SCHEDULES)
        check_choice("distill", self.distill, ("mse", "kl"))
        check_choice("prune_scope", self.prune_scope, ("global", "layer"))
        if self.final_sparsity is not None and not 0 <= self.final_sparsity < 1:
            raise RecipeError(f"final_sparsity must be in [0, 1), got {self.final_sparsity}")
        if self.cycles < 1 or self.prune_every < 1 or not 0 < self.prune_end <= 1:
            raise RecipeError("cycles and prune_every must be >= 1, prune_end in (0, 1]")
        if not (0 <= self.drop_out <= 1 and 0 <= self.drop_in <= 1):
            raise RecipeError("drop_out and drop_in are probabilities in [0, 1]")


def _inputs(model: ir.Model, source: CalibrationSource) -> dict[str, np.ndarray]:
    """All calibration samples, stacked along axis 0."""
    specs = input_specs(model)
    bad = [s.name for s in specs if s.batch_axis != 0]
    if bad:
        raise CalibrationError(f"fine-tuning needs inputs batched along axis 0; '{bad[0]}' is not")
    return next(iter(source.batches(source.num_samples)))


def _labels(path: str | None, source: CalibrationSource, n: int) -> np.ndarray | None:
    if path is None:
        return getattr(source, "labels", None)
    with np.load(path, allow_pickle=False) as archive:
        if len(archive.files) != 1:
            raise CalibrationError(f"{path}: expected one array of labels, found {archive.files}")
        labels = archive[archive.files[0]]
    if labels.ndim != 1 or len(labels) < n or not np.issubdtype(labels.dtype, np.integer):
        raise CalibrationError(f"{path}: labels must be {n} integers, got shape {labels.shape} {labels.dtype}")
    return labels[:n].astype(np.int64)


def _teacher_outputs(
    teacher: ir.Model, inputs: dict[str, np.ndarray], features: tuple[str, ...], batch: int, threads: int | None
) -> dict[str, np.ndarray]:
    session = _ort.session(teacher, features, threads=threads, what="teacher model")
    names = [o.name for o in session.get_outputs()]
    n = len(next(iter(inputs.values())))
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, n, batch):
        feed = {k: v[start : start + batch] for k, v in inputs.items()}
        for name, value in zip(names, session.run(names, feed), strict=True):
            chunks[name].append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items() if np.issubdtype(parts[0].dtype, np.floating)}


class FinetunePass(OnnxPrunePass):
    """Fine-tune the model's float tensors in torch (distillation from a teacher) and write them back."""

    name = "finetune"
    config_class = FinetuneConfig

    def call(self, model: ir.Model) -> PruneResult:
        """Train briefly, keep masks, write the trained tensors back by name."""
        torch = require_torch()
        from onnxprune.passes._train import Masks, TrainData, TrainSettings, train
        from onnxprune.torchview import TorchView, write_back

        start = time.perf_counter()
        config: FinetuneConfig = self.config
        report = self.new_report()
        source = self.context.calibration
        if source is None:
            raise CalibrationError("finetune needs calibration inputs (--calib PATH)")
        teacher = _io.load(config.teacher) if config.teacher else self.context.reference
        if teacher is None:
            raise RecipeError("finetune needs a teacher: --teacher ORIGINAL.onnx (or run it in a pipeline)")
        inputs = _inputs(model, source)
        threads = config.threads or self.context.threads
        data = TrainData(
            inputs,
            _teacher_outputs(teacher, inputs, config.features, config.batch_size, threads),
            _labels(config.labels, source, len(next(iter(inputs.values())))),
        )
        steps = config.steps if config.epochs is None else max(1, round(config.epochs * data.n / config.batch_size))
        fields = {f.name for f in dataclasses.fields(TrainSettings)}
        known = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
        settings = TrainSettings(**{**known, "steps": steps})
        old_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            view = TorchView(model)
            prunable = [w.name for w in find_weights(model) if w.name in view.named_tensors()]
            masks = Masks(view, prunable)
            history = train(view, data, settings, masks, features=config.features, on_step=self.context.train_progress)
        finally:
            torch.set_num_threads(old_threads)
        written = write_back(view, model)
        losses = history["losses"]
        report.changed = [{"tensor": name} for name in written]
        report.summary = {
            "steps": steps,
            "samples": data.n,
            "labels": data.labels is not None,
            "loss_first": losses[0],
            "loss_last": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            "sparsity_before": history["initial_sparsity"],
            "sparsity_after": history["sparsity"],
            "tensors_written": len(written),
            "random_inputs": bool(getattr(source, "random", False)),
        }
        if getattr(source, "random", False):
            logger.warning("finetune: training on random inputs; pass --calib with real data")
        self.context.analyses.invalidate(preserved=(find_weights,))
        report.seconds = time.perf_counter() - start
        logger.info("finetune: %d steps, loss %.4g -> %.4g", steps, losses[0], report.summary["loss_last"])
        return PruneResult(model, True, report)
