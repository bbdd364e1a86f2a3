"""Hardware-aware kept widths for structured pruning: measured latency table, fast steps, latency budget.

With a ``ratio``, every group's uniform count moves to the widest measured width no slower than it
(:func:`~._hw_widths.fast_step`): channels that cost no time are kept. With ``target_latency``, the
saving needed is the measured dense latency minus the budget; the shrunk model is measured, and the
next try asks the table for the saving scaled by what the last one achieved (the additive prediction
counts a conv shared by two groups twice), bisecting once one try missed and one met the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxprune import _ort
from onnxprune._providers import resolve_ep
from onnxprune.analysis.channels import ChannelAnalysis, analyze_channels, shrink
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError
from onnxprune.passes._allocate import Allocation, GroupScores, allocate
from onnxprune.passes._hw_widths import NOISE, fast_step, fit_saving, options_for
from onnxprune.passes._latency_table import LatencySettings, LatencyTable, latency_table
from onnxprune.passes._subgraph import random_feed
from onnxprune.verify import measure_latency

if TYPE_CHECKING:  # channels imports this module
    from onnxprune.passes.channels import ChannelPruneConfig

__all__ = ["TRIES", "hardware_plan"]

logger = logging.getLogger(__name__)
#: shrunk models measured against a latency budget before the closest is kept
TRIES = 6
#: timed runs of the whole models (dense and pruned, interleaved)
MODEL_RUNS = 30


@dataclasses.dataclass(frozen=True)
class _Setup:
    model: ir.Model
    shapes: Mapping[str, tuple[int, ...]]
    inputs: dict[str, tuple[int, ...]]
    config: ChannelPruneConfig
    providers: list[str]
    threads: int | None


def _keep(groups: Mapping[int, GroupScores], widths: Mapping[int, int]) -> dict[int, np.ndarray]:
    """The best-scoring units of each group at its width."""
    ratios = {gid: 1.0 - widths[gid] / g.units for gid, g in groups.items()}
    return allocate(groups, 0.0, Allocation(1, 0, 1.0), ratios=ratios)


def _shrunk(setup: _Setup, keep: Mapping[int, np.ndarray]) -> ir.Model:
    copy = setup.model.clone()
    inexact = setup.config.allow_inexact
    shrink(analyze_channels(copy, setup.shapes, allow_inexact=inexact, restore_outputs=inexact), keep)
    return copy


def _measure(setup: _Setup, candidate: ir.Model) -> tuple[float, float]:
    """(dense ms, candidate ms), interleaved run by run on the target EP."""
    feed = random_feed(setup.model.graph.inputs, setup.inputs, seed=1)
    dense = _ort.session(setup.model, threads=setup.threads, providers=setup.providers, what="model")
    cand = _ort.session(candidate, threads=setup.threads, providers=setup.providers, what="pruned model")
    return measure_latency(dense, cand, feed, runs=MODEL_RUNS)


def _lowest(group: GroupScores, config: ChannelPruneConfig) -> int:
    return max(config.min_channels, math.ceil((1.0 - config.max_ratio) * group.units))


def _ratio_widths(
    table: LatencyTable, groups: Mapping[int, GroupScores], names: Mapping[int, str], config: ChannelPruneConfig
) -> dict[int, int]:
    """Each group's uniform count at ``config.ratio``, moved to the widest end of its latency plateau."""
    alloc = Allocation(config.round_to, config.min_channels, config.max_ratio)
    widths: dict[int, int] = {}
    for gid, group in groups.items():
        wanted = group.units * (1.0 - config.ratio)
        found = table.groups.get(names[gid])
        if found is None:  # not measured: rounded as without a table
            widths[gid] = alloc.rounded(group, wanted)
        else:
            widths[gid] = fast_step(found, max(wanted, _lowest(group, config)))
    return widths


def _predicted(dense_ms: float, table: LatencyTable, names: Mapping[int, str], widths: Mapping[int, int]) -> float:
    """Dense latency minus every measured group's saving (additive; neighbours' interplay not counted)."""
    found = {gid: table.groups[n] for gid, n in names.items() if n in table.groups}
    return dense_ms - sum(g.saving(widths[gid]) for gid, g in found.items())


