"""Depth pruning: drop whole residual blocks (``y = x + f(x)`` becomes ``y = x``) chosen by measured sensitivity.

The pass is thin: ``onnxprune.analysis.blocks`` finds the blocks (transformer attention and FFN
sublayers, ResNet/MobileNetV2 blocks with an identity skip) and bypasses them; ``_depth``
measures them. Units (blocks, or transformer layers of two blocks) are ranked by the output error
each causes alone on the calibration data (``output_error``), or by the angular distance between
their input and output (``angular``, one run), and dropped greedily, smallest first, until the
budget is met: a number of units, a fraction of the parameters or MACs kept, or a largest
output error. ``iterative`` re-measures the remaining units after each drop.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import time
from collections.abc import Callable, Sequence

import onnx_ir as ir

from onnxprune._fields import check_at_least, check_fields
from onnxprune.analysis.blocks import Unit, bypass, find_blocks, group_units
from onnxprune.analysis.flops import count_model
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.errors import CalibrationError, RecipeError
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult, check_choice
from onnxprune.passes._depth import ERRORS, Errors, OutputErrors, angular_distances

__all__ = ["CRITERIA", "UNITS", "DepthPruneConfig", "DepthPrunePass", "choose_units"]

logger = logging.getLogger(__name__)

#: How units are ranked, and what is dropped at once.
CRITERIA = ("output_error", "angular")
UNITS = ("block", "layer")


@dataclasses.dataclass(frozen=True)
class DepthPruneConfig:
    """Depth pruning: drop whole residual blocks.

    Attributes:
        blocks: Drop this many units (blocks, or layers with ``unit: layer``).
        target_params: Instead of ``blocks``: drop units until at most this fraction of the parameters is left.
        target_flops: Instead of ``blocks``: drop units until at most this fraction of the MACs is left.
        max_error: Stop before the measured output error (``error``) of the pruned model exceeds this;
            alone, drop as many units as it allows. Needs calibration data.
        criterion: ``output_error`` (the error each unit causes alone; needs calibration data) or
            ``angular`` (1 - cos between a unit's input and output; one run).
        error: Which output error ranks units and bounds ``max_error``: ``rel_mse`` or ``cosine`` (1 - cos).
        unit: ``block`` (one sublayer or CNN block) or ``layer`` (a transformer layer's attention and FFN).
        iterative: Re-measure the remaining units after each drop (one run per unit and step).
        exclude: Globs on sum node names and unit labels (``layer 0*``); matching units stay.
    """

    blocks: int | None = None
    target_params: float | None = None
    target_flops: float | None = None
    max_error: float | None = None
    criterion: str = "output_error"
    error: str = "rel_mse"
    unit: str = "block"
    iterative: bool = False
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, {"blocks": 0})
        for name in ("target_flops", "target_params"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise RecipeError(f"{name} must be in (0, 1], got {value}")
        given = [n for n in ("blocks", "target_params", "target_flops") if getattr(self, n) is not None]
        if len(given) > 1:
            raise RecipeError(f"give one of blocks, target_params or target_flops, not {' and '.join(given)}")
        if not given and self.max_error is None:
            raise RecipeError("depth needs a budget: blocks, target_params, target_flops or max_error")
        if self.max_error is not None and self.max_error < 0:
            raise RecipeError(f"max_error must be >= 0, got {self.max_error}")
        check_choice("criterion", self.criterion, CRITERIA)
        check_choice("error", self.error, ERRORS)
        check_choice("unit", self.unit, UNITS)


def _excluded(unit: Unit, patterns: Sequence[str]) -> bool:
    names = (unit.label, *unit.nodes)
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


@dataclasses.dataclass
class Choice:
    """The units chosen, in order, with the output error measured after each (``None``: not measured)."""

    units: list[Unit]
    errors: list[Errors | None]
    scores: dict[str, float]
    stopped: str


def choose_units(
    candidates: Sequence[Unit],
    score: Callable[[Sequence[Unit], Sequence[Unit]], dict[str, float]],
    done: Callable[[Sequence[Unit]], bool],
    *,
    iterative: bool,
    measure: Callable[[Sequence[Unit]], Errors] | None = None,
    max_error: float | None = None,
    error: str = "rel_mse",
) -> Choice:
    """Greedy: drop the unit with the smallest score until ``done``, or until ``max_error`` would be exceeded.

    ``score(chosen, remaining)`` scores the remaining units with ``chosen`` already dropped (called
    once, or after each drop when ``iterative``); ``measure(units)`` is the output error with
    ``units`` dropped, needed for ``max_error``. Units nested in a chosen one are passed over.
    """
    chosen: list[Unit] = []
    errors: list[Errors | None] = []
    first = score([], candidates)
    scores = dict(first)
    stopped = "budget met"
    while not done(chosen):
        remaining = [u for u in candidates if u not in chosen and not any(u.conflicts(c) for c in chosen)]
        if not remaining:
            stopped = "no unit left"
            break
        if iterative and chosen:
            scores = score(chosen, remaining)
        pick = min(remaining, key=lambda u: scores[u.label])
        after = measure([*chosen, pick]) if measure is not None and max_error is not None else None
        if after is not None and max_error is not None and after.of(error) > max_error:
            stopped = f"max_error: dropping {pick.label} would give {error} {after.of(error):.4g}"
            break
        chosen.append(pick)
        errors.append(after)
    return Choice(chosen, errors, first, stopped)


class DepthPrunePass(OnnxPrunePass):
    """Drop whole residual blocks (attention/FFN sublayers, ResNet blocks) chosen by measured sensitivity."""

    name = "depth"
    config_class = DepthPruneConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        config: DepthPruneConfig = self.config
        report = self.new_report()
        shapes = complete_shapes(model, self.context.data_shapes(model))
        blocks = find_blocks(model, shapes)
        for block in blocks:
            if block.reason is not None:
                report.skip(block.skip, block.node, block.label, block.reason)
        units = [u for u in group_units(blocks, config.unit) if not _excluded(u, config.exclude)]
        counts = count_model(model, shapes)
        done = self._budget(units, counts.params, counts.macs)
        batches, real = self._batches()
        errors = OutputErrors(model, batches, self.context.threads) if real else None
        alone = {u.label: errors.of([u]) for u in units} if errors and config.criterion == "output_error" else {}

        def score(chosen: Sequence[Unit], remaining: Sequence[Unit]) -> dict[str, float]:
            if config.criterion == "angular":
                current = model.clone()
                bypass(current, [b for u in chosen for b in u.blocks])
                return angular_distances(current, remaining, batches, self.context.threads)
            if not chosen:
                return {label: e.of(config.error) for label, e in alone.items()}
            assert errors is not None
            return {u.label: errors.of([*chosen, u]).of(config.error) for u in remaining}

        choice = choose_units(
            units,
            score,
            done,
            iterative=config.iterative,
            measure=errors.of if errors is not None else None,
            max_error=config.max_error,
            error=config.error,
        )
        if not done(choice.units) and config.max_error is None:
            raise RecipeError(f"depth: the budget cannot be met ({choice.stopped}); {self._budget_text()}")
        final = errors.of(choice.units) if errors is not None else None
        dropped = [b for u in choice.units for b in u.blocks]
        bypass(model, dropped)
        after = count_model(model, complete_shapes(model, self.context.data_shapes(model)))
        self._report(report, units, choice, alone)
        report.summary = {
            "blocks_found": len(blocks),
            "droppable_units": len(units),
            "dropped_units": len(choice.units),
            "dropped": [u.label for u in choice.units],
            "stopped": choice.stopped,
            "params_kept": after.params / max(counts.params, 1),
            "macs_kept": after.macs / max(counts.macs, 1),
            "rel_mse": final.rel_mse if final is not None else None,
            "cosine_error": final.cosine if final is not None else None,
            "error_runs": errors.runs if errors is not None else 0,
        }
        logger.info("depth: dropped %s", ", ".join(u.label for u in choice.units) or "nothing")
        if dropped:
            self.context.analyses.invalidate()
        report.seconds = time.perf_counter() - start
        return PruneResult(model, bool(dropped), report)

    def _budget_text(self) -> str:
        c = self.config
        parts = {"blocks": c.blocks, "target_params": c.target_params, "target_flops": c.target_flops}
        return ", ".join(f"{k}={v}" for k, v in parts.items() if v is not None)

    def _budget(self, units: Sequence[Unit], params: int, macs: int) -> Callable[[Sequence[Unit]], bool]:
        """When the chosen units meet the budget; refuses a budget that no choice can meet, before measuring."""
        c = self.config
        plural = f"{c.unit}s"
        if c.blocks is not None:
            if c.blocks > len(units):
                raise RecipeError(f"depth: blocks={c.blocks} but the model has {len(units)} droppable {plural}")
            return lambda chosen: len(chosen) >= (c.blocks or 0)
        if c.target_params is None and c.target_flops is None:
            return lambda chosen: False  # max_error alone: as many as it allows
        what, total = ("params", params) if c.target_params is not None else ("macs", macs)
        target = c.target_params if c.target_params is not None else c.target_flops
        assert target is not None

        def kept(chosen: Sequence[Unit]) -> float:
            return (total - sum(getattr(u, what) for u in chosen)) / max(total, 1)

        if kept(units) > target + 1e-12:
            raise RecipeError(
                f"depth: dropping every droppable {c.unit} ({len(units)}) keeps {kept(units):.3f} of the {what}, "
                f"above the target {target}"
            )
        return lambda chosen: kept(chosen) <= target + 1e-12

    def _batches(self) -> tuple[list[dict], bool]:
        """The calibration batches, and whether they are real data (output errors are measured only on real data)."""
        calibration = self.context.calibration
        real = calibration is not None and not getattr(calibration, "random", False)
        needs = "criterion output_error" if self.config.criterion == "output_error" else "max_error"
        if not real and (self.config.criterion == "output_error" or self.config.max_error is not None):
            raise CalibrationError(
                f"depth {needs} needs calibration data (--calib PATH); criterion angular works on random inputs"
            )
        if calibration is None:
            raise CalibrationError("depth criterion angular needs inputs (calibration data or random inputs)")
        return [dict(b) for b in calibration.batches(self.context.batch_size)], real

    def _report(self, report: PassReport, units: Sequence[Unit], choice: Choice, alone: dict[str, Errors]) -> None:
        order = {u.label: i for i, u in enumerate(choice.units)}
        rows = []
        for unit in units:
            measured = alone.get(unit.label)
            row = {
                "unit": unit.label,
                "nodes": list(unit.nodes),
                "kind": "+".join(b.kind for b in unit.blocks),
                "params": unit.params,
                "macs": unit.macs,
                "rel_mse": measured.rel_mse if measured else None,
                "cosine_error": measured.cosine if measured else None,
                "angular": choice.scores.get(unit.label) if self.config.criterion == "angular" else None,
                "dropped": unit.label in order,
            }
            if unit.label in order:
                step = choice.errors[order[unit.label]]
                row["order"] = order[unit.label]
                row["rel_mse_after"] = step.rel_mse if step else None
                report.changed.append(row)
            rows.append(row)
        report.details["units"] = rows
