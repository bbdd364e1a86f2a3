"""Unstructured pruning by gradient importances (SNIP, GraSP, DRIVE) scored through the torch view.

The scores need a loss, so labels: cross-entropy of the model's first output on the calibration
samples. With ``rounds`` K > 1 the weights are re-scored K times with the pruned ones held at zero,
the density after round k being ``d^(k/K)`` (DRIVE's exponential schedule; no training in between).
The scores are in ``_gradient_scores``; the selection is the ``unstructured`` pass's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune._fields import check_choices, check_fields
from onnxprune.analysis.weights import Weight, read_weight, write_weight
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.fidelity import check_labels, class_count
from onnxprune.passes._allocators import ALLOCATORS, scope_allocation
from onnxprune.passes._base import OnnxPrunePass, PruneResult
from onnxprune.passes._gradient_scores import GradientImportance, gradient_scores
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, normalizer
from onnxprune.passes._select import prune_lowest
from onnxprune.passes._vocab import NORMALIZERS, SCOPES, choice_field
from onnxprune.passes.finetune import _inputs, _labels, require_torch
from onnxprune.passes.sparsify import _entry, _Selection, finish, select_weights

__all__ = ["GradientPruneConfig", "GradientPrunePass", "round_densities"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GradientPruneConfig(_Selection):
    """Unstructured pruning by a gradient importance (needs torch, calibration data and labels).

    Attributes:
        sparsity: Fraction of weights set to zero, in [0, 1).
        importance: ``snip`` (|w·g|), ``grasp`` (−w·Hg, the largest removed) or ``drive``
            (|w|·(|g| + |Hg|)).
        scope: Which scores compete: each tensor's own (``layer``) or all tensors' at once
            (``global``, the papers' choice; the same as ``allocation: global``).
        normalize: Per-tensor score normalization before the global threshold (``scope: global``).
        allocation: ``uniform`` (every tensor at ``sparsity``) or ``global`` (one threshold).
        rounds: Re-score and prune this many times, the density after round k being
            ``(1 - sparsity)^(k/rounds)`` and the pruned weights held at zero (DRIVE's iterative
            schedule; no training in between). 1: one shot.
        samples: Calibration samples the loss is taken on (default: all of them).
        batch_size: Samples per forward/backward.
        temperature: Softmax temperature of the loss (default: the importance's, GraSP 200, else 1).
        labels: ``.npz`` holding one array of integer labels aligned with the calibration samples
            (default: the calibration file's ``labels`` array).
        include/exclude: Node- or tensor-name globs.
        keep_first/keep_last: Leave the first/last prunable layer dense.
    """

    sparsity: float = 0.5
    importance: str = choice_field("snip", WEIGHT_IMPORTANCES)
    scope: str = choice_field("layer", SCOPES)
    normalize: str = choice_field("none", NORMALIZERS)
    allocation: str = choice_field("uniform", ALLOCATORS)
    rounds: int = 1
    samples: int | None = None
    batch_size: int = 64
    temperature: float | None = None
    labels: str | None = dataclasses.field(default=None, metadata={"path": True})

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        if not 0.0 <= self.sparsity < 1.0:
            raise RecipeError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if WEIGHT_IMPORTANCES[self.importance].method != "gradient":
            gradient = [e.name for e in WEIGHT_IMPORTANCES if e.method == "gradient"]
            raise RecipeError(f"the gradient pass takes importance {', '.join(gradient)}; got '{self.importance}'")
        if self.allocation not in ("uniform", "global"):
            raise RecipeError(f"the gradient pass takes allocation uniform or global, got '{self.allocation}'")
        if self.rounds < 1 or self.batch_size < 1 or (self.samples is not None and self.samples < 1):
            raise RecipeError("rounds, batch_size and samples must be >= 1")
        if self.temperature is not None and self.temperature <= 0:
            raise RecipeError(f"temperature must be > 0, got {self.temperature}")
        allocation = scope_allocation(self.scope, self.allocation)
        object.__setattr__(self, "allocation", allocation)
        object.__setattr__(self, "scope", "global" if allocation == "global" else "layer")


def round_densities(sparsity: float, rounds: int) -> list[float]:
    """Density after each of ``rounds`` rounds: ``d^(k/K)``, k = 1..K, ending at ``d = 1 - sparsity``."""
    density = 1.0 - sparsity
    return [density ** (k / rounds) for k in range(1, rounds + 1)]


def scoring_batches(
    model: ir.Model, source: CalibrationSource | None, config: GradientPruneConfig
) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(inputs, labels) batches of the scoring samples; refuses data without labels in one line."""
    what = f"importance '{config.importance}'"
    if source is None or getattr(source, "random", False):
        raise CalibrationError(f"{what} needs calibration data with labels (--calib DATA.npz holding 'labels')")
    inputs = _inputs(model, source)
    n = len(next(iter(inputs.values())))
    labels = _labels(config.labels, source, n)
    if labels is None:
        raise CalibrationError(
            f"{what} needs labels: a 'labels' array in the calibration .npz, or labels: PATH "
            "(the model's own outputs give a zero gradient)"
        )
    n = min(n, len(labels), config.samples or n)
    labels = np.asarray(labels[:n], dtype=np.int64)
    step = config.batch_size
    return [({k: v[i : i + step] for k, v in inputs.items()}, labels[i : i + step]) for i in range(0, n, step)]


def _check_classes(view: Any, batches: list[tuple[dict[str, np.ndarray], np.ndarray]]) -> None:
    """Refuse labels outside the class axis of the model's first output."""
    first = view.output_names[0]
    logits = view.run_numpy({k: v[:1] for k, v in batches[0][0].items()})[first]
    count = class_count(logits) if logits.ndim == 2 else None
    check_labels(np.concatenate([y for _, y in batches]), {first: count} if count else {})


class GradientPrunePass(OnnxPrunePass):
    """Zero the weights with the lowest gradient importance (SNIP, GraSP, DRIVE), in one or several rounds."""

    name = "gradient"
    config_class = GradientPruneConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        config: GradientPruneConfig = self.config
        report = self.new_report()
        importance = WEIGHT_IMPORTANCES[config.importance]
        assert isinstance(importance, GradientImportance)
        torch = require_torch(f"importance '{config.importance}'")
        from onnxprune.torchview import TorchView

        weights = select_weights(self, model, config, report, needs_data=True)
        modified = False
        head: dict[str, Any] = {"requested_sparsity": config.sparsity, "allocation": config.allocation}
        if config.sparsity > 0 and weights:
            batches = scoring_batches(model, self.context.calibration, config)
            old_threads = torch.get_num_threads()
            if self.context.threads:
                torch.set_num_threads(self.context.threads)
            try:
                view = TorchView(model, trainable=False)
                _check_classes(view, batches)
                held = [w for w in weights if w.name in view.named_tensors()]
                for w in weights:
                    if w.name not in view.named_tensors():
                        report.skip(w.name, w.node_names[0], w.op_type, "not a tensor of the torch view")
                masks = self._rounds(view, held, batches, importance)
            finally:
                torch.set_num_threads(old_threads)
            for weight in held:
                keep = masks[weight.name]
                write_weight(weight, np.where(keep, read_weight(weight), 0))
                report.changed.append(_entry(weight, int(np.count_nonzero(~keep))))
            modified = bool(held)
            head.update(rounds=config.rounds, samples=sum(len(y) for _, y in batches))
        return finish(self, model, report, start, head, modified=modified)

    def _rounds(
        self, view: Any, weights: list[Weight], batches: list, importance: GradientImportance
    ) -> dict[str, np.ndarray]:
        """Keep masks after every round of scoring and pruning (the view's tensors are masked in place)."""
        import torch

        config: GradientPruneConfig = self.config
        original = {w.name: view.parameter(w.name).detach().clone() for w in weights}
        masks = {w.name: np.ones(w.shape, dtype=bool) for w in weights}
        names = [w.name for w in weights]
        for k, density in enumerate(round_densities(config.sparsity, config.rounds), 1):
            with torch.no_grad():
                for name in names:
                    view.parameter(name).copy_(original[name] * torch.from_numpy(masks[name]))
            scores = gradient_scores(view, names, batches, importance, config.temperature)
            for name in names:
                scores[name][~masks[name]] = 0.0  # pruned weights stay pruned: lowest first
            keeps = self._select(weights, scores, 1.0 - density)
            for weight in weights:
                masks[weight.name] &= keeps[weight.name]
            logger.info("gradient: round %d/%d, density %.4f", k, config.rounds, density)
        return masks

    def _select(self, weights: list[Weight], scores: dict[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
        """Keep masks at ``sparsity``: one threshold over all (normalized) scores, or each tensor's own."""
        config: GradientPruneConfig = self.config
        if config.allocation == "global":
            scaled = [scores[w.name] / np.float32(normalizer(scores[w.name], config.normalize)) for w in weights]
            keep_of = prune_lowest([lambda s=s: s for s in scaled], int(round(sparsity * sum(w.size for w in weights))))
            return {w.name: keep_of(i).reshape(w.shape) for i, w in enumerate(weights)}
        return {
            w.name: prune_lowest([lambda w=w: scores[w.name]], int(round(sparsity * w.size)))(0).reshape(w.shape)
            for w in weights
        }
