"""Unstructured and N:M pruning: magnitude or Wanda scores, layer-wise or global selection."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune._fields import check_choices, check_fields
from onnxprune.analysis.weights import Weight, find_weights, read_weight, write_weight
from onnxprune.calibration.stats import ChannelStats
from onnxprune.errors import RecipeError
from onnxprune.passes._allocators import (
    ALLOCATORS,
    Gains,
    Ratio,
    check_allocation,
    nm_coverage,
    scope_allocation,
    weight_ratios,
)
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult, matches
from onnxprune.passes._scores import WEIGHT_IMPORTANCES, from_neuron_rows, neuron_rows, normalizer, score, to_rows
from onnxprune.passes._select import counts_mask, nm_mask, prune_lowest, row_chunks, row_mask
from onnxprune.passes._steps import each_weight
from onnxprune.passes._vocab import NORMALIZERS, SCOPES, choice_field

__all__ = [
    "NMPruneConfig",
    "NMPrunePass",
    "UnstructuredPruneConfig",
    "UnstructuredPrunePass",
    "layer_keep",
    "nm_pruned",
    "select_weights",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Selection:
    """Which weights a pass may touch."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep_first: bool = False
    keep_last: bool = False


@dataclasses.dataclass(frozen=True)
class UnstructuredPruneConfig(_Selection):
    """Unstructured pruning.

    Attributes:
        sparsity: Fraction of weights set to zero, in [0, 1).
        importance: How a weight is scored: ``magnitude`` (|W|), ``wanda`` (|W|·‖X_in‖) or ``relief``
            (mean |x·w|, NNrelief); the last two need calibration data. (``snip``, ``grasp``, ``drive``:
            the ``gradient`` pass.)
        scope: Which scores compete: each tensor's own (``layer``; Wanda: each output row's) or all
            tensors' at once (``global``, the same as ``allocation: global``).
        normalize: Per-tensor score normalization before the global threshold (``scope: global``).
        allocation: How the sparsity is spread over the tensors (mean weighted by size):
            ``uniform``, ``global``, ``sensitivity`` (measured output error), ``owl``
            (outlier-weighed), ``sipp`` (SiPP on empirical sensitivities: option ``mode``
            ``deterministic`` -- one threshold gives each neuron its count --, ``random`` -- sampled,
            reweighted -- or ``hybrid``; options ``C``, ``delta``, ``seed``) or ``pqi`` (PQ-index bound
            per neuron/layer, by magnitude; the sparsity follows from the index unless its option ``fit`` is set);
            ``sensitivity``, ``owl`` and ``sipp`` need calibration data.
        allocation_options: The allocator's options (``--allocation-option KEY=VALUE``), e.g. ``pqi``'s
            ``p``, ``q``, ``eta``, ``gamma``, ``beta``, ``scope``, ``fit``.
        include/exclude: Node- or tensor-name globs.
        keep_first/keep_last: Leave the first/last prunable layer dense.
    """

    sparsity: float = 0.5
    importance: str = choice_field("magnitude", WEIGHT_IMPORTANCES)
    scope: str = choice_field("layer", SCOPES)
    normalize: str = choice_field("none", NORMALIZERS)
    allocation: str = choice_field("uniform", ALLOCATORS)
    allocation_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        if not 0.0 <= self.sparsity < 1.0:
            raise RecipeError(f"sparsity must be in [0, 1), got {self.sparsity}")
        check_score_importance(self.importance)
        check_allocation(self.allocation, "unstructured", self.allocation_options)
        object.__setattr__(self, "importance", ranked_importance(self.allocation, self.importance))
        allocation = scope_allocation(self.scope, self.allocation)
        object.__setattr__(self, "allocation", allocation)
        object.__setattr__(self, "scope", "global" if allocation == "global" else "layer")


