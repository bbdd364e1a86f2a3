"""SparseGPT: one-shot pruning with OBS weight reconstruction (Frantar & Alistarh, 2023).

Each weight is viewed as a matrix ``W [rows, K]`` (rows: outputs, K: input features, ordered like the
columns of the activation's Gram matrix ``H = XᵀX``). Columns are pruned left to right in blocks; the
error of every pruned weight is spread over the not-yet-processed weights of its row through the upper
Cholesky factor of ``H⁻¹``, so that the layer's output on the calibration data changes as little as
possible. Statistics come block by block from the model with the earlier blocks already pruned
(layer-sequential, as in the paper), or from the dense model in one run (one-shot).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxprune._fields import check_choices, check_fields
from onnxprune.analysis.weights import Weight, drop_pages, read_weight, write_weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.stats import ChannelStats
from onnxprune.errors import RecipeError
from onnxprune.passes._allocators import ALLOCATORS, check_allocation, weight_ratios
from onnxprune.passes._base import OnnxPrunePass, PassReport, PruneResult
from onnxprune.passes._gram import (
    delta_times,
    from_matrix,
    gram_requests,
    mean_gram,
    to_matrix,
)
from onnxprune.passes._linalg import output_error, quadratic_form, relative_error, upper_cholesky_of_inverse
from onnxprune.passes._select import nm_mask, row_chunks
from onnxprune.passes._steps import each_weight
from onnxprune.passes._vocab import choice_field
from onnxprune.passes.sparsify import _entry, _Selection, check_nm, finish, nm_by_sensitivity, select_weights

__all__ = ["SparseGPTConfig", "SparseGPTPass", "output_error", "sparsegpt_prune"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SparseGPTConfig(_Selection):
    """SparseGPT pruning (needs calibration data).

    Attributes:
        sparsity: Unstructured sparsity, in [0, 1); with ``m > 0`` only the budget of the
            ``sensitivity`` allocation (mean over the weights; the most sensitive stay dense).
        n/m: With ``m > 0``, N:M semi-structured sparsity instead: keep ``n`` of every ``m``
            consecutive weights along the input axis (for Conv: along the input channels).
        blocksize: Columns processed together (lazy batch updates; for N:M rounded up to a
            multiple of ``m``, which leaves the result unchanged).
        percdamp: Dampening added to the Hessian's diagonal, as a fraction of its mean.
        error_correction: With layer-sequential calibration, fit each layer to the original model's
            outputs (``‖ŴX̂ − WX‖``) rather than to its own outputs on the changed inputs
            (``‖ŴX̂ − WX̂‖``), so the errors of earlier layers are corrected, not carried forward.
        allocation: How the unstructured sparsity is spread over the weights (mean weighted by
            size): ``uniform``, ``global`` (one magnitude threshold), ``sensitivity`` (measured
            output error) or ``owl`` (outlier-weighed).
        include/exclude: Node- or tensor-name globs.
        keep_first/keep_last: Leave the first/last prunable layer dense.
    """

    sparsity: float = 0.5
    n: int = 0
    m: int = 0
    blocksize: int = 128
    percdamp: float = 0.01
    error_correction: bool = True
    allocation: str = choice_field("uniform", ALLOCATORS)

    def __post_init__(self) -> None:
        check_fields(self)
        check_choices(self)
        check_allocation(self.allocation, "unstructured")
        if ALLOCATORS[self.allocation].ranks:
            raise RecipeError(f"allocation '{self.allocation}' chooses the weights itself: use the unstructured pass")
        if self.m > 0 and self.allocation not in ("uniform", "sensitivity"):
            raise RecipeError(
                f"allocation '{self.allocation}' spreads unstructured sparsity; N:M takes 'uniform' or 'sensitivity'"
            )
        if not 0.0 <= self.sparsity < 1.0:
            raise RecipeError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.m < 0 or (self.m == 0 and self.n != 0) or (self.m > 0 and not 1 <= self.n <= self.m):
            raise RecipeError(f"N:M pattern needs 1 <= N <= M (M = 0: unstructured), got {self.n}:{self.m}")
        if self.blocksize < 1:
            raise RecipeError(f"blocksize must be >= 1, got {self.blocksize}")
        if not 0.0 <= self.percdamp < float("inf"):
            raise RecipeError(f"percdamp must be >= 0, got {self.percdamp}")

    @property
    def active(self) -> bool:
        """Whether the config prunes anything at all."""
        return self.n < self.m if self.m > 0 else self.sparsity > 0


# --------------------------------------------------------------------------- #
# the algorithm
# --------------------------------------------------------------------------- #


def _block_counts(sparsity: float, rows: int, cols: int, blocksize: int) -> list[int]:
    """Weights to prune in each column block, exact in total (``round(sparsity * rows * cols)``)."""
    edges = list(range(0, cols, blocksize)) + [cols]
    upto = [int(round(sparsity * rows * e)) for e in edges]
    return [b - a for a, b in zip(upto[:-1], upto[1:], strict=True)]


def sparsegpt_prune(
    w: np.ndarray,
    hessian: np.ndarray,
    sparsity: float,
    *,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    correction: np.ndarray | None = None,
    dtype: type = np.float64,
) -> np.ndarray:
    """Prune ``w [rows, cols]`` with SparseGPT and return the reconstructed weights (``dtype``).

    Args:
        w: Weights, one row per output, one column per input feature (any float dtype; each row is
            worked on in float64).
        hessian: ``XᵀX [cols, cols]`` of the inputs (any positive scale).
        sparsity: Fraction of weights zeroed (unstructured, ``m == 0``), exact in total; each
            block of ``blocksize`` columns gets its share, chosen by ``w² / diag(H⁻¹)²``.
        n: With ``m > 0``: weights kept in every run of ``m`` consecutive columns of each row.
        m: N:M group size (0: unstructured).
        blocksize: Columns per lazy-update block. Unstructured masks are chosen per block; for N:M
            the result does not depend on it (rounded up to a multiple of ``m``).
        percdamp: Dampening ``percdamp * mean(diag(H))`` added to the diagonal.
        correction: Error correction ``X̂ᵀ(X − X̂)·Wᵀ [cols, rows]``: the weights are first moved to
            ``W + ((H+λI)⁻¹·correction)ᵀ`` (see :func:`corrected_target`), through the same factor
            ``(H+λI)⁻¹ = UᵀU`` that the pruning uses, so no second copy of ``H`` is needed.
        dtype: Dtype of the result.

    Inputs that never fire (``H_ii == 0``) get ``H_ii = 1`` and their weights are zeroed, as in
    the reference implementation. With nothing to prune (and no correction), ``w`` is returned unchanged.
    N:M rows are independent: they are pruned a chunk at a time (:func:`row_chunks`), through one factor.
    """
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian shape {hessian.shape} does not match {cols} weight columns")
    if m > 0:
        if not 0 <= n <= m:
            raise ValueError(f"N:M pattern needs 0 <= N <= M, got {n}:{m}")
        if cols % m:
            raise ValueError(f"columns ({cols}) must be a multiple of M={m}")
        blocksize = -(-blocksize // m) * m
    nothing = n == m if m > 0 else sparsity <= 0
    if nothing and correction is None:
        return np.array(w, dtype=dtype)
    dead = np.diag(hessian) == 0
    hinv = upper_cholesky_of_inverse(hessian, percdamp, unit=dead)
    counts = _block_counts(sparsity, rows, cols, blocksize) if m == 0 else []
    result = np.empty((rows, cols), dtype=dtype)
    for chunk in row_chunks(rows, 8 * cols) if m > 0 else [slice(0, rows)]:
        weights = np.array(w[chunk], dtype=np.float64)
        if correction is not None:
            weights += (hinv.T @ (hinv @ correction[:, chunk])).T
        if not nothing:
            weights[:, dead] = 0.0
            _prune_rows(weights, hinv, counts, n, m, blocksize)
        result[chunk] = weights
    return result


#: Columns updated eagerly inside a block (rounded to a multiple of M); the rest of the block is
#: updated once per this many columns, by a matrix product (two-level lazy batch updates).
INNER_BLOCK = 16


def _prune_rows(weights: np.ndarray, hinv: np.ndarray, counts: list[int], n: int, m: int, blocksize: int) -> None:
    """The SparseGPT sweep over the columns of ``weights`` (float64, changed in place).

    Each block of columns is worked on transposed (one contiguous row per column of the weight),
    and inside it the error of a column reaches the next :data:`INNER_BLOCK` columns at once and
    the block's later columns lazily, as the blocks reach the columns after them: the same updates
    as column by column, with most of the arithmetic in matrix products.
    """
    cols = weights.shape[1]
    inner = max(m, INNER_BLOCK // m * m) if m else INNER_BLOCK
    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        w1 = np.ascontiguousarray(weights[:, i1:i2].T)  # [block columns, rows]
        err1 = np.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d1 = np.diag(hinv1)
        if m == 0:
            saliency = (w1.T**2 / d1[None, :] ** 2).ravel()  # ordered as the rows of the weight
            mask1 = np.zeros(w1.size, dtype=bool)
            mask1[np.argsort(saliency, kind="stable")[: counts[b]]] = True
            mask1 = np.ascontiguousarray(mask1.reshape(w1.shape[::-1]).T)
        else:
            mask1 = np.zeros(w1.shape, dtype=bool)
        for j1 in range(0, i2 - i1, inner):
            j2 = min(j1 + inner, i2 - i1)
            for i in range(j1, j2):
                if m > 0 and i % m == 0:
                    saliency = w1[i : i + m] ** 2 / d1[i : i + m, None] ** 2
                    lowest = np.argsort(saliency, axis=0, kind="stable")[: m - n]
                    np.put_along_axis(mask1[i : i + m], lowest, True, axis=0)
                row = w1[i]
                q = np.where(mask1[i], 0.0, row)
                err = (row - q) / d1[i]
                w1[i + 1 : j2] -= np.outer(hinv1[i, i + 1 : j2], err)
                w1[i] = q
                err1[i] = err
            w1[j2:] -= hinv1[j1:j2, j2:].T @ err1[j1:j2]
        weights[:, i1:i2] = w1.T
        weights[:, i2:] -= err1.T @ hinv[i1:i2, i2:]


def _magnitude(w: np.ndarray, sparsity: float, n: int, m: int) -> np.ndarray:
    """Plain magnitude pruning of ``w [rows, cols]`` (whole-tensor threshold, or N:M along columns)."""
    if m > 0:
        return np.where(nm_mask(np.abs(w), n, m), w, 0.0)
    flat = np.abs(w).ravel()
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[: int(round(sparsity * flat.size))]] = False
    return np.where(keep.reshape(w.shape), w, 0.0)


#: N:M weights with more rows report their output errors measured on this many evenly spaced rows:
#: each error costs ``2·rows·cols²`` flops, three times the reconstruction's own matrix products.
ERROR_ROWS = 256


def _errors(
    matrix: np.ndarray, written: np.ndarray, hessian: np.ndarray, sparsity: float, config: SparseGPTConfig
) -> tuple[float, float, int]:
    """Relative output errors of ``written`` and of magnitude pruning at the same sparsity or pattern.

    Also returns the rows they were measured on: all, or for N:M (rows independent, magnitude pruned
    row by row) at most :data:`ERROR_ROWS` evenly spaced ones.
    """
    n, m = config.n, config.m
    rows = matrix.shape[0]
    picked = np.unique(np.linspace(0, rows - 1, ERROR_ROWS).round().astype(np.int64)) if m else None
    if picked is not None and len(picked) < rows:
        matrix, written = matrix[picked], written[picked]
    w = matrix
    num = quadratic_form(w - written, hessian)
    baseline = quadratic_form(w - _magnitude(w, sparsity, n, m), hessian)
    den = quadratic_form(w, hessian)
    return relative_error(num, den), relative_error(baseline, den), w.shape[0]


# --------------------------------------------------------------------------- #
# weights as matrices
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How one weight is pruned: its Gram requests (one per use) and its matrix layout."""

    weight: Weight
    requests: tuple[StatRequest, ...]
    columns: int


