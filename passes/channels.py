"""Structured channel pruning: remove whole channels/neurons and physically shrink the tensors.

The pass is thin: the channel-dependency analysis (``onnxprune.analysis.channels``) finds the
coupled groups, ``_importance`` scores them, ``_allocate`` decides how many units each keeps,
``_reconstruct`` refits the consumers on calibration data, and the analysis's shrink slices.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import _ort
from onnxprune._fields import check_choices, check_fields
from onnxprune._providers import EP_CHOICES
from onnxprune.analysis.channels import ChannelAnalysis, ParamUse, analyze_channels, mask, record, shrink
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.calibration.sequential import Step, each_step
from onnxprune.calibration.sources import open_source
from onnxprune.calibration.stats import ChannelStats
from onnxprune.context import PassContext
from onnxprune.errors import CalibrationError, RecipeError, ValidationError
from onnxprune.passes._allocate import Allocation, GroupScores, allocate, search_ratio
from onnxprune.passes._allocators import (
    ALLOCATORS,
    AllocUnit,
    allocator,
    check_allocation,
    scope_allocation,
    sensitivity_curves,
)
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult, check_choice
from onnxprune.passes._hw_plan import hardware_plan
from onnxprune.passes._importance import CHANNEL_IMPORTANCES, group_scores
from onnxprune.passes._pca_width import group_spectra, spectrum_requests
from onnxprune.passes._reconstruct import original_weights, plan_refits, refit
from onnxprune.passes._restore import restore_outputs
from onnxprune.passes._vocab import AGGREGATES, NORMALIZERS, SCOPES, choice_field
from onnxprune.verify import run_model

__all__ = ["ChannelPruneConfig", "ChannelPrunePass", "prune_plan"]

logger = logging.getLogger(__name__)
_TARGET_TOLERANCE = 0.01
#: how kept widths are chosen: rounded to ``round_to``, or from a measured latency table
WIDTHS = ("round", "measured")


@dataclasses.dataclass(frozen=True)
class ChannelPruneConfig:
    """Structured channel pruning.

    Attributes:
        ratio: Fraction of each group's channels removed (``--channels``), in [0, 1).
        target_flops: Instead of ``ratio``: keep this fraction of the MACs (found by search, ±1%).
        target_params: Instead of ``ratio``: keep this fraction of the parameters.
        importance: How a channel is scored: ``l1``/``l2`` magnitude (``magnitude`` is ``l2``), ``bn``
            (BatchNorm |γ|), ``act_mean`` (DropNet), ``apoz``/``density`` (activation density), ``wanda``
            (‖W_col‖·‖X‖), ``ispasp`` (i-SpaSP's support selection for removing ``ratio`` of each group,
            from its linear consumers' output residual; other groups L2); the last five need calibration data.
        aggregate: How a group combines its members' scores.
        normalize: Per-group score normalization before the global threshold (``scope: global``).
        scope: Which scores compete: each group's own (``layer``; old recipes' ``uniform`` still loads)
            or all groups' at once (``global``, the same as ``allocation: global``).
        allocation: ``uniform``, ``global`` (the same as ``scope: global``), ``sensitivity``
            (per-group ratios minimizing the summed measured output error, mean ``ratio``
            weighted by channels; needs calibration data) or ``pca`` (each group keeps the principal
            components explaining a variance of its calibration activations; ``ratio`` is not used
            unless its option ``fit`` is set; needs calibration data).
        allocation_options: The allocator's options (``--allocation-option KEY=VALUE``): ``pca``'s
            ``variance`` (default 0.99) and ``fit`` (solve the variance to meet ``ratio`` or the target).
        round_to: Kept channel counts are multiples of this (8 suits most hardware); with measured
            widths, the widths measured are multiples of it.
        widths: ``round`` (kept counts rounded to ``round_to``) or ``measured``: each group's latency
            is measured at a handful of widths on ``ep`` (a cached latency table) and the kept widths
            are those on the fast steps, spending the latency of the ``ratio`` model where it keeps the
            most importance.
        target_latency: Instead of ``ratio``: a latency budget in ms (batch of the model's input shapes,
            ``ep``, the run's threads); measured widths keeping the most importance within it.
        ep: Execution provider the latency is measured on (``cpu``, ``cuda``, ``tensorrt``).
        latency_cache: Folder of cached latency tables (default ``$ONNXPRUNE_CACHE``, else
            ``$XDG_CACHE_HOME/onnxprune``).
        min_channels: Every group keeps at least this many channels.
        max_ratio: Global scope never removes more than this fraction of one group.
        exclude: Globs on producer node names; matching groups are left whole.
        reconstruct: Refit consumers by ridge regression when calibration data is given.
        ridge: Ridge strength relative to the mean diagonal of the Gram.
        max_features: Consumers with more input features than this are not refitted.
        allow_inexact: Also prune groups normalized by a LayerNormalization over their axis (the hidden
            size of transformers, ``--hidden``): not exact, the refit and fine-tune recover.
        restore_outputs: With ``allow_inexact``, also prune groups that reach a graph output (a last
            hidden state); a map fitted on calibration data gives the output its width back.
        verify: Check that the shrunk model equals the masked model in onnxruntime.
        verify_tolerance: Largest relative output difference accepted by ``verify``.
    """

    ratio: float = 0.5
    target_flops: float | None = None
    target_params: float | None = None
    importance: str = choice_field("l2", CHANNEL_IMPORTANCES)
    aggregate: str = choice_field("sum", AGGREGATES)
    normalize: str = choice_field("mean", NORMALIZERS)
    scope: str = choice_field("layer", SCOPES)
    round_to: int = 1
    min_channels: int = 1
    max_ratio: float = 0.9
    exclude: tuple[str, ...] = ()
    reconstruct: bool = True
    ridge: float = 1e-3
    max_features: int = 8192
    allow_inexact: bool = False
    restore_outputs: bool = False
    verify: bool = False
    verify_tolerance: float = 1e-4
    allocation: str = choice_field("uniform", ALLOCATORS)
    widths: str = "round"
    target_latency: float | None = None
    ep: str = "cpu"
    latency_cache: str | None = None
    allocation_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        check_choice("widths", self.widths, WIDTHS)
        check_choice("ep", self.ep, EP_CHOICES)
        if self.target_latency is not None:
            if self.target_latency <= 0:
                raise RecipeError(f"target_latency must be > 0 ms, got {self.target_latency}")
            if self.target_flops is not None or self.target_params is not None:
                raise RecipeError("give one of target_latency, target_flops and target_params")
            object.__setattr__(self, "widths", "measured")
        if not 0.0 <= self.ratio < 1.0:
            raise RecipeError(f"channels ratio must be in [0, 1), got {self.ratio}")
        for name in ("target_flops", "target_params"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise RecipeError(f"{name} must be in (0, 1], got {value}")
        if self.target_flops is not None and self.target_params is not None:
            raise RecipeError("give target_flops or target_params, not both")
        if self.round_to < 1 or self.min_channels < 0:
            raise RecipeError("round_to must be >= 1 and min_channels >= 0")
        check_allocation(self.allocation, "channels", self.allocation_options)
        if not allocator(self.allocation, self.allocation_options).uses_budget and (
            self.target_flops is not None or self.target_params is not None
        ):
            raise RecipeError(
                f"allocation '{self.allocation}' chooses the widths itself: set its option fit: true to meet"
                " target_flops/target_params"
            )
        allocation = scope_allocation(self.scope, self.allocation)
        object.__setattr__(self, "allocation", allocation)
        object.__setattr__(self, "scope", "global" if allocation == "global" else "layer")
        if self.widths == "measured" and self.allocation not in ("uniform",):
            raise RecipeError(
                f"measured widths choose every group's width: allocation '{self.allocation}' does not combine"
            )
        if self.widths == "measured" and (self.target_flops is not None or self.target_params is not None):
            raise RecipeError("measured widths take ratio or target_latency, not target_flops/target_params")


def _excluded(analysis: ChannelAnalysis, gid: int, patterns: tuple[str, ...]) -> bool:
    names = analysis.groups[gid].producers
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def _measure(
    model: ir.Model,
    shapes: Mapping[str, tuple[int, ...]],
    keep: Mapping[int, np.ndarray],
    what: str,
    allow_inexact: bool,
    inputs: Mapping[str, tuple[int, ...]] | None = None,
) -> int:
    """MACs or params of the model shrunk with ``keep`` (on a copy), inputs of shapes ``inputs``."""
    copy = model.clone()
    shrink(analyze_channels(copy, shapes, allow_inexact=allow_inexact, restore_outputs=allow_inexact), keep)
    counts = count_model(copy, complete_shapes(copy, inputs) if what == "macs" else {})
    return counts.macs if what == "macs" else counts.params


def prune_plan(
    model: ir.Model,
    analysis: ChannelAnalysis,
    scores: Mapping[int, GroupScores],
    config: ChannelPruneConfig,
    shapes: Mapping[str, tuple[int, ...]],
    inputs: Mapping[str, tuple[int, ...]] | None = None,
    group_ratios: Callable[[float], Mapping[int, float]] | None = None,
) -> tuple[dict[int, np.ndarray], dict[str, float]]:
    """Kept units per group: at ``config.ratio``, or at the ratio meeting a FLOPs/params target.

    ``inputs`` fixes the dynamic input dims the MACs are counted at (default 1). ``group_ratios``
    (an allocator's per-group ratios for a mean ratio) replaces the scope.
    """
    alloc = Allocation(config.round_to, config.min_channels, config.max_ratio)

    budget_free = not allocator(config.allocation, config.allocation_options).uses_budget

    def choose(ratio: float, scope: str) -> dict[int, np.ndarray]:
        given = group_ratios is not None and (ratio > 0 or budget_free)
        return allocate(scores, ratio, alloc, scope, group_ratios(ratio) if given else None)  # type: ignore[misc]

    target = config.target_flops if config.target_flops is not None else config.target_params
    if target is None:
        return choose(config.ratio, config.scope), {"ratio": config.ratio}
    what = "macs" if config.target_flops is not None else "params"
    base = _measure(model, shapes, {}, what, config.allow_inexact, inputs)

    def fraction(scope: str) -> Callable[[float], float]:
        def measure(ratio: float) -> float:
            keep = choose(ratio, scope)
            return _measure(model, shapes, keep, what, config.allow_inexact, inputs) / max(base, 1)

        return measure

    scope = config.scope
    high = 0.9 if group_ratios else 0.99  # an allocator's ratios stay within the measured grid
    ratio, got = search_ratio(fraction(scope), target, high=high)
    if abs(got - target) > _TARGET_TOLERANCE and scope == "layer" and group_ratios is None:
        # uniform steps are coarse on narrow groups; one global threshold moves in single blocks
        ratio_g, got_g = search_ratio(fraction("global"), target)
        if abs(got_g - target) < abs(got - target):
            scope, ratio, got = "global", ratio_g, got_g
    logger.info("ratio %.4f (%s) keeps %.4f of the %s (target %.4f)", ratio, scope, got, what, target)
    info = {"ratio": ratio, "scope_used": scope, f"{what}_kept": got, "target": target}
    return choose(ratio, scope), info


class ChannelPrunePass(OnnxPrunePass):
    """Remove whole channels/neurons from coupled groups and shrink the tensors."""

    name = "channels"
    config_class = ChannelPruneConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        config: ChannelPruneConfig = self.config
        report = self.new_report()
        inputs = self.context.data_shapes(model)
        shapes = complete_shapes(model, inputs)
        analysis = analyze_channels(
            model, shapes, allow_inexact=config.allow_inexact, restore_outputs=config.restore_outputs
        )
        uses = record(analysis)
        chosen = self._choose_groups(analysis, report)
        calibrated = self.context.calibration is not None and not getattr(self.context.calibration, "random", False)
        if config.reconstruct and not calibrated:
            report.summary["reconstruction"] = "off: needs real calibration data (--calib)"
        importance = CHANNEL_IMPORTANCES[config.importance]
        stats = importance.gather(self.context, model, analysis, uses)
        report.summary.update(importance.summary(stats))
        unit_scores, used = group_scores(
            analysis,
            uses,
            chosen,
            importance=config.importance,
            aggregate=config.aggregate,
            normalize=config.normalize,
            stats=stats,
            ratio=config.ratio,
        )
        groups = {
            gid: GroupScores(analysis.groups[gid].units, analysis.groups[gid].block, unit_scores[gid]) for gid in chosen
        }
        group_ratios = self._group_ratios(model, analysis, chosen)
        if config.widths == "measured":
            keep, plan_info = hardware_plan(model, analysis, groups, config, shapes, self.context)
        else:
            keep, plan_info = prune_plan(model, analysis, groups, config, shapes, inputs, group_ratios)
        keep = {gid: k for gid, k in keep.items() if len(k) < groups[gid].units}
        restored = {name: analysis.positions(value, keep) for name, value in analysis.restored.items()}
        restored = {
            n: k for n, k in restored.items() if k is not None and len(k) < analysis.layouts[analysis.restored[n]].width
        }
        dense = model.clone() if restored else None
        refits = self._refit(model, analysis, uses, keep, report) if config.reconstruct and calibrated and keep else []
        masked = None
        inexact = any(analysis.inexact(analysis.groups[gid]) for gid in keep)
        if config.verify and keep and inexact:
            report.summary["verify_skipped"] = "hidden-size groups change LayerNorm statistics (masked ≠ shrunk)"
        if config.verify and keep and not inexact:
            masked = model.clone()
            mask(analyze_channels(masked, shapes, allow_inexact=config.allow_inexact), keep)
        shrink(analysis, keep)
        if dense is not None:
            source = self.context.calibration if calibrated else None
            fits = restore_outputs(model, dense, restored, source, config.ridge)
            report.summary["restored_outputs"] = {
                n: {"kept": int(f.weight.shape[0]), "error_zero_fill": f.error_before, "error_fitted": f.error_after}
                for n, f in fits.items()
            }
        common_passes.RemoveUnusedNodesPass()(model)
        for gid, kept in keep.items():
            group = analysis.groups[gid]
            report.changed.append(
                {
                    "group": gid,
                    "producers": group.producers,
                    "units": group.units,
                    "kept": int(len(kept)),
                    "block": group.block,
                    "importance": used[gid],
                }
            )
        if masked is not None:
            report.summary["verify_max_rel_diff"] = _verify(masked, model, self.context, config.verify_tolerance)
        elif config.verify and not keep:
            report.summary["verify_max_rel_diff"] = 0.0  # no channel removed: nothing to differ
        self._summarize(report, analysis, chosen, keep, plan_info, refits)
        if keep:
            self.context.analyses.invalidate()
        report.seconds = time.perf_counter() - start
        return PruneResult(model, bool(keep), report)

    def _group_ratios(
        self, model: ir.Model, analysis: ChannelAnalysis, chosen: list[int]
    ) -> Callable[[float], dict[int, float]] | None:
        """Per-group ratios of the configured allocator for a mean ratio (``None``: uniform/global scope)."""
        allocation = self.config.allocation
        if allocation in ("uniform", "global"):
            return None
        entry = allocator(allocation, self.config.allocation_options)
        by_name = {analysis.groups[gid].producers[0]: gid for gid in chosen}
        if entry.needs_sensitivity:
            curves = sensitivity_curves(self.context, model, "channels")
            by_name = {name: gid for name, gid in by_name.items() if name in curves}  # unmeasured groups stay whole
            units = [AllocUnit(name, analysis.groups[gid].units) for name, gid in by_name.items()]
            return lambda ratio: {by_name[n]: float(r) for n, r in entry.ratios(units, ratio, curves).items()}
        spectra = self._spectra(model, analysis, chosen)
        by_name = {
            name: gid for name, gid in by_name.items() if gid in spectra
        }  # groups without activations stay whole
        units = [
            AllocUnit(name, analysis.groups[gid].units, lambda gid=gid: spectra[gid]) for name, gid in by_name.items()
        ]
        return lambda ratio: {by_name[n]: float(r) for n, r in entry.ratios(units, ratio).items()}

    def _spectra(self, model: ir.Model, analysis: ChannelAnalysis, chosen: list[int]) -> dict[int, np.ndarray]:
        """Activation covariance eigenvalues of the chosen groups (calibration Grams)."""
        if self.context.calibration is None or getattr(self.context.calibration, "random", False):
            raise CalibrationError(f"allocation '{self.config.allocation}' needs calibration data (--calib PATH)")
        uses = record(analysis)
        stats = self.context.stats(
            model, spectrum_requests(analysis, uses), needed_by=f"allocation '{self.config.allocation}'"
        )
        return group_spectra(analysis, uses, chosen, stats)

    def _choose_groups(self, analysis: ChannelAnalysis, report: PassReport) -> list[int]:
        chosen = []
        for group in analysis.groups.roots():
            producer = group.producers[0]
            if not group.prunable:
                report.skip(
                    producer, group.blockers[0].node, group.blockers[0].op, "; ".join(map(str, group.blockers[:3]))
                )
            elif self.config.exclude and _excluded(analysis, group.id, self.config.exclude):
                report.skip(producer, producer, "", "matched an exclude glob")
            else:
                chosen.append(group.id)
        return chosen

    def _refit(
        self,
        model: ir.Model,
        analysis: ChannelAnalysis,
        uses: list[ParamUse],
        keep: dict[int, np.ndarray],
        report: PassReport,
    ) -> list[dict]:
        """Refit every consumer that lost input channels, block by block.

        Sequentially (the default), the model is masked first and each block is calibrated on it with
        the earlier consumers already refitted, paired with the unchanged model's inputs, so every
        refit targets the original outputs (see ``_reconstruct``); one-shot, every refit uses the
        unchanged model's inputs.
        """
        plans, skipped = plan_refits(analysis, uses, keep, self.config.max_features)
        for node, reason in skipped.items():
            report.skip("", node, "", f"not refitted: {reason}")
        if not plans:
            return []
        sequential = self.context.is_sequential()
        dense = model.clone()  # shares the tensors: masking and refits replace them, never write in place
        originals = {id(p): original_weights(analysis, p) for p in plans}
        if sequential:
            mask(analysis, keep)
        by_key = {p.request.name: p for p in plans}
        results: list[dict] = []

        def refit_block(block: Sequence[Step], stats: dict[str, ChannelStats]) -> None:
            for step, own in each_step(block, stats):
                plan = by_key[step.key]
                fitted = refit(analysis, plan, keep, own, self.config.ridge, originals[id(plan)])
                results.append({"node": plan.node.name, **fitted})

        pair = {"paired": sequential, "paired_gram": sequential}
        steps = [
            Step(p.request.name, (p.node,), (dataclasses.replace(p.request, **pair),), (p.features,)) for p in plans
        ]
        blocks = self.context.run_blocks(model, steps, refit_block, needed_by="reconstruction", reference=dense)
        report.summary["refit_blocks"] = blocks
        return results

    def _summarize(
        self,
        report: PassReport,
        analysis: ChannelAnalysis,
        chosen: list[int],
        keep: dict,
        plan_info: dict,
        refits: list[dict],
    ) -> None:
        units = sum(analysis.groups[g].units for g in chosen)
        removed = sum(analysis.groups[g].units - len(k) for g, k in keep.items())
        report.summary = {
            **plan_info,
            "groups": len(analysis.groups.roots()),
            "prunable_groups": len(chosen),
            "pruned_groups": len(keep),
            "channels_removed": removed,
            "channels_in_prunable_groups": units,
            "refitted": len(refits),
            "refit_error_before": float(np.mean([r["error_before"] for r in refits])) if refits else None,
            "refit_error_after": float(np.mean([r["error_after"] for r in refits])) if refits else None,
            "allocation": self.config.allocation,
            **({"allocation_options": dict(self.config.allocation_options)} if self.config.allocation_options else {}),
            **report.summary,
        }
        logger.info("channels: removed %d of %d channels in %d groups", removed, units, len(keep))


def _restored(analysis: ChannelAnalysis, keep: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Kept channel positions of the graph outputs that lose channels (their width is restored)."""
    found = {}
    for name, value in analysis.restored.items():
        kept = analysis.positions(value, keep)
        if kept is not None and len(kept) < analysis.layouts[value].width:
            found[name] = kept
    return found


def _verify(masked: ir.Model, shrunk: ir.Model, context: PassContext, tolerance: float) -> float:
    """Largest relative output difference between the masked and the shrunk model (up to 4 batches)."""
    source = context.calibration or open_source(None, masked, samples=4)
    ref, cand = _ort.session(masked, what="masked model"), _ort.session(shrunk, what="shrunk model")
    worst = 0.0
    for i, feed in enumerate(source.batches(8)):
        a, b = run_model(ref, feed), run_model(cand, feed)
        for name in a:
            scale = max(float(np.abs(a[name]).max()), 1e-12)
            worst = max(worst, float(np.abs(a[name].astype(np.float64) - b[name]).max()) / scale)
        if i >= 3:
            break
    if worst > tolerance:
        raise ValidationError(f"shrunk model differs from the masked model by {worst:.2e} (relative) > {tolerance:.0e}")
    logger.info("verify: shrunk == masked (max relative difference %.2e)", worst)
    return worst