def _budget_widths(
    setup: _Setup,
    table: LatencyTable,
    groups: Mapping[int, GroupScores],
    names: Mapping[int, str],
) -> tuple[dict[int, int], dict[str, Any]]:
    """Widths keeping the most importance with the measured latency within ``target_latency``."""
    config = setup.config
    assert config.target_latency is not None
    target = float(config.target_latency)
    choices = {
        gid: options_for(table.groups[names[gid]], g, _lowest(g, config))
        for gid, g in groups.items()
        if names[gid] in table.groups
    }
    full = {gid: g.units for gid, g in groups.items()}
    dense_ms, _ = _measure(setup, setup.model)
    most = sum(float(o.saving.max()) for o in choices.values())
    if dense_ms <= target:
        return full, {"latency_dense_ms": dense_ms, "tries": [], "latency_measured_ms": dense_ms}
    if dense_ms - most > target * (1 + NOISE):
        raise RecipeError(
            f"--target-latency {target:g} ms is out of reach: the model takes {dense_ms:.3g} ms and the measured"
            f" widths save at most {most:.3g} ms (predicted {dense_ms - most:.3g} ms)"
        )
    wanted = dense_ms - target
    need, kappa = wanted, 1.0
    missed_need, feasible_need = 0.0, math.inf  # the largest need that missed, the smallest that met the budget
    tries: list[dict[str, float]] = []
    found: list[tuple[bool, float, float, dict[int, int]]] = []  # (met, loss, measured ms, widths)
    for _ in range(TRIES):
        widths, saving = fit_saving(choices, need)
        loss = sum(float(o.loss[o.widths.index(widths[gid])]) for gid, o in choices.items())
        widths = {**full, **widths}
        ref_ms, got_ms = _measure(setup, _shrunk(setup, _keep(groups, widths)))
        predicted = dense_ms - kappa * saving
        met = got_ms <= target * (1 + NOISE)
        tries.append({"need_ms": need, "predicted_ms": predicted, "measured_ms": got_ms, "dense_ms": ref_ms})
        found.append((met, loss, got_ms, widths))
        logger.info("target latency %.3g ms: predicted %.3g, measured %.3g ms", target, predicted, got_ms)
        if met and got_ms >= target * (1 - 2 * NOISE) or (not met and saving >= most - 1e-9):
            break  # close to the budget, or nothing more to save
        achieved = ref_ms - got_ms
        kappa = achieved / saving if achieved > 0 and saving > 0 else kappa / 2
        if met:
            feasible_need = min(feasible_need, need)
        else:
            missed_need = max(missed_need, need)
        if missed_need > 0 and feasible_need < math.inf:  # bracketed: bisect
            need = (missed_need + feasible_need) / 2
        else:  # the saving the table must promise for the model to save ``wanted``
            need = min(max(wanted / kappa, need * 1.05) if not met else wanted / kappa, most)
    feasible = [f for f in found if f[0]]
    best = min(feasible, key=lambda f: f[1]) if feasible else min(found, key=lambda f: f[2])
    if not best[0]:
        logger.warning("target latency %.3g ms not met: the closest pruned model measured %.3g ms", target, best[2])
    chosen = found.index(best)
    info = {
        "latency_dense_ms": dense_ms,
        "latency_measured_ms": best[2],
        "latency_predicted_ms": tries[chosen]["predicted_ms"],
        "target_latency_ms": target,
        "target_latency_met": best[0],
        "tries": tries,
    }
    return best[3], info


def hardware_plan(
    model: ir.Model,
    analysis: ChannelAnalysis,
    groups: Mapping[int, GroupScores],
    config: ChannelPruneConfig,
    shapes: Mapping[str, tuple[int, ...]],
    context: PassContext,
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Kept units per group from a measured latency table.

    Returns the kept units (as :func:`~onnxprune.passes.channels.prune_plan`) and what the report
    shows: the table's file, the groups measured, predicted and measured latency.
    """
    providers = list(resolve_ep(config.ep).providers)
    inputs = {v.name or "": tuple(int(d) for d in shapes[v.name or ""]) for v in model.graph.inputs}
    around = 1.0 - config.ratio if config.target_latency is None else None
    settings = LatencySettings(ep=config.ep, threads=context.threads, step=config.round_to, around=around)
    table, path = latency_table(model, analysis, groups, settings, shapes=inputs, cache=config.latency_cache)
    names = {gid: analysis.groups[gid].producers[0] for gid in groups}
    setup = _Setup(model, shapes, inputs, config, providers, context.threads)
    info: dict[str, Any] = {
        "widths": "measured",
        "ep": config.ep,
        "latency_table": str(path) if path else None,
        "latency_table_seconds": table.seconds,
        "groups_measured": sum(1 for n in names.values() if n in table.groups),
        "groups_not_measured": {
            n: table.skipped.get(n, "not in the table") for n in names.values() if n not in table.groups
        },
    }
    if config.target_latency is not None:
        widths, found = _budget_widths(setup, table, groups, names)
        info.update(found)
    else:
        widths = _ratio_widths(table, groups, names, config)
        info["ratio"] = config.ratio
        keep = _keep(groups, widths)
        dense_ms, got_ms = _measure(setup, _shrunk(setup, keep))
        predicted = _predicted(dense_ms, table, names, widths)
        info.update(latency_dense_ms=dense_ms, latency_predicted_ms=predicted, latency_measured_ms=got_ms)
        return keep, info
    return _keep(groups, widths), info