def _plan(weight: Weight, m: int, paired: bool) -> _Plan | str:
    """Return the plan for ``weight``, or the reason it is skipped."""
    requests = gram_requests(weight, "sparsegpt")
    if isinstance(requests, str):
        return requests
    if paired:
        requests = tuple(dataclasses.replace(r, paired=True) for r in requests)
    if weight.op_type == "Conv":
        _, cin, kh, kw = weight.shape
        if m and cin % m:
            return f"input channels {cin} are not a multiple of M={m}"
        return _Plan(weight, requests, cin * kh * kw)
    k = weight.shape[weight.in_axis]
    if m and k % m:
        return f"input dim {k} is not a multiple of M={m}"
    return _Plan(weight, requests, k)


def _column_order(weight: Weight, nm: bool) -> np.ndarray | None:
    """Permutation of the Gram's columns used for pruning (``None``: as collected).

    Conv Grams follow the weight's ``(in, kh, kw)`` flattening; for N:M the columns are reordered to
    ``(kh, kw, in)`` so that runs of consecutive columns lie along the input channels.
    """
    if weight.op_type != "Conv" or not nm:
        return None
    _, cin, kh, kw = weight.shape
    return np.arange(cin * kh * kw).reshape(cin, kh, kw).transpose(1, 2, 0).ravel()