@dataclasses.dataclass(frozen=True)
class NMPruneConfig(_Selection):
    """N:M semi-structured pruning: keep ``n`` of every ``m`` consecutive weights along the input axis.

    With ``allocation: sensitivity``, only the least sensitive weights are pruned N:M, as many as the
    mean ``sparsity`` needs (default: all of them); the others stay dense (needs calibration data).

    Attributes:
        n: Weights kept in every group of ``m`` (``--pattern N:M``).
        m: Size of the groups of consecutive weights along the input axis.
        importance: How a weight is scored: ``magnitude`` (|W|) or ``wanda`` (|W|·‖X_in‖, needs
            calibration data).
        allocation: ``uniform`` (every weight N:M) or ``sensitivity`` (the most sensitive weights stay
            dense; needs calibration data).
        sparsity: With ``allocation: sensitivity``, the mean sparsity N:M must reach (default: 1 - n/m).
        include/exclude: Node- or tensor-name globs.
        keep_first/keep_last: Leave the first/last prunable layer dense.
    """

    n: int = 2
    m: int = 4
    importance: str = choice_field("magnitude", WEIGHT_IMPORTANCES)
    allocation: str = choice_field("uniform", ALLOCATORS)
    sparsity: float | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        if not 1 <= self.n <= self.m:
            raise RecipeError(f"N:M pattern needs 1 <= N <= M (0:M would zero every weight), got {self.n}:{self.m}")
        check_score_importance(self.importance)
        if self.allocation not in ("uniform", "sensitivity"):
            raise RecipeError(f"N:M takes allocation 'uniform' or 'sensitivity', got '{self.allocation}'")
        if self.sparsity is not None and not 0.0 <= self.sparsity <= 1.0 - self.n / self.m:
            raise RecipeError(f"sparsity must be in [0, {1 - self.n / self.m:g}] for {self.n}:{self.m}")


def ranked_importance(allocation: str, importance: str) -> str:
    """The importance that chooses the weights: an allocator that ranks (``sipp``, ``pqi``) imposes its own."""
    entry = ALLOCATORS[allocation]
    if not entry.ranks or entry.scores_by is None or importance == entry.scores_by:
        return importance
    if importance != "magnitude":
        raise RecipeError(f"allocation '{allocation}' ranks weights by '{entry.scores_by}', not '{importance}'")
    return entry.scores_by


def check_score_importance(name: str) -> None:
    """Refuse an importance that is not registered or that its own pass implements (``sparsegpt``)."""
    entry = WEIGHT_IMPORTANCES[name]
    if entry.method != "unstructured":
        raise RecipeError(f"importance '{name}' is implemented by the '{entry.method}' pass, not by this one")


def select_weights(
    pass_: OnnxPrunePass, model: ir.Model, config: _Selection, report: PassReport, *, needs_data: bool
) -> list[Weight]:
    """Prunable weights after include/exclude/keep-first/last, recording every skip in ``report``."""
    found = pass_.context.analyses.get(find_weights, model)
    for s in found.skipped:
        report.skip(s.name, s.node, s.op_type, s.reason)
    weights = list(found.weights)
    main = [w for w in weights if not any(u.in_subgraph for u in w.uses)]
    dense: dict[str, str] = {}
    if config.keep_first and main:
        dense[main[0].name] = "first layer kept dense (keep_first)"
    if config.keep_last and main:
        dense[main[-1].name] = "last layer kept dense (keep_last)"
    chosen = []
    for weight in weights:
        node = weight.node_names[0]
        reason = dense.get(weight.name)
        if reason is None and config.include and not matches(weight, config.include):
            reason = "not matched by include globs"
        if reason is None and config.exclude and matches(weight, config.exclude):
            reason = "matched an exclude glob"
        if reason is None and needs_data and any(u.in_subgraph for u in weight.uses):
            reason = "inside a subgraph (If/Loop/Scan): no calibration statistics"
        if reason is None:
            chosen.append(weight)
        else:
            report.skip(weight.name, node, weight.op_type, reason)
    return chosen


def layer_keep(weight: Weight, scores: np.ndarray, sparsity: Ratio, importance: str) -> np.ndarray:
    """Keep mask of one tensor pruned to ``sparsity`` by its ``scores`` (per output row for Wanda).

    An array ``sparsity`` holds one sparsity per neuron (output unit): each prunes its own share.
    """
    if isinstance(sparsity, np.ndarray):
        rows = neuron_rows(weight, scores)
        counts = np.rint(sparsity * rows.shape[1]).astype(np.int64)
        return from_neuron_rows(weight, counts_mask(rows, counts))
    n = int(round(sparsity * weight.size))
    if WEIGHT_IMPORTANCES[importance].per_row:
        moved = np.moveaxis(scores, weight.out_axis, 0)
        keep_rows = row_mask(moved.reshape(weight.shape[weight.out_axis], -1), n)
        return np.moveaxis(keep_rows.reshape(moved.shape), 0, weight.out_axis)
    return prune_lowest([lambda: scores], n)(0).reshape(weight.shape)


def _stats_for(
    pass_: OnnxPrunePass, model: ir.Model, weights: list[Weight], importance: str
) -> dict[str, ChannelStats] | None:
    entry = WEIGHT_IMPORTANCES[importance]
    if not entry.needs_data or not weights:
        return None
    requests = [r for w in weights for r in entry.requests(w)]
    return pass_.context.stats(model, requests, needed_by=f"{pass_.name} with importance '{importance}'")


