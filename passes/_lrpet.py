"""LRPET's low-rank projection during training (M36), as ``finetune --method lrpet``.

Guo et al., "Compact Model Training by Low-Rank Projection with Energy Transfer".

Every ``every`` steps each Conv/Gemm/MatMul weight ``W`` (a Conv as ``[out, in·k·k]``) is projected
onto rank ``r = n − ⌊n·rank_ratio⌋`` (``n = min(out, fan-in)``) with energy transfer: from the SVD
``W = U Σ Vᵀ``, the tail becomes ``σ_{r:} ← ρ·σ_{r:}`` (``ρ`` = ``redu_fac``, 0: a hard projection)
and the head ``σ_{:r} ← σ_{:r}·√α`` with ``α = (‖σ‖² − ‖ρσ_{r:}‖²)/‖σ_{:r}‖²``, so ``Σσ²`` is kept.
The optimizer steps in full rank between projections (the paper: one projection per epoch). After
training (and the restore of the kept weights) every weight is truncated to rank ``r`` without
transfer -- the paper's export -- so the ``lowrank`` pass factorizes the result exactly (the
``lrpet`` preset). BatchNorm folded into a Conv by the exporter is rectified implicitly.

The projected weights become dense: a weight's mask is released when it is projected.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxprune.errors import RecipeError
from onnxprune.passes._layouts import layouts
from onnxprune.passes._rank import energy_kept
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod, StepState

if TYPE_CHECKING:
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["LRPETOptions", "LRPETRun", "project", "projected_rank"]

_OPS = ("Conv", "Gemm", "MatMul")


@dataclasses.dataclass(frozen=True)
class LRPETOptions(MethodOptions):
    """LRPET's options (the paper: ``prun_goal`` 0.5-0.8, ``redu_fac`` 0, one projection per epoch).

    Attributes:
        rank_ratio: Fraction of each weight's rank removed (the paper's ``prun_goal``).
        redu_fac: Factor the singular values beyond the rank are multiplied by (0: hard projection).
        every: Steps between two projections (the paper: one epoch, samples / batch size).
        energy_transfer: Scale the kept singular values so that ``Σσ²`` is conserved.
        keep_last: Leave the weights whose layer feeds a graph output (the classifier) at full rank
            (the paper projects the convolutions only).
        only_if_smaller: Project only the weights whose two factors would hold fewer parameters
            (``r·(m + n) < m·n``): a square layer at half its rank would be projected for nothing.
    """

    rank_ratio: float = 0.5
    redu_fac: float = 0.0
    every: int = 50
    energy_transfer: bool = True
    keep_last: bool = True
    only_if_smaller: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.rank_ratio < 1 or not 0 <= self.redu_fac < 1 or self.every < 1:
            raise RecipeError(
                "method options rank_ratio must be in (0, 1), redu_fac in [0, 1), every >= 1; got "
                f"{self.rank_ratio}, {self.redu_fac}, {self.every}"
            )


def projected_rank(shape: tuple[int, int], rank_ratio: float) -> int:
    """``n − ⌊n·rank_ratio⌋`` for ``n = min(shape)`` (at least 1)."""
    n = min(shape)
    return max(1, n - int(np.floor(n * rank_ratio)))


def project(matrix: np.ndarray, rank: int, redu_fac: float = 0.0, energy_transfer: bool = True) -> np.ndarray:
    """``matrix`` with its singular values beyond ``rank`` scaled by ``redu_fac`` (energy kept if asked)."""
    svd = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    return _rebuilt(svd, rank, redu_fac, energy_transfer)


def _rebuilt(
    svd: tuple[np.ndarray, np.ndarray, np.ndarray], rank: int, redu_fac: float, energy_transfer: bool
) -> np.ndarray:
    """:func:`project` from the matrix's SVD ``(U, σ, Vᵀ)``."""
    u, sigma, vt = svd
    head, tail = sigma[:rank].copy(), sigma[rank:] * redu_fac
    kept = float(np.sum(head**2))
    if energy_transfer and kept > 0:
        head *= np.sqrt(max(float(np.sum(sigma**2)) - float(np.sum(tail**2)), 0.0) / kept)
    return (u * np.concatenate([head, tail])) @ vt


