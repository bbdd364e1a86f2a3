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
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune import _io, _ort
from onnxprune._fields import check_at_least, check_choices, check_fields
from onnxprune.analysis.weights import find_weights
from onnxprune.calibration.sources import CalibrationSource, input_specs
from onnxprune.errors import CalibrationError, OnnxPruneError, RecipeError
from onnxprune.fidelity import check_labels, class_count
from onnxprune.passes._base import OnnxPrunePass, PruneResult, check_choice
from onnxprune.passes._schedules import LR_SCHEDULES
from onnxprune.passes._sparse_methods import SPARSE_METHODS, method_options
from onnxprune.passes._vocab import SCOPES, choice_field

__all__ = ["MIN_HOLDOUT", "TRAIN_CHOICES", "FinetuneConfig", "FinetunePass", "require_torch", "split_holdout"]

logger = logging.getLogger(__name__)

#: The fewest samples a held-out split (and the training split left) may have.
MIN_HOLDOUT = 4
TRAIN_CHOICES = ("all", "weights", "norms+bias")


def require_torch(what: str = "fine-tuning") -> Any:
    """Import torch, or fail with the install hint (``what`` needs it)."""
    try:
        import torch
    except ImportError as e:
        raise OnnxPruneError(f"{what} needs torch: pip install onnxprune[torch]") from e
    return torch


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning by distillation from a teacher (the original model), masks held.

    Attributes:
        steps: Optimizer steps (ignored when ``epochs`` is set).
        epochs: Passes over the calibration samples instead of ``steps``.
        batch_size: Samples per step.
        lr: Learning rate (the base for ``silo``); ``None``: chosen by a held-out probe -- each of
            ``lr_max`` x 10^(-k/2), k = 0..6 (1e-3 down to 1e-6: trained transformers want the low end),
            trains ``probe_steps`` steps (default: a twentieth of the
            run, at least 5) from the same start and the one with the lowest held-out loss is used.
        lr_max: The largest learning rate the probe tries (and ``lr`` when the probe is off).
        probe_steps: Steps each learning rate of the probe trains (default: a twentieth of the run, at least 5).
        optimizer: ``adam`` or ``sgd`` (momentum ``momentum``); ``weight_decay`` for both.
        momentum: SGD momentum.
        weight_decay: L2 penalty of the optimizer (Adam or SGD).
        schedule: ``constant``, ``cosine``, ``warmup_cosine`` (10% linear warm-up, then cosine), ``slr``
            (warm-up + cosine, restarted every cycle) or ``silo``.
        teacher: Path of the teacher model (default: the pipeline's input model).
        labels: ``.npz`` holding one array of N integer labels (aligned with the calibration samples):
            adds cross-entropy on the first output; distillation is weighted by ``distill_weight``.
        distill: ``mse`` (relative squared error of every float output; per-token outputs [B, S, ...]
            leave out the padding positions of an ``attention_mask`` input) or ``kl`` (on 2-D logits,
            ``temperature``).
        temperature: Softmax temperature of ``kl`` distillation.
        distill_weight: Weight of the distillation loss when ``labels`` add cross-entropy.
        features: Intermediate values (same name and shape in both models) also distilled.
        seed: Makes batches, dropout-free training and stochastic pruning deterministic.
        threads: torch and onnxruntime threads.
        final_sparsity: Prune further during fine-tuning to this unstructured sparsity of the
            Conv/Gemm/MatMul weights (magnitude): a cubic schedule (Zhu & Gupta) every
            ``prune_every`` steps until ``prune_end`` of the run, or with ``cycles`` > 1 iterative
            prune-retrain cycles (IMP, a geometric share per cycle), optionally ``rewind`` to the
            weights at the start; ``drop_out``/``drop_in`` make each pruning step stochastic (Drop Pruning).
        prune_scope: With ``final_sparsity``: ``global`` (one magnitude threshold over all tensors) or
            ``layer`` (every tensor at the same sparsity).
        prune_every: With ``final_sparsity``: steps between two pruning steps of the cubic schedule.
        prune_end: With ``final_sparsity``: fraction of the run by which the final sparsity is reached.
        cycles: Prune-retrain cycles (IMP) with ``final_sparsity``.
        rewind: IMP: reset the surviving weights to the starting values after each prune.
        drop_out/drop_in: Drop Pruning: at each pruning step, each of the twice-as-many smallest surviving
            weights is removed with probability ``drop_out``; each pruned weight comes back (at 0) with
            probability ``drop_in``.
        silo_alpha/silo_beta: SILO's S-curve of the peak learning rate over the pruned fraction.
        holdout: Fraction of the calibration samples held out (at least ``MIN_HOLDOUT``, chosen by
            ``seed``), never trained on: the objective on them is measured before training and every
            ``eval_every`` steps, and the weights with the lowest held-out loss are kept -- the
            starting (one-shot) weights when training never improved it. ``0``: train on all, keep the last.
        eval_every: Steps between held-out evaluations (default: a twentieth of the run).
        patience: Stop after this many evaluations without a held-out improvement (``None``: never).
        train: Which float tensors train: ``all``, ``weights`` (rank >= 2) or ``norms+bias`` (rank <= 1).
        method: A sparse-training method run inside the loop (``onnxprune passes finetune`` lists
            them): it may prune, regrow or learn the masks of the Conv/Gemm/MatMul weights.
        method_options: The method's options by name (``--method-option KEY=VALUE``).
    """

    steps: int = 200
    epochs: float | None = None
    batch_size: int = 32
    lr: float | None = None
    lr_max: float = 1e-3
    probe_steps: int | None = None
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "warmup_cosine"
    teacher: str | None = dataclasses.field(default=None, metadata={"path": True})
    labels: str | None = dataclasses.field(default=None, metadata={"path": True})
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
    prune_scope: str = choice_field("global", SCOPES)
    silo_alpha: float = 0.04
    silo_beta: float = 5.0
    holdout: float = 0.2
    eval_every: int | None = None
    patience: int | None = 5
    train: str = "all"
    method: str = choice_field("none", SPARSE_METHODS)
    method_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        method_options(self.method, self.method_options)
        if self.steps < 1 and self.epochs is None:
            raise RecipeError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise RecipeError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or (self.lr is not None and self.lr <= 0) or self.lr_max <= 0:
            raise RecipeError("batch_size must be >= 1, lr and lr_max > 0")
        if self.probe_steps is not None and self.probe_steps < 1:
            raise RecipeError(f"probe_steps must be >= 1, got {self.probe_steps}")
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_choice("schedule", self.schedule, LR_SCHEDULES)
        check_choice("distill", self.distill, ("mse", "kl"))
        if self.final_sparsity is not None and not 0 <= self.final_sparsity < 1:
            raise RecipeError(f"final_sparsity must be in [0, 1), got {self.final_sparsity}")
        if self.cycles < 1 or self.prune_every < 1 or not 0 < self.prune_end <= 1:
            raise RecipeError("cycles and prune_every must be >= 1, prune_end in (0, 1]")
        if not (0 <= self.drop_out <= 1 and 0 <= self.drop_in <= 1):
            raise RecipeError("drop_out and drop_in are probabilities in [0, 1]")
        if not 0 <= self.holdout < 1:
            raise RecipeError(f"holdout must be in [0, 1), got {self.holdout}")
        if (self.eval_every is not None and self.eval_every < 1) or (self.patience is not None and self.patience < 1):
            raise RecipeError("eval_every and patience must be >= 1")
        check_choice("train", self.train, TRAIN_CHOICES)
        check_at_least(self, {"seed": 0, "threads": 1})
        if self.temperature <= 0 or self.momentum < 0 or self.weight_decay < 0 or self.distill_weight < 0:
            raise RecipeError("temperature must be > 0; momentum, weight_decay and distill_weight >= 0")


def _refuse_divergence(history: dict[str, Any], lr: float, *, finite: bool) -> None:
    """Refuse weights a diverged run left NaN/inf; warn when the held-out best (finite) weights were kept."""
    step = history["diverged_at"]
    if step is None and finite:
        return
    where = "" if step is None else f" at step {step + 1}"
    if not finite or history["heldout_best"] is None:
        raise RecipeError(f"fine-tuning diverged: NaN/inf loss or weights{where} (lr {lr:g}); lower --lr")
    logger.warning(
        "finetune: the loss became NaN/inf%s (lr %g); kept the held-out best weights (step %s)",
        where,
        lr,
        history["kept_step"],
    )


def _inputs(model: ir.Model, source: CalibrationSource) -> dict[str, np.ndarray]:
    """All calibration samples, stacked along axis 0."""
    specs = input_specs(model)
    bad = [s.name for s in specs if s.batch_axis != 0]
    if bad:
        raise CalibrationError(f"fine-tuning needs inputs batched along axis 0; '{bad[0]}' is not")
    return next(iter(source.batches(source.num_samples)))


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (training, held-out) sample indices: a seeded, disjoint split of ``range(n)``."""
    if fraction == 0:
        return np.arange(n), np.arange(0)
    held = max(MIN_HOLDOUT, round(fraction * n))
    if n - held < MIN_HOLDOUT:
        raise CalibrationError(
            f"holding out {held} of {n} calibration samples leaves fewer than {MIN_HOLDOUT} to train on; "
            "give more samples or holdout 0"
        )
    order = np.random.default_rng([seed, n]).permutation(n)
    return np.sort(order[held:]), np.sort(order[:held])


def _trainable(view: Any, which: str) -> list[str]:
    """Names of the view's tensors that train under ``which`` (the others get no gradient)."""
    names = []
    for name, param in view.named_tensors().items():
        param.requires_grad_(which == "all" or (param.dim() >= 2) == (which == "weights"))
        if param.requires_grad:
            names.append(name)
    return names


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


def _check_labels_fit(model: ir.Model, data: Any) -> None:
    """Refuse labels outside the class axis of the first output (cross-entropy is taken on it)."""
    first = model.graph.outputs[0].name or ""
    logits = data.teacher.get(first)
    count = class_count(logits) if logits is not None and logits.ndim == 2 else None
    check_labels(data.labels, {first: count} if count else {})


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
        from onnxprune.passes._train import Masks, TrainData, TrainSettings, all_finite, probe_lr, train
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
        everything = TrainData(
            inputs,
            _teacher_outputs(teacher, inputs, config.features, config.batch_size, threads),
            _labels(config.labels, source, len(next(iter(inputs.values())))),
        )
        if everything.labels is not None:
            _check_labels_fit(model, everything)
        train_index, held_index = split_holdout(everything.n, config.holdout, config.seed)
        data = everything.subset(train_index)
        heldout = everything.subset(held_index) if len(held_index) else None
        if heldout is None and config.lr is None:
            raise RecipeError("choosing the learning rate needs held-out samples: set lr, or holdout > 0")
        steps = config.steps if config.epochs is None else max(1, round(config.epochs * data.n / config.batch_size))
        fields = {f.name for f in dataclasses.fields(TrainSettings)}
        known = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
        eval_every = config.eval_every or max(1, steps // 20)
        settings = TrainSettings(
            **{**known, "lr": config.lr or config.lr_max, "steps": steps, "eval_every": eval_every}
        )
        old_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            view = TorchView(model)
            names = _trainable(view, config.train)
            weights = [w for w in find_weights(model) if w.name in view.named_tensors()]
            prunable = [w.name for w in weights]
            masks = Masks(view, prunable, {w.name: w.out_axis for w in weights})
            probe: list[dict[str, float]] = []
            if config.lr is None:
                candidates = [config.lr_max * 10 ** (-k / 2) for k in range(7)]
                probe_steps = config.probe_steps or max(5, steps // 20)
                lr, probe = probe_lr(
                    view, data, heldout, settings, masks, candidates, probe_steps, features=config.features
                )
                settings = dataclasses.replace(settings, lr=lr)
            run = SPARSE_METHODS[config.method].start(
                method_options(config.method, config.method_options), settings, masks, view
            )
            progress = self.context.train_progress
            history = train(
                view, data, settings, masks, heldout=heldout, features=config.features, on_step=progress, method=run
            )
            _refuse_divergence(history, settings.lr, finite=all_finite(view))
        finally:
            torch.set_num_threads(old_threads)
        masks_change = config.final_sparsity is not None or config.method != "none"
        written = write_back(view, model, [*names, *prunable] if masks_change else names)
        self.context.extra_outputs.update(run.outputs(model, data.inputs))
        losses = history["losses"]
        report.changed = [{"tensor": name} for name in written]
        report.summary = {
            "steps": len(losses),
            "samples": data.n,
            "heldout_samples": len(held_index),
            "labels": data.labels is not None,
            "lr": settings.lr,
            "loss_first": losses[0],
            "loss_last": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            "sparsity_before": history["initial_sparsity"],
            "sparsity_after": history["sparsity"],
            "tensors_written": len(written),
            "random_inputs": bool(getattr(source, "random", False)),
            "method": config.method,
        }
        if history["method"]:
            report.details["method"] = run.summary()  # again: ``outputs`` may have added to it
        if heldout is not None:
            curve = history["curve"]
            report.summary.update(
                heldout_start=curve[0]["heldout"],
                heldout_kept=history["heldout_best"],
                kept_step=history["kept_step"],
            )
            report.details["curve"] = curve
            report.details["lr_probe"] = probe
        if getattr(source, "random", False):
            logger.warning("finetune: training on random inputs; pass --calib with real data")
        if heldout is not None and history["kept_step"] == 0:
            report.summary["note"] = "fine-tuning did not improve the held-out loss; kept the one-shot weights"
            logger.warning("finetune: %s", report.summary["note"])
        self.context.analyses.invalidate(preserved=(find_weights,))
        report.seconds = time.perf_counter() - start
        logger.info("finetune: %d steps, loss %.4g -> %.4g", len(losses), losses[0], report.summary["loss_last"])
        if heldout is not None:
            logger.info(
                "finetune: held-out loss %.4g before, %.4g kept (step %d of %d)",
                report.summary["heldout_start"], history["heldout_best"], history["kept_step"], len(losses),
            )  # fmt: skip
        return PruneResult(model, True, report)