def _entry(weight: Weight, pruned: int, extra: dict | None = None) -> dict:
    return {
        "tensor": weight.name,
        "nodes": list(weight.node_names),
        "op": weight.op_type,
        "shape": list(weight.shape),
        "numel": weight.size,
        "zeros": pruned,
        "sparsity": pruned / max(weight.size, 1),
        **(extra or {}),
    }


def finish(
    pass_: OnnxPrunePass, model: ir.Model, report: PassReport, start: float, head: dict, *, modified: bool
) -> PruneResult:
    """Summarize a sparsifying pass, invalidate what it changed, and build its result."""
    total = sum(e["numel"] for e in report.changed)
    report.summary = {
        **head,
        "achieved_sparsity": sum(e["zeros"] for e in report.changed) / total if total else 0.0,
        "pruned_tensors": len(report.changed),
        "skipped_tensors": len(report.skipped),
        **report.summary,
    }
    if modified:
        pass_.context.analyses.invalidate(preserved=(find_weights,))
    report.seconds = time.perf_counter() - start
    sparsity = 100 * report.summary["achieved_sparsity"]
    logger.info("%s: %d tensors at %.1f%% sparsity", pass_.name, len(report.changed), sparsity)
    return PruneResult(model, modified, report)


class UnstructuredPrunePass(OnnxPrunePass):
    """Zero the lowest-scoring weights (layer-wise or with one global threshold)."""

    name = "unstructured"
    config_class = UnstructuredPruneConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        config: UnstructuredPruneConfig = self.config
        report = self.new_report()
        needs_data = WEIGHT_IMPORTANCES[config.importance].needs_data
        weights = select_weights(self, model, config, report, needs_data=needs_data)
        modified = False
        budget_free = not ALLOCATORS[config.allocation].configured(config.allocation_options).uses_budget
        if (config.sparsity > 0 or budget_free) and weights:
            if config.allocation == "global":  # one threshold over every tensor: all statistics at once
                modified = self._global(weights, _stats_for(self, model, weights, config.importance), report)
            else:
                ratios = weight_ratios(
                    self.context,
                    model,
                    weights,
                    config.allocation,
                    config.sparsity,
                    importance=config.importance,
                    options=config.allocation_options,
                )
                modified = self._layerwise(model, weights, ratios, report)
        head = {"requested_sparsity": None if budget_free else config.sparsity, "allocation": config.allocation}
        if config.allocation_options:
            head["allocation_options"] = dict(config.allocation_options)
        return finish(self, model, report, start, head, modified=modified)

    def _layerwise(self, model: ir.Model, weights: list[Weight], ratios: dict[str, Ratio], report: PassReport) -> bool:
        """Each tensor at its allocated sparsity, statistics taken block by block.

        Scores come from the unchanged model unless sequential calibration is asked for: on the
        digits CNN, Wanda 50% kept 98.1% top-1 one-shot and 95.6% sequentially (README).
        """
        config: UnstructuredPruneConfig = self.config
        importance = WEIGHT_IMPORTANCES[config.importance]

        def prune(weight: Weight, stats: Mapping[str, ChannelStats] | None) -> None:
            values = read_weight(weight)
            ratio = ratios[weight.name]
            if isinstance(ratio, Gains):  # the allocator rewrites the kept values (SiPP's reweighted samples)
                gains = from_neuron_rows(weight, ratio.rows)
                write_weight(weight, (values * gains).astype(values.dtype))
                report.changed.append(_entry(weight, int(np.count_nonzero(gains == 0))))
                return
            keep = layer_keep(weight, importance.score(weight, values, stats), ratio, config.importance)
            write_weight(weight, np.where(keep, values, 0))
            report.changed.append(_entry(weight, int(np.count_nonzero(~keep))))

        report.summary["blocks"] = each_weight(
            self.context, model, weights, importance.requests, prune, needed_by=self.name, sequential=False
        )
        return True

    def _global(self, weights: list[Weight], stats: dict | None, report: PassReport) -> bool:
        config: UnstructuredPruneConfig = self.config
        scales = []
        for weight in weights:
            scales.append(normalizer(score(weight, read_weight(weight), config.importance, stats), config.normalize))

        def score_fn(i: int) -> Callable[[], np.ndarray]:
            weight = weights[i]
            return lambda: score(weight, read_weight(weight), config.importance, stats) / np.float32(scales[i])

        fns = [score_fn(i) for i in range(len(weights))]
        n = int(round(config.sparsity * sum(w.size for w in weights)))
        keep_of = prune_lowest(fns, n)
        for i, weight in enumerate(weights):
            keep = keep_of(i).reshape(weight.shape)
            write_weight(weight, np.where(keep, read_weight(weight), 0))
            report.changed.append(_entry(weight, int(np.count_nonzero(~keep))))
        return True