class LRPETRun(MethodRun):
    """The projected weights, their ranks and the energy share the last projection removed (before transfer)."""

    def __init__(self, options: LRPETOptions, masks: Masks, view: TorchView) -> None:
        self.options = options
        found = layouts(view, list(masks.params))
        self.layers = {
            name: found[name].out_axis
            for name, param in masks.params.items()
            if (node := found[name].node) is not None
            and node.op_type in _OPS
            and param.dim() >= 2
            and not (options.keep_last and found[name].feeds_output)
            and (node.op_type != "Conv" or node.attributes.get_int("group", 1) == 1)
        }
        if not self.layers:
            raise RecipeError("method lrpet: the model has no Conv/Gemm/MatMul weight to project")
        shapes = {name: _matrix_shape(masks.params[name], axis) for name, axis in self.layers.items()}
        self.ranks = {name: projected_rank(shape, options.rank_ratio) for name, shape in shapes.items()}
        self.skipped = {
            name: f"rank {self.ranks[name]} of {m}x{n} does not save parameters"
            for name, (m, n) in shapes.items()
            if options.only_if_smaller and self.ranks[name] * (m + n) >= m * n
        }
        for name in self.skipped:
            del self.layers[name], self.ranks[name]
        self.projections = 0
        self.lost: dict[str, float] = {}

    def _matrix(self, param: torch.Tensor, axis: int) -> np.ndarray:
        return param.detach().movedim(axis, 0).reshape(param.shape[axis], -1).double().numpy()

    def _project_all(self, masks: Masks, redu_fac: float, transfer: bool, record: bool = True) -> None:
        import torch

        with torch.no_grad():
            for name, axis in self.layers.items():
                param = masks.params[name]
                svd = np.linalg.svd(self._matrix(param, axis), full_matrices=False)
                if record:
                    self.lost[name] = 1.0 - energy_kept(svd[1], self.ranks[name])
                new = _rebuilt(svd, self.ranks[name], redu_fac, transfer)
                moved = param.movedim(axis, 0)
                param.copy_(torch.from_numpy(new).reshape(moved.shape).movedim(0, axis).to(param.dtype))
                masks.keep[name] = torch.ones_like(masks.keep[name])
        self.projections += record

    def settled_at(self, steps: int) -> int:
        return steps  # only the projected end state competes (a held-out snapshot in between is full-rank)

    def after_step(self, state: StepState) -> None:
        done = state.step + 1
        if done % self.options.every == 0 or done == state.steps:
            self._project_all(state.masks, self.options.redu_fac, self.options.energy_transfer)

    def finish(self, masks: Masks, view: TorchView) -> None:
        self._project_all(masks, 0.0, False, record=False)

    def summary(self) -> dict[str, Any]:
        return {
            "projections": self.projections,
            "ranks": self.ranks,
            "energy_removed_last": self.lost,
            "skipped": self.skipped,
        }


def _matrix_shape(param: torch.Tensor, axis: int) -> tuple[int, int]:
    """``(out, fan-in)`` of a weight seen as a matrix along its output ``axis``."""
    return int(param.shape[axis]), int(param.numel() // max(param.shape[axis], 1))


@dataclasses.dataclass(frozen=True)
class _LRPET(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        assert isinstance(options, LRPETOptions)
        if settings.final_sparsity is not None:
            raise RecipeError("method lrpet projects dense weights: it does not combine with final_sparsity")
        return LRPETRun(options, masks, view)


SPARSE_METHODS.register(
    _LRPET(
        "lrpet",
        "LRPET: project every weight onto rank (1 - rank_ratio) x n every few steps, the energy kept; truncate at"
        " the end",
        LRPETOptions,
        "Guo, Lin, Xing, Liu, Xu: Compact Model Training by Low-Rank Projection with Energy Transfer (TNNLS 2024)",
    )
)
