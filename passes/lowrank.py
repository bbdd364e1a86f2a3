"""Low-rank factorization: each selected weight ``W ≈ A·B`` by truncated SVD, two nodes per layer.

Ranks come from an energy threshold, a fixed rank, or a parameter/MAC budget shared across layers
(one energy threshold found by bisection). A layer is factorized only where the rank saves work
(``r < mn/(m+n)``). Options: activation-aware whitening with the calibration Gram, LRPET's energy
transfer and BatchNorm rectification. See ``_svd.py`` (numerics), ``_rank.py`` (rank selection)
and ``_factorize.py`` (graph rewrite).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from onnxprune._fields import check_fields
from onnxprune.analysis.flops import count_params, node_macs
from onnxprune.analysis.shapes import complete_shapes
from onnxprune.analysis.weights import Weight, find_weights, read_weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.errors import RecipeError
from onnxprune.passes._allocators import AllocUnit, sensitivity_curves, sensitivity_ratios
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult, check_choice
from onnxprune.passes._factorize import Namer, batchnorm_scale, factorize, unique_namer
from onnxprune.passes._gram import corrected_target, gram_requests, mean_delta, mean_gram, to_matrix
from onnxprune.passes._linalg import output_error
from onnxprune.passes._rank import (
    Candidate,
    allocate_ranks,
    break_even,
    energy_rank,
    rank_for_saving,
    round_rank,
    saved_fraction_curve,
    saves,
)
from onnxprune.passes._steps import WeightFn, each_weight
from onnxprune.passes._svd import WHITENINGS, Spectrum, decompose
from onnxprune.passes.sparsify import _Selection, select_weights

__all__ = ["LowRankConfig", "LowRankPass", "layer_spectra", "unsupported"]

logger = logging.getLogger(__name__)

_MODES = ("energy", "rank", "target_params", "target_flops")
_DENSE = 0  # rank given to layers a budget leaves dense
#: How a parameter/MAC budget is spread over the layers (``LowRankConfig.allocation``)
RANK_ALLOCATIONS = ("energy", "sensitivity")


@dataclasses.dataclass(frozen=True)
class LowRankConfig(_Selection):
    """Low-rank factorization (give exactly one of ``energy``, ``rank``, ``target_params``, ``target_flops``).

    Attributes:
        energy: Keep the smallest rank holding this fraction of ``Σσ²`` in (0, 1].
        rank: The same rank for every layer (used as given; not rounded).
        target_params: Keep this fraction of the whole model's parameters.
        target_flops: Keep this fraction of the whole model's MACs.
        round_to: Chosen ranks are rounded up to a multiple of this (energy and targets).
        activation_aware: Whiten with the calibration Gram so that the truncation minimizes the
            layer's output error on the data (needs calibration data).
        whitening: ``cholesky`` or ``eigen`` factor of the Gram.
        percdamp: Dampening added to the Gram's diagonal, as a fraction of its mean.
        energy_transfer: Scale the kept singular values to conserve ``Σσ²`` (LRPET).
        bn_rectify: Weight the rows by a following BatchNormalization's scale before the SVD and
            unweight after (LRPET); only where such a BatchNorm exists.
        allocation: How ``target_params``/``target_flops`` is spread over the layers: ``energy`` (one
            energy threshold shared by all spectra) or ``sensitivity`` (per-layer ranks minimizing the
            summed output error measured by ``onnxprune analyze``'s low-rank units; needs data).
        only_if_smaller: Leave a layer dense where its rank would not save parameters and MACs.
        error_correction: With activation-aware, layer-sequential calibration: truncate the weights
            that best map the already-factorized model's inputs onto the original outputs.
        include/exclude: Node- or tensor-name globs.
        keep_first/keep_last: Leave the first/last weight dense.
    """

    energy: float | None = None
    rank: int | None = None
    target_params: float | None = None
    target_flops: float | None = None
    round_to: int = 8
    activation_aware: bool = False
    whitening: str = "cholesky"
    percdamp: float = 0.01
    energy_transfer: bool = False
    bn_rectify: bool = True
    only_if_smaller: bool = True
    error_correction: bool = True
    allocation: str = "energy"

    def __post_init__(self) -> None:
        check_fields(self)
        given = [mode for mode in _MODES if getattr(self, mode) is not None]
        if len(given) != 1:
            raise RecipeError(f"lowrank needs exactly one of {', '.join(_MODES)}; got {', '.join(given) or 'none'}")
        for fraction in ("energy", "target_params", "target_flops"):
            value = getattr(self, fraction)
            if value is not None and not 0.0 < value <= 1.0:
                raise RecipeError(f"{fraction} must be in (0, 1], got {value}")
        if self.rank is not None and self.rank < 1:
            raise RecipeError(f"rank must be >= 1, got {self.rank}")
        if self.round_to < 1:
            raise RecipeError(f"round_to must be >= 1, got {self.round_to}")
        if not 0.0 <= self.percdamp < float("inf"):
            raise RecipeError(f"percdamp must be >= 0, got {self.percdamp}")
        check_choice("whitening", self.whitening, WHITENINGS)
        check_choice("allocation", self.allocation, RANK_ALLOCATIONS)
        if self.allocation != "energy" and self.mode not in ("target_params", "target_flops"):
            raise RecipeError(f"allocation '{self.allocation}' spreads a budget: give target_params or target_flops")

    @property
    def mode(self) -> str:
        """Which rank selection is configured."""
        return next(mode for mode in _MODES if getattr(self, mode) is not None)


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A weight to factorize and what its SVD needs."""

    weight: Weight
    requests: tuple[StatRequest, ...]  # the Gram requests of an activation-aware layer
    bn_scale: np.ndarray | None
    note: str | None = None  # why an activation-aware layer fell back to plain SVD
    gram: np.ndarray | None = None
    delta: np.ndarray | None = None  # X̂ᵀ(X − X̂) against the original inputs (sequential error correction)

    def with_gram(self, stats: Mapping[str, ChannelStats]) -> _Layer:
        """The layer with its Gram from ``stats`` (or the note saying why plain SVD is used)."""
        if not self.requests:
            return self
        found = [stats[r.name] for r in self.requests]
        gram = mean_gram(found, self.dims[1], consume=True)
        note = None if gram is not None else "plain SVD: calibration Gram does not match the weight"
        return dataclasses.replace(self, gram=gram, delta=mean_delta(found, self.dims[1], consume=True), note=note)

    @property
    def dims(self) -> tuple[int, int]:
        m = self.weight.shape[self.weight.out_axis]
        return m, self.weight.size // m


def unsupported(weight: Weight) -> str | None:
    """Why ``weight`` cannot be factorized, or ``None``."""
    if any(use.in_subgraph for use in weight.uses):
        return "inside a subgraph (If/Loop/Scan): not factorized"
    if weight.op_type == "Conv" and weight.groups != 1:
        kind = "depthwise" if weight.shape[1] == 1 else "grouped"
        return f"{kind} Conv (group={weight.groups}): low-rank factorization needs group=1"
    if weight.op_type not in ("Conv", "Gemm", "MatMul"):
        return f"{weight.op_type} is not factorized (only Gemm, MatMul and Conv with group=1)"
    return None


def layer_spectra(model: ir.Model, energies: tuple[float, ...] = (0.9, 0.95, 0.99)) -> list[dict[str, object]]:
    """Per factorizable weight: its matrix size, break-even rank and the plain-SVD rank each energy needs."""
    rows: list[dict[str, object]] = []
    for weight in find_weights(model):
        reason = unsupported(weight)
        m = weight.shape[weight.out_axis]
        n = weight.size // m
        row: dict[str, object] = {"tensor": weight.name, "op": weight.op_type, "m": m, "n": n}
        if reason is None:
            matrix = to_matrix(weight, read_weight(weight).astype(np.float64))
            bad = matrix.size - int(np.count_nonzero(np.isfinite(matrix)))
            if bad:
                row["reason"] = f"holds {bad} NaN/inf values (no SVD; commands that transform refuse the model)"
            else:
                sigma = np.linalg.svd(matrix, compute_uv=False)
                row.update(
                    full_rank=int(sigma.size),
                    break_even=break_even(m, n),
                    ranks={str(e): energy_rank(sigma, e) for e in energies},
                )
        else:
            row["reason"] = reason
        rows.append(row)
    return rows


class LowRankPass(OnnxPrunePass):
    """Factorize Gemm/MatMul/Conv weights into two low-rank nodes by truncated SVD."""

    name = "lowrank"
    config_class = LowRankConfig

    def call(self, model: ir.Model) -> PruneResult:
        """Factorize every selected weight whose rank saves work; report ranks and errors."""
        start = time.perf_counter()
        report = self.new_report()
        layers = self._layers(model, report)
        ranks = self._ranks(model, layers, report)
        fresh = unique_namer(model)
        params_before = count_params(model)[0]
        # a layer the budget leaves dense needs no Gram
        layers = [dataclasses.replace(x, requests=()) if r == _DENSE else x for x, r in zip(layers, ranks, strict=True)]
        planned = {layer.weight.name: (layer, rank) for layer, rank in zip(layers, ranks, strict=True)}

        def factorize_one(weight: Weight, stats: Mapping[str, ChannelStats] | None) -> None:
            layer, rank = planned[weight.name]
            self._factorize(layer.with_gram(stats or {}), rank, fresh, report)

        self._each_layer(model, layers, factorize_one)
        if report.changed:
            common_passes.RemoveUnusedNodesPass()(model)
            self.context.analyses.invalidate()
        self._summarize(report, params_before, count_params(model)[0])
        report.seconds = time.perf_counter() - start
        logger.info("lowrank: %d layers factorized, %d skipped", len(report.changed), len(report.skipped))
        return PruneResult(model, bool(report.changed), report)

    def _layers(self, model: ir.Model, report: PassReport) -> list[_Layer]:
        config: LowRankConfig = self.config
        layers = []
        for weight in select_weights(self, model, config, report, needs_data=config.activation_aware):
            reason = unsupported(weight)
            if reason is not None:
                report.skip(weight.name, weight.node_names[0], weight.op_type, reason)
                continue
            requests = gram_requests(weight, "activation-aware lowrank") if config.activation_aware else ()
            if not isinstance(requests, str) and config.error_correction and self.context.is_sequential():
                requests = tuple(dataclasses.replace(r, paired=True) for r in requests)
            note = f"plain SVD: {requests}" if isinstance(requests, str) else None
            scale = batchnorm_scale(weight) if config.bn_rectify else None
            layers.append(_Layer(weight, () if isinstance(requests, str) else requests, scale, note))
        return layers

    def _each_layer(self, model: ir.Model, layers: list[_Layer], change: WeightFn, *, reads_only: bool = False) -> None:
        """Call ``change`` on every layer's weight, in blocks calibrated where layers need Grams.

        ``reads_only``: ``change`` does not touch the model, so one-shot unpaired statistics suffice.
        """
        requests = {
            layer.weight.name: tuple(dataclasses.replace(r, paired=False) for r in layer.requests)
            if reads_only
            else layer.requests
            for layer in layers
        }
        weights = [layer.weight for layer in layers]
        each_weight(
            self.context,
            model,
            weights,
            lambda w: requests[w.name],
            change,
            needed_by=self.name,
            changes_model=not reads_only,
        )

    @staticmethod
    def _matrix(layer: _Layer) -> np.ndarray:
        return to_matrix(layer.weight, read_weight(layer.weight).astype(np.float64))

    def _spectrum(self, layer: _Layer, matrix: np.ndarray) -> Spectrum:
        return decompose(
            matrix,
            gram=layer.gram,
            method=self.config.whitening,
            percdamp=self.config.percdamp,
            row_scale=layer.bn_scale,
        )

    def _ranks(self, model: ir.Model, layers: list[_Layer], report: PassReport) -> list[int | None]:
        """One rank per layer: ``None`` in energy mode (chosen from each spectrum), 0 for dense."""
        config: LowRankConfig = self.config
        if config.mode == "energy":
            return [None] * len(layers)
        if config.mode == "rank":
            return [min(config.rank, min(layer.dims)) for layer in layers]  # type: ignore[type-var]
        if config.mode == "target_params":
            costs = [float(layer.weight.size) for layer in layers]
            total = float(count_params(model)[0])
            target = config.target_params
        else:
            shapes = complete_shapes(model)
            per_layer = [[node_macs(use.node, shapes) for use in layer.weight.uses] for layer in layers]
            for layer, macs in zip(layers, per_layer, strict=True):
                if any(m is None for m in macs):
                    report.skip(layer.weight.name, layer.weight.node_names[0], layer.weight.op_type, "no static shape")
            costs = [float(sum(m or 0 for m in macs)) for macs in per_layer]
            total = float(sum(c for n in model.graph if (c := node_macs(n, shapes))))
            target = config.target_flops
        assert target is not None
        if config.allocation == "sensitivity":
            return self._sensitivity_ranks(model, layers, costs, total, report)
        sigmas: dict[str, np.ndarray] = {}
        by_name = {layer.weight.name: layer for layer in layers}

        def spectrum(weight: Weight, stats: Mapping[str, ChannelStats] | None) -> None:
            layer = by_name[weight.name].with_gram(stats or {})
            sigmas[weight.name] = self._spectrum(layer, self._matrix(layer)).sigma

        self._each_layer(model, layers, spectrum, reads_only=True)  # the dense model's spectra
        candidates = [
            Candidate(sigmas[layer.weight.name], *layer.dims, cost) for layer, cost in zip(layers, costs, strict=True)
        ]
        budget = target * total - (total - sum(costs))
        ranks, energy, met = allocate_ranks(candidates, budget, config.round_to)
        achieved = (total - sum(costs) + sum(c.cost_at(r) for c, r in zip(candidates, ranks, strict=True))) / total
        report.summary.update({"energy_threshold": energy, "target_met": met, "planned_fraction": achieved})
        if not met:
            logger.warning("lowrank: target %.3g not reachable; best %.3g", target, achieved)
        return [_DENSE if r is None else r for r in ranks]

    def _sensitivity_ranks(
        self, model: ir.Model, layers: list[_Layer], costs: list[float], total: float, report: PassReport
    ) -> list[int | None]:
        """Ranks from measured error curves: the least error added per unit of cost saved, across layers.

        The curves are ``onnxprune analyze``'s low-rank units (plain SVD truncated at each grid ratio,
        one layer at a time, output error on the calibration data); layers without one stay dense.
        """
        config: LowRankConfig = self.config
        target = config.target_params if config.mode == "target_params" else config.target_flops
        assert target is not None
        curves = sensitivity_curves(self.context, model, "lowrank")
        measured = [(layer, cost) for layer, cost in zip(layers, costs, strict=True) if layer.weight.name in curves]
        need = sum(costs) - (target * total - (total - sum(costs)))  # cost the factorized layers must save
        fractions: dict[str, float] = {}
        if need > 0 and measured:
            saved = {
                layer.weight.name: saved_fraction_curve(*curves[layer.weight.name], *layer.dims)
                for layer, _ in measured
            }
            units = [AllocUnit(layer.weight.name, cost) for layer, cost in measured]
            fractions = sensitivity_ratios(units, need / sum(cost for _, cost in measured), saved)
        ranks = [rank_for_saving(fractions.get(x.weight.name, 0.0), *x.dims, config.round_to) for x in layers]
        kept = sum(
            cost * (1.0 if rank == _DENSE else rank * sum(layer.dims) / (layer.dims[0] * layer.dims[1]))
            for layer, cost, rank in zip(layers, costs, ranks, strict=True)
        )
        planned = (total - sum(costs) + kept) / total
        report.summary.update(
            {"allocation": "sensitivity", "target_met": planned <= target + 1e-9, "planned_fraction": planned}
        )
        return ranks

    def _factorize(self, layer: _Layer, rank: int | None, fresh: Namer, report: PassReport) -> None:
        config: LowRankConfig = self.config
        weight = layer.weight
        m, n = layer.dims
        node = weight.node_names[0]
        if rank == _DENSE:
            report.skip(weight.name, node, weight.op_type, "left dense by the budget allocation (no rank saves work)")
            return
        matrix = self._matrix(layer)
        target = matrix
        if layer.gram is not None and layer.delta is not None:
            target = corrected_target(matrix, layer.gram, layer.delta, config.percdamp)
        spectrum = self._spectrum(layer, target)
        if rank is None:
            assert config.energy is not None
            rank = round_rank(energy_rank(spectrum.sigma, config.energy), config.round_to, spectrum.full_rank)
        if config.only_if_smaller and not saves(rank, m, n):
            report.skip(
                weight.name,
                node,
                weight.op_type,
                f"rank {rank} does not save work: r(m+n)={rank * (m + n)} >= mn={m * n} "
                f"(break-even rank {break_even(m, n):.1f})",
            )
            return
        a, b = spectrum.factors(rank, config.energy_transfer)
        approx = a @ b
        names = factorize(weight, a, b, fresh)
        norm = float(np.linalg.norm(matrix))
        entry = {
            "tensor": weight.name,
            "nodes": list(weight.node_names),
            "op": weight.op_type,
            "shape": list(weight.shape),
            "rank": rank,
            "full_rank": spectrum.full_rank,
            "break_even": break_even(m, n),
            "energy_kept": spectrum.energy(rank),
            "weight_error": float(np.linalg.norm(matrix - approx)) / norm if norm > 0 else 0.0,
            "params_before": m * n,
            "params_after": rank * (m + n),
            "factors": list(names),
            "bn_rectified": layer.bn_scale is not None,
        }
        if layer.gram is not None:
            entry["output_error"] = output_error(matrix, approx, layer.gram)
        if layer.note is not None:
            entry["note"] = layer.note
        report.changed.append(entry)

    def _summarize(self, report: PassReport, params_before: int, params_after: int) -> None:
        config: LowRankConfig = self.config
        changed = report.changed
        report.summary = {
            "mode": config.mode,
            "factorized_layers": len(changed),
            "skipped_layers": len(report.skipped),
            "layer_params_before": sum(e["params_before"] for e in changed),
            "layer_params_after": sum(e["params_after"] for e in changed),
            "model_params_fraction": params_after / params_before if params_before else 1.0,
            "mean_energy_kept": float(np.mean([e["energy_kept"] for e in changed])) if changed else 1.0,
            **report.summary,
        }