class NMPrunePass(OnnxPrunePass):
    """N:M semi-structured sparsity along each weight's input (reduction) axis, verified after writing."""

    name = "nm"
    config_class = NMPruneConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        config: NMPruneConfig = self.config
        report = self.new_report()
        needs_data = WEIGHT_IMPORTANCES[config.importance].needs_data
        weights = select_weights(self, model, config, report, needs_data=needs_data)
        fitting = []
        for weight in weights:
            k = weight.shape[weight.in_axis]
            if k % config.m:
                report.skip(
                    weight.name,
                    weight.node_names[0],
                    weight.op_type,
                    f"input dim {k} is not a multiple of M={config.m}",
                )
            else:
                fitting.append(weight)
        if config.allocation == "sensitivity" and fitting and config.n < config.m:
            budget = 1.0 - config.n / config.m if config.sparsity is None else config.sparsity
            method = "wanda" if WEIGHT_IMPORTANCES[config.importance].needs_data else "magnitude"
            fitting = nm_by_sensitivity(self, model, fitting, config.n, config.m, budget, method, report)
        importance = WEIGHT_IMPORTANCES[config.importance]

        def prune(weight: Weight, stats: Mapping[str, ChannelStats] | None) -> None:
            values = read_weight(weight)
            pruned = nm_pruned(weight, values, lambda part: importance.score(weight, part, stats), config.n, config.m)
            write_weight(weight, pruned)
            check_nm(weight, pruned, config.n, config.m)
            report.changed.append(
                _entry(weight, int(np.count_nonzero(pruned == 0)), {"pattern": f"{config.n}:{config.m}"})
            )

        report.summary["blocks"] = each_weight(
            self.context, model, fitting, importance.requests, prune, needed_by=self.name, sequential=False
        )
        modified = bool(report.changed) and config.n < config.m
        return finish(self, model, report, start, {"pattern": f"{config.n}:{config.m}"}, modified=modified)


def nm_pruned(
    weight: Weight, values: np.ndarray, score: Callable[[np.ndarray], np.ndarray], n: int, m: int
) -> np.ndarray:
    """``values`` with the ``n`` best of every ``m`` along the input axis kept (``score``: importance of a part).

    The rows of a 2-D weight are independent: they are scored and masked a chunk at a time
    (:func:`row_chunks`), so the scores, sort indices and masks of a large weight (a language
    model's head) never exist whole. Other weights (a grouped Conv's scores need all its rows) in one go.
    """
    pruned = np.empty_like(values)
    axis = weight.out_axis
    chunks = row_chunks(values.shape[axis], values.size // values.shape[axis] * 8) if values.ndim == 2 else []
    for rows in chunks or [slice(None)]:
        index = (slice(None),) * axis + (rows,)
        part = values[index]
        scores = np.moveaxis(score(part), weight.in_axis, -1)
        keep = np.moveaxis(nm_mask(scores, n, m), -1, weight.in_axis)
        pruned[index] = np.where(keep, part, 0)
    return pruned


def nm_by_sensitivity(
    pass_: OnnxPrunePass,
    model: ir.Model,
    weights: Sequence[Weight],
    n: int,
    m: int,
    budget: float,
    method: str,
    report: PassReport,
) -> list[Weight]:
    """The weights to prune N:M (see :func:`nm_coverage`); the others are reported as left dense."""
    chosen = nm_coverage(pass_.context, model, weights, n, m, budget, method)
    for weight in weights:
        if weight.name not in chosen:
            report.skip(weight.name, weight.node_names[0], weight.op_type, "left dense by the allocation")
    report.summary.update(
        nm_budget=budget,
        nm_candidates_numel=sum(w.size for w in weights),
        dense_by_allocation=sum(w.name not in chosen for w in weights),
    )
    return [w for w in weights if w.name in chosen]


def check_nm(weight: Weight, values: np.ndarray, n: int, m: int) -> None:
    """Raise if any group of ``m`` consecutive input weights holds more than ``n`` nonzeros."""
    rows = to_rows(weight, values)
    counts = np.count_nonzero(rows.reshape(rows.shape[0], -1, m), axis=-1)
    if counts.max(initial=0) > n:
        raise AssertionError(f"{weight.name}: N:M check failed ({int(counts.max())} nonzeros in a group of {m})")