# --------------------------------------------------------------------------- #
# the pass
# --------------------------------------------------------------------------- #


class SparseGPTPass(OnnxPrunePass):
    """SparseGPT: unstructured or N:M pruning with OBS weight reconstruction from calibration Grams."""

    name = "sparsegpt"
    config_class = SparseGPTConfig

    def call(self, model: ir.Model) -> PruneResult:
        """Prune every selected weight in place and report per-tensor reconstruction errors."""
        start = time.perf_counter()
        config: SparseGPTConfig = self.config
        report = self.new_report()
        weights = select_weights(self, model, config, report, needs_data=True)
        plans = []
        for weight in weights:
            plan = _plan(weight, config.m, config.error_correction and self.context.is_sequential())
            if isinstance(plan, str):
                report.skip(weight.name, weight.node_names[0], weight.op_type, plan)
            else:
                plans.append(plan)
        if config.m and config.allocation == "sensitivity" and config.active and plans:
            kept = nm_by_sensitivity(
                self, model, [p.weight for p in plans], config.n, config.m, config.sparsity, "wanda", report
            )
            names = {w.name for w in kept}
            plans = [p for p in plans if p.weight.name in names]
        if config.active and plans:
            ratios = dict.fromkeys((p.weight.name for p in plans), config.sparsity)
            if config.m == 0:
                chosen = [p.weight for p in plans]
                # sensitivity curves by Wanda, the data-aware pruning closest to SparseGPT's (measured at the
                # same budget: MiniLM 50% Spearman 0.887 vs 0.802 with magnitude curves; OCR cls 70% 0.99 vs 1.00)
                ratios = weight_ratios(
                    self.context, model, chosen, config.allocation, config.sparsity, curves_by="wanda"
                )
            by_name = {plan.weight.name: plan for plan in plans}
            report.summary["blocks"] = each_weight(
                self.context,
                model,
                [plan.weight for plan in plans],
                lambda weight: by_name[weight.name].requests,
                lambda weight, stats: self._prune(by_name[weight.name], stats or {}, ratios[weight.name], report),
                needed_by=self.name,
            )
        errors = [e["reconstruction_error"] for e in report.changed]
        baseline = [e["magnitude_error"] for e in report.changed]
        report.summary.update(
            mean_reconstruction_error=float(np.mean(errors)) if errors else 0.0,
            mean_magnitude_error=float(np.mean(baseline)) if baseline else 0.0,
        )
        head = (
            {"pattern": f"{config.n}:{config.m}"}
            if config.m
            else {"requested_sparsity": config.sparsity, "allocation": config.allocation}
        )
        return finish(self, model, report, start, head, modified=bool(report.changed))

    def _prune(self, plan: _Plan, stats: Mapping[str, ChannelStats], sparsity: float, report: PassReport) -> None:
        config: SparseGPTConfig = self.config
        weight = plan.weight
        node = weight.node_names[0]
        k = plan.columns
        entries = [stats[r.name] for r in plan.requests]
        hessian = mean_gram(entries, k, consume=True, dtype=np.float32)  # float64 only in the factorization
        if hessian is None:
            report.skip(weight.name, node, weight.op_type, f"calibration Gram does not match the {k} input features")
            return
        order = _column_order(weight, config.m > 0)
        values = read_weight(weight)
        matrix = to_matrix(weight, values, order)  # a view: rows are copied to float64 a chunk at a time
        correction = delta_times(entries, to_matrix(weight, values))
        del entries
        if order is not None:
            hessian = hessian[np.ix_(order, order)]
            correction = correction[order] if correction is not None else None
        try:
            pruned = sparsegpt_prune(
                matrix,
                hessian,
                sparsity,
                n=config.n,
                m=config.m,
                blocksize=config.blocksize,
                percdamp=config.percdamp,
                correction=correction,
                dtype=values.dtype,
            )
        except np.linalg.LinAlgError as e:
            report.skip(weight.name, node, weight.op_type, f"SparseGPT failed: {e}")
            return
        del correction
        # measured before the write, which drops the pages of the original weights read so far: read
        # afterwards, a memory-mapped original would stay resident (a 1.2 GB model: 1.2 GB of RSS)
        reconstruction, magnitude, measured = _errors(matrix, pruned, hessian, sparsity, config)
        rows = matrix.shape[0]
        write_weight(weight, from_matrix(weight, pruned, order))
        del pruned, matrix, values
        written = read_weight(weight)
        if config.m:
            check_nm(weight, written, config.n, config.m)
        extra = {"reconstruction_error": reconstruction, "magnitude_error": magnitude}
        if measured < rows:
            extra["error_rows"] = measured
        if config.m:
            extra["pattern"] = f"{config.n}:{config.m}"
        report.changed.append(_entry(weight, int(np.count_nonzero(written == 0)), extra))
        drop_pages(weight)  # read back from its scratch file: its pages would stay in RSS
